"""Tests for pipeline.kernels.linearfit (PixInsight-style LinearFit)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels.linearfit import LinearFitResult, apply_linear_fit, linear_fit

SHAPE = (360, 480)
A, B = 200.0, 1.3  # reference = A + B * target
NOISE = 30.0  # independent per-pixel noise of each image, in its own units
REF_SATURATION, TGT_SATURATION = 30000.0, 20000.0


def _sky(rng: np.random.Generator, *, stars: int = 150) -> np.ndarray:
    """Noiseless sky in reference units: background, gradient, faint nebula, stars."""
    height, width = SHAPE
    y, x = np.indices(SHAPE, dtype=np.float64)
    sky = 1000.0 + 40.0 * x / width + 16.0 * y / height
    sky += 150.0 * np.exp(-((x - 300) ** 2 + (y - 150) ** 2) / (2 * 60.0**2))
    peaks = 10 ** rng.uniform(2, 4.7, stars)  # 100 .. 50 000 ADU: the brightest saturate
    centres = zip(rng.uniform(0, height, stars), rng.uniform(0, width, stars), peaks, strict=True)
    for cy, cx, peak in centres:
        y0, y1 = max(int(cy) - 10, 0), min(int(cy) + 11, height)
        x0, x1 = max(int(cx) - 10, 0), min(int(cx) + 11, width)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        sky[y0:y1, x0:x1] += peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.8**2))
    return sky


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, target, noiseless sky): independent noise, saturation, hot pixels."""
    rng = np.random.default_rng(seed)
    sky = _sky(rng)
    reference = np.minimum(sky + rng.normal(0, NOISE, SHAPE), REF_SATURATION)
    target = np.minimum((sky - A) / B + rng.normal(0, NOISE, SHAPE), TGT_SATURATION)
    hot = rng.integers(0, target.size, 150)
    target.flat[hot] = 15000.0  # hot pixels / cosmic rays in the target only
    return reference.astype(np.float32), target.astype(np.float32), sky


def test_recovers_line_where_plain_least_squares_is_diluted():
    reference, target, sky = _pair()
    fit = linear_fit(reference, target)
    assert isinstance(fit, LinearFitResult)
    # measured over 6 seeds: slope within 0.045 %, intercept within 0.7 ADU, matched
    # background within 0.055 %; np.polyfit on the raw pixels: slope -9.8 % to -18.5 %
    # (noise in the target, saturated cores, hot pixels)
    assert abs(fit.slope / B - 1) < 2e-3
    polyfit_slope, _ = np.polyfit(target.ravel(), reference.ravel(), 1)
    assert polyfit_slope / B - 1 < -0.05
    # the matched background: the noiseless target sky mapped by the fit vs the reference
    # (pixel medians of the noisy images would differ by the noise's effect on a median)
    background = float(np.median(sky))
    matched = fit.intercept + fit.slope * (background - A) / B
    assert abs(matched / background - 1) < 1e-3
    assert abs(fit.intercept - A) < 2.0


