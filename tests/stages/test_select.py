"""Selection rules judge a sub against its own night."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from pipeline.config.loader import parse_config
from pipeline.stages.select import exclusions


def _metrics(eccentricity):
    return [{"fwhm": 3.0, "eccentricity": e, "star_count": 500} for e in eccentricity]


def test_a_night_of_elongated_stars_loses_only_its_outlier():
    # 30 subs spread as a normal distribution of sigma 0.05 about 0.67 (its quantiles)
    eccentricity = 0.67 + 0.05 * ndtri((np.arange(30) + 0.5) / 30)
    eccentricity = np.clip(eccentricity, 0.0, 0.95)
    eccentricity = np.append(eccentricity, 0.99)  # wind shake or a tracking error
    reasons = exclusions(_metrics(eccentricity), parse_config({}).selection)
    dropped = [i for i, r in enumerate(reasons) if r]
    assert dropped == [30]
    assert "group median 0.67" in reasons[30] and "robust sigma" in reasons[30]
    assert "selection.eccentricity_sigma 4" in reasons[30]


def test_the_absolute_eccentricity_bound_is_still_available():
    eccentricity = [0.62, 0.66, 0.7, 0.65, 0.81]
    config = parse_config(
        {"selection": {"max_eccentricity": 0.8, "eccentricity_sigma": None}}
    ).selection
    reasons = exclusions(_metrics(eccentricity), config)
    assert [bool(r) for r in reasons] == [False, False, False, False, True]
    assert "above selection.max_eccentricity 0.8" in reasons[4]


def test_a_tight_night_is_not_cut_by_a_tiny_spread():
    # all subs within 0.03: the robust sigma is floored at 0.05 (the measurement's own scatter)
    eccentricity = [0.40, 0.401, 0.402, 0.399, 0.405, 0.41, 0.43]
    reasons = exclusions(_metrics(eccentricity), parse_config({}).selection)
    assert not any(reasons)


def test_elongated_night_with_a_wide_spread_loses_nothing():
    # median 0.65, spread 0.1 (the robotic night of the issue had a median of 0.67; the old
    # absolute 0.8 bound dropped 16 % of it)
    eccentricity = np.clip(0.65 + 0.1 * ndtri((np.arange(142) + 0.5) / 142), 0.0, 0.95)
    assert np.count_nonzero(eccentricity > 0.8) >= 9  # what the old absolute 0.8 dropped
    assert not any(exclusions(_metrics(eccentricity), parse_config({}).selection))


def test_a_sub_without_photometry_is_weighed_as_typical_not_dropped():
    from pipeline.stages.select import sub_weights

    metrics = [{"fwhm": 3.0, "noise": 10.0, "psf_area": 30.0, "m_star": 5.0, "psf_beta": 3.5}] * 3
    weights = sub_weights(
        metrics, parse_config({}).weighting.weights, flux_ratios=[1.0, float("nan"), 1.25]
    )
    assert weights[1] > 0
    # transparencies 1 and 0.8: the unknown one takes their median, 0.9
    np.testing.assert_allclose(weights, [1.0, 0.81, 0.64], rtol=1e-9)
