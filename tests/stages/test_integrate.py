from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.loader import parse_config
from pipeline.stages.integrate import autocrop_box, integrate_band
from pipeline.stages.normalize import Normalization


def test_autocrop_peels_the_under_covered_border():
    count = np.full((60, 80), 10, dtype=np.uint16)
    count[:7] = 3  # dither: the top rows are covered by few subs
    count[:, 70:] = 4
    count[50:, :5] = 2  # a corner missing after a small rotation
    rows, cols = autocrop_box(count, minimum=8)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (7, 60, 5, 70)
    assert (count[rows, cols] >= 8).all()


def test_autocrop_of_a_colour_count_uses_the_worst_channel():
    count = np.full((3, 20, 30), 10, dtype=np.uint16)
    count[2, :, :4] = 1
    rows, cols = autocrop_box(count, minimum=5)
    assert cols.start == 4 and rows == slice(0, 20)


PLANTED = [
    {"method": "sigma_clip", "low": 3, "high": 3},
    {"method": "winsorized_sigma", "low": 3, "high": 3},
    {"method": "minmax", "n_low": 1, "n_high": 1},
    {"method": "percentile_clip"},
    {"method": "averaged_sigma", "low": 1.5, "high": 1.5},
    {"method": "linear_fit", "low": 5, "high": 4},
    {"method": "esd", "alpha": 0.01, "low_relaxation": 1},
]


@pytest.mark.parametrize("method", PLANTED, ids=lambda m: m["method"])
@pytest.mark.parametrize("equalize", [False, True], ids=["plain", "noise-equalised"])
def test_integration_rejects_exactly_the_planted_outliers(method, equalize):
    """15 subs at 100 +- 1, one at 1000 and one at -500: the master is the mean of the rest."""
    rejection = parse_config({"integration": {"rejection": method}}).integration.rejection
    rng = np.random.default_rng(21)
    stack = rng.normal(100.0, 1.0, (15, 1, 1)).astype(np.float32)
    stack[4], stack[11] = 1000.0, -500.0
    band = integrate_band(
        stack,
        normalizations=[Normalization((1.0,), (0.0,))] * 15,
        weights=np.ones(15),
        rejection=rejection,
        sub_noise=np.ones(15) if equalize else None,
        pivot=[100.0] if equalize else None,
    )
    good = np.delete(stack[:, 0, 0], [4, 11])
    assert (band.low[0, 0], band.high[0, 0], band.count[0, 0]) == (1, 1, 13)
    np.testing.assert_allclose(band.image[0, 0], good.mean(dtype=np.float64), rtol=1e-6)
    assert band.rejected_per_sub[4].tolist() == [0, 1]
    assert band.rejected_per_sub[11].tolist() == [1, 0]


@pytest.mark.parametrize("frames", [8, 40])
def test_pure_noise_loses_what_the_thresholds_promise(frames):
    """Gaussian noise subs, shipped settings (auto + large-scale rejection): the false
    rejection rate per sub is within 2x of the thresholds' one-sided tail probabilities."""
    from pipeline.stages.rejection import expected_false_rates, resolve_rejection

    config = parse_config({}).integration
    rng = np.random.default_rng(frames)
    stack = rng.normal(1000.0, 10.0, size=(frames, 500, 600)).astype(np.float32)
    noise = rng.uniform(9.0, 11.0, frames)  # as measured on each sub: a few % off
    band = integrate_band(
        stack,
        normalizations=[Normalization(factor=(1.0,), offset=(0.0,))] * frames,
        weights=np.ones(frames),
        rejection=config.rejection,
        sub_noise=noise,
        pivot=[1000.0],
        large_scale=config.large_scale_rejection,
    )
    rates = band.rejected_per_sub.sum(axis=0) / (frames * 500 * 600)
    promised = expected_false_rates(resolve_rejection(config.rejection, frames))
    print(
        f"N={frames}: low {rates[0]:.2e} (tail {promised['low']:.2e}), "
        f"high {rates[1]:.2e} (tail {promised['high']:.2e})"
    )
    assert promised["high"] / 2 <= rates[1] <= 2 * promised["high"]
    assert promised["low"] / 2 <= rates[0] <= 2 * promised["low"]
