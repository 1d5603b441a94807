"""Tests for pipeline.kernels.darkopt."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels.darkopt import optimal_dark_scale

SHAPE = (400, 600)


def _thermal(rng, *, dsnu=1.0):
    """Thermal pattern of a master dark: per-pixel dark current (DSNU), column
    structure, an amp-glow corner and 1 % hot pixels of 200..5000 ADU."""
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    pattern = dsnu * rng.gamma(4.0, 5.0, SHAPE)  # mean 20, sd 10 ADU
    pattern += dsnu * rng.normal(0, 3, w)[None, :]
    pattern += 150 * np.exp(-np.hypot(xx - w, yy - h) / 80)
    hot = rng.random(SHAPE) < 0.01
    pattern[hot] += rng.uniform(200, 5000, hot.sum())
    return pattern


def _light(rng, thermal, true_k):
    """Bias-subtracted CFA light: coloured sky gradient, stars, k * thermal, shot + read noise."""
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sky = (800 + 0.2 * xx + 0.1 * yy) * np.tile([[1.2, 1.0], [1.0, 0.6]], (h // 2, w // 2))
    stars = np.zeros(SHAPE)
    for y0, x0, amp in zip(
        rng.uniform(0, h, 150), rng.uniform(0, w, 150), rng.uniform(100, 20000, 150), strict=True
    ):
        ys = slice(max(int(y0) - 8, 0), int(y0) + 9)
        xs = slice(max(int(x0) - 8, 0), int(x0) + 9)
        stars[ys, xs] += amp * np.exp(-((xx[ys, xs] - x0) ** 2 + (yy[ys, xs] - y0) ** 2) / 4.5)
    signal = sky + stars + true_k * thermal
    return signal + rng.normal(0, 1, SHAPE) * np.sqrt(signal + 25)


@pytest.mark.parametrize("true_k", [0.5, 1.0, 1.5])
@pytest.mark.parametrize("dsnu", [1.0, 0.0])
def test_recovers_the_dark_scale(true_k, dsnu):
    # dsnu=0: a modern low-dark-current sensor, only hot pixels and glow carry the scale.
    rng = np.random.default_rng(int(10 * true_k) + int(dsnu))
    thermal = _thermal(rng, dsnu=dsnu)
    light = _light(rng, thermal, true_k).astype(np.float32)
    master_dark = (thermal + rng.normal(0, 1.0, SHAPE)).astype(np.float32)  # averaged darks
    k = optimal_dark_scale(light, master_dark)
    assert isinstance(k, float)
    assert k == pytest.approx(true_k, rel=0.02)


def test_nan_pixels_are_ignored():
    rng = np.random.default_rng(3)
    thermal = _thermal(rng)
    light = _light(rng, thermal, 0.8)
    light[50:60, :] = np.nan
    light[:, 100] = np.nan
    k = optimal_dark_scale(light.astype(np.float32), thermal.astype(np.float32))
    assert k == pytest.approx(0.8, rel=0.02)


def test_structureless_dark_gives_a_finite_in_bounds_result():
    rng = np.random.default_rng(4)
    light = rng.normal(1000, 30, SHAPE).astype(np.float32)
    dark = rng.normal(0, 5, SHAPE).astype(np.float32)
    k = optimal_dark_scale(light, dark)
    assert np.isfinite(k) and 0.0 <= k <= 2.0
    k = optimal_dark_scale(light, dark, bounds=(0.5, 1.5))
    assert 0.5 <= k <= 1.5


def test_result_is_clamped_to_the_bounds():
    rng = np.random.default_rng(5)
    thermal = _thermal(rng)
    light = _light(rng, thermal, 1.8).astype(np.float32)
    k = optimal_dark_scale(light, thermal.astype(np.float32), bounds=(0.0, 1.0))
    assert 0.99 <= k <= 1.0


def test_large_frames_are_subsampled_deterministically():
    rng = np.random.default_rng(6)
    shape = (2400, 2000)  # 4.8 Mpx: above the 4 Mpx sampling target
    dark = rng.gamma(4.0, 5.0, shape).astype(np.float32)
    light = (1.2 * dark + rng.normal(1000, 10, shape)).astype(np.float32)
    first = optimal_dark_scale(light, dark)
    assert first == optimal_dark_scale(light, dark)
    assert first == pytest.approx(1.2, rel=0.02)


def test_validation():
    ones = np.ones((8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        optimal_dark_scale(ones, np.ones((8, 9)))
    with pytest.raises(ValueError, match="bounds"):
        optimal_dark_scale(ones, ones, bounds=(1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        optimal_dark_scale(np.full((8, 8), np.nan), ones)
    with pytest.raises(ValueError, match="2-D"):
        optimal_dark_scale(np.ones(8), np.ones(8))
