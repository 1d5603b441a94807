"""Selection rules judge a sub against its own night."""

from __future__ import annotations

import numpy as np

from pipeline.config.loader import parse_config
from pipeline.stages.select import exclusions


def _metrics(eccentricity):
    return [{"fwhm": 3.0, "eccentricity": e, "star_count": 500} for e in eccentricity]


def test_a_night_of_elongated_stars_loses_only_its_outlier():
    rng = np.random.default_rng(3)
    eccentricity = np.clip(rng.normal(0.67, 0.05, 30), 0, 0.95)
    eccentricity[7] = 0.93  # a sub with wind shake or a tracking error
    reasons = exclusions(_metrics(eccentricity), parse_config({}).selection)
    dropped = [i for i, r in enumerate(reasons) if r]
    assert dropped == [7]
    assert "group median 0.67" in reasons[7] and "robust sigma" in reasons[7]
    assert "selection.eccentricity_sigma 4" in reasons[7]


def test_the_absolute_eccentricity_bound_is_still_available():
    eccentricity = [0.62, 0.66, 0.7, 0.65, 0.81]
    config = parse_config(
        {"selection": {"max_eccentricity": 0.8, "eccentricity_sigma": None}}
    ).selection
    reasons = exclusions(_metrics(eccentricity), config)
    assert [bool(r) for r in reasons] == [False, False, False, False, True]
    assert "above selection.max_eccentricity 0.8" in reasons[4]


def test_a_tight_night_is_not_cut_by_a_tiny_spread():
    # all subs within 0.01: the robust sigma is floored at 0.02, so none is an outlier
    eccentricity = [0.40, 0.401, 0.402, 0.399, 0.405, 0.41, 0.43]
    reasons = exclusions(_metrics(eccentricity), parse_config({}).selection)
    assert not any(reasons)
