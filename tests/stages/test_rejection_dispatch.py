from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.loader import parse_config
from pipeline.config.models import AutoRejection
from pipeline.stages.rejection import expected_false_rates, rejection_masks, resolve_rejection

METHODS = [
    {"method": "sigma_clip"},
    {"method": "winsorized_sigma"},
    {"method": "minmax", "n_low": 0, "n_high": 1},
    {"method": "percentile_clip"},
    {"method": "averaged_sigma"},
    {"method": "linear_fit"},
    {"method": "esd"},
    {"method": "auto"},
]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
def test_every_configured_method_rejects_a_satellite_trail(method):
    config = parse_config({"integration": {"rejection": method}}).integration
    rng = np.random.default_rng(3)
    stack = rng.normal(1000.0, 10.0, size=(24, 30, 40)).astype(np.float32)
    stack[7, 15, :] += 5000.0
    low, high = rejection_masks(stack, config.rejection)
    assert high[7, 15, :].all()
    assert not low[7, 15, :].any()


@pytest.mark.parametrize(
    ("frames", "expected", "high"),
    [
        (4, "percentile_clip", None),
        (6, "winsorized_sigma", 3.14),
        (10, "winsorized_sigma", 3.29),
        (40, "winsorized_sigma", 3.66),
        (200, "winsorized_sigma", 4.06),
    ],
)
def test_auto_rejection_by_number_of_subs(frames, expected, high):
    chosen = resolve_rejection(AutoRejection(), frames)
    assert chosen.method == expected
    if high is not None:
        assert chosen.high == pytest.approx(high, abs=0.005)
        assert chosen.low == 4.0


def test_auto_high_threshold_keeps_half_a_percent_false_rejections_per_pixel_stack():
    for frames in (8, 25, 60, 150):
        tail = expected_false_rates(resolve_rejection(AutoRejection(), frames))["high"]
        assert frames * tail == pytest.approx(0.005, rel=0.02)


def test_calibration_masters_keep_wbpp_choice():
    assert resolve_rejection(AutoRejection(), 40, frame_type="bias").high == 3.0
    assert resolve_rejection(AutoRejection(), 40, frame_type="flat").method == "linear_fit"


def test_expected_false_rates_only_for_sigma_thresholds():
    config = parse_config({"integration": {"rejection": {"method": "sigma_clip", "high": 2}}})
    rates = expected_false_rates(config.integration.rejection)
    assert rates == pytest.approx({"low": 3.167e-5, "high": 0.02275}, rel=1e-3)
    linear = parse_config({"integration": {"rejection": {"method": "linear_fit"}}})
    assert expected_false_rates(linear.integration.rejection) is None
