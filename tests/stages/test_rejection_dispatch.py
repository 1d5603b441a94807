from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.loader import parse_config
from pipeline.config.models import AutoRejection
from pipeline.stages.rejection import rejection_masks, resolve_rejection

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
    ("frames", "expected"), [(4, "percentile_clip"), (10, "winsorized_sigma"), (40, "linear_fit")]
)
def test_auto_follows_wbpp_by_number_of_subs(frames, expected):
    assert resolve_rejection(AutoRejection(), frames).method == expected