def test_dispersion_and_block_count_are_physical():
    reference, target, _ = _pair(seed=1)
    fit = linear_fit(reference, target)
    blocks = (SHAPE[0] // 8) * (SHAPE[1] // 8)
    assert 0.95 * blocks < fit.pixels <= blocks  # a few blocks of saturated stars dropped
    # residual of 8 x 8 block means: combined noise / sqrt(64)
    expected = np.hypot(NOISE, B * NOISE) / 8
    assert fit.dispersion == pytest.approx(expected, rel=0.1)


def test_single_pixel_fit_agrees():
    reference, target, _ = _pair(seed=2)
    fit = linear_fit(reference, target, block=1)
    assert abs(fit.slope / B - 1) < 5e-3
    assert fit.pixels > 0.9 * reference.size


@pytest.mark.parametrize("block", [1, 8])
def test_equals_polyfit_on_noiseless_line(block):
    rng = np.random.default_rng(3)
    target = (_sky(rng) - A) / B  # float64, exact line, no noise
    reference = A + B * target
    fit = linear_fit(reference, target, block=block)
    low, high = target.min(), target.max()
    inside = target < low + 0.92 * (high - low)
    slope, intercept = np.polyfit(target[inside], reference[inside], 1)
    assert fit.slope == pytest.approx(slope, rel=1e-6)
    assert fit.intercept == pytest.approx(intercept, rel=1e-6)
    assert fit.dispersion == pytest.approx(0.0, abs=1e-6)


def test_reject_high_excludes_a_saturated_plateau():
    reference, target, _ = _pair(seed=4)
    clean = linear_fit(reference, target)
    rng = np.random.default_rng(40)
    # a large blown-out region (a bright star's bloom, 13 % of the frame): both images sit
    # near their own saturation, 95-99 % of their range, not on the line
    plateau = (slice(40, 160), slice(60, 260))
    reference[plateau] = rng.uniform(0.95, 0.99, (120, 200)) * reference.max()
    target[plateau] = rng.uniform(0.95, 0.99, (120, 200)) * target.max()
    kept_out = linear_fit(reference, target)
    let_in = linear_fit(reference, target, reject_high=1.0)
    assert kept_out.slope == pytest.approx(clean.slope, rel=1e-3)
    assert abs(let_in.slope / clean.slope - 1) > 0.05


def test_mask_is_respected():
    reference, target, _ = _pair(seed=5)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:, 300:] = True
    clean = linear_fit(reference, target, mask=mask)
    corrupted = reference.copy()
    region = corrupted[:, 300:]
    region[region < 5000] += 400.0  # e.g. a reflection in the reference only
    masked = linear_fit(corrupted, target, mask=mask)
    unmasked = linear_fit(corrupted, target)
    assert masked.slope == pytest.approx(clean.slope, rel=1e-4)
    assert masked.intercept == pytest.approx(clean.intercept, abs=0.05)
    assert abs(unmasked.intercept - clean.intercept) > 50.0


def test_nan_and_inf_pixels_are_ignored():
    reference, target, _ = _pair(seed=8)
    clean = linear_fit(reference, target)
    reference[100:140, :] = np.nan  # e.g. a registration border
    target[200:210, 50:90] = np.inf
    reference[200:205, 50:60] = np.inf  # inf - inf in the residual: no warning
    holed = linear_fit(reference, target)
    assert holed.slope == pytest.approx(clean.slope, rel=1e-3)
    assert holed.pixels < clean.pixels


def test_apply_preserves_dtype_and_nan():
    fit = LinearFitResult(intercept=A, slope=B, pixels=100, dispersion=1.0)
    target = np.array([[0.0, 1.0], [np.nan, 1000.0]], dtype=np.float32)
    out = apply_linear_fit(target, fit)
    assert out.dtype == np.float32 and np.isnan(out[1, 0])
    np.testing.assert_allclose(out[[0, 0, 1], [0, 1, 1]], [A, A + B, A + 1000 * B], rtol=1e-6)
    assert apply_linear_fit(target.astype(np.float64), fit).dtype == np.float64
    assert apply_linear_fit(np.ones((2, 2), dtype=np.uint16), fit).dtype == np.float32
    assert np.isnan(target[1, 0])  # input untouched
    reference, target, _ = _pair(seed=6)
    assert linear_fit(reference, target).slope == pytest.approx(
        linear_fit(reference.astype(np.float64), target.astype(np.float64)).slope, rel=1e-5
    )


def test_errors_say_what_to_change():
    reference, target, _ = _pair(seed=7)
    with pytest.raises(ValueError, match=r"target is constant \(5\.0\)"):
        linear_fit(reference, np.full(SHAPE, 5.0))
    mask = np.ones(SHAPE, dtype=bool)
    mask[:10, :10] = False  # leaves a single 8x8 block (and a partial one)
    with pytest.raises(
        ValueError,
        match=r"found only 1 usable blocks of 8x8 pixels \(needs at least 3\); lower block",
    ):
        linear_fit(reference, target, mask=mask)
    with pytest.raises(ValueError, match="0 <= reject_low < reject_high <= 1"):
        linear_fit(reference, target, reject_low=0.5, reject_high=0.5)
    with pytest.raises(ValueError, match="block=0 must be a positive integer"):
        linear_fit(reference, target, block=0)
    with pytest.raises(ValueError, match=r"target has shape \(2, 2\) but reference has shape"):
        linear_fit(reference, np.ones((2, 2)))
    with pytest.raises(ValueError, match="mask has dtype float64; pass a boolean array"):
        linear_fit(reference, target, mask=np.zeros(SHAPE))
