"""Tests for pipeline.kernels.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.kernels.stats import (
    background_noise,
    mad_sigma,
    robust_location_scale,
    subsample,
)


def _star_field(rng, shape, n_stars, *, sigma_psf=1.5):
    """Sum of Gaussian stars with random positions and amplitudes 200..20000."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.zeros(shape)
    for y0, x0, amp in zip(
        rng.uniform(0, h, n_stars),
        rng.uniform(0, w, n_stars),
        rng.uniform(200, 20000, n_stars),
        strict=True,
    ):
        y_lo, y_hi = max(int(y0) - 8, 0), min(int(y0) + 9, h)
        x_lo, x_hi = max(int(x0) - 8, 0), min(int(x0) + 9, w)
        dy = yy[y_lo:y_hi, x_lo:x_hi] - y0
        dx = xx[y_lo:y_hi, x_lo:x_hi] - x0
        image[y_lo:y_hi, x_lo:x_hi] += amp * np.exp(-(dx * dx + dy * dy) / (2 * sigma_psf**2))
    return image


@pytest.fixture(scope="module")
def sky():
    """512x512 frame: gradient + stars + Gaussian noise with sigma 10."""
    rng = np.random.default_rng(20240501)
    h, w = 512, 512
    yy, xx = np.mgrid[0:h, 0:w]
    gradient = 1000 + 3.0 * xx + 1.5 * yy + 0.004 * (xx - 200) ** 2
    stars = _star_field(rng, (h, w), 300)
    noise = rng.normal(0, 10.0, (h, w))
    return (gradient + stars + noise).astype(np.float32), (stars + noise + 1000).astype(np.float32)


def test_mad_sigma_simple_values():
    # median 3, |x - 3| = [2, 1, 0, 1, 97] -> MAD 1
    assert mad_sigma(np.array([1.0, 2, 3, 4, 100])) == pytest.approx(1.4826)


def test_mad_sigma_gaussian_and_nan_ignored():
    rng = np.random.default_rng(1)
    data = rng.normal(5.0, 3.0, 200_000).astype(np.float32)
    with_nan = data.copy()
    with_nan[::7] = np.nan
    assert mad_sigma(data) == pytest.approx(3.0, rel=0.02)
    assert mad_sigma(with_nan) == mad_sigma(with_nan[~np.isnan(with_nan)])


def test_mad_sigma_axis_matches_columns_and_keeps_float32():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(50, 6)).astype(np.float32)
    data[3, 2] = np.nan
    result = mad_sigma(data, axis=0)
    assert result.dtype == np.float32 and result.shape == (6,)
    for j in range(6):
        assert result[j] == pytest.approx(mad_sigma(data[:, j]), rel=1e-6)


def test_mad_sigma_all_nan_is_nan_without_warning():
    assert math.isnan(mad_sigma(np.full(4, np.nan)))
    assert np.all(np.isnan(mad_sigma(np.full((3, 2), np.nan), axis=0)))


def test_mad_sigma_rejects_tuple_axis():
    with pytest.raises(ValueError, match="axis"):
        mad_sigma(np.ones((2, 2)), axis=(0, 1))


def test_robust_location_scale_exact_on_small_image():
    rng = np.random.default_rng(3)
    image = rng.normal(100, 4, (64, 64)).astype(np.float32)
    image[0, :5] = np.nan
    image[1, 0] = np.inf
    finite = image[np.isfinite(image)].astype(np.float64)
    location, scale = robust_location_scale(image)
    assert location == pytest.approx(np.median(finite), rel=1e-6)
    assert scale == pytest.approx(1.4826 * np.median(np.abs(finite - np.median(finite))), rel=1e-5)


def test_robust_location_scale_subsamples_large_images_deterministically():
    rng = np.random.default_rng(4)
    image = rng.normal(100, 4, (2100, 2100)).astype(np.float32)  # 4.4 Mpx > 4 Mpx
    first = robust_location_scale(image)
    assert first == robust_location_scale(image)
    assert first[0] == pytest.approx(100, abs=0.02)
    assert first[1] == pytest.approx(4, rel=0.01)


def test_robust_location_scale_without_data():
    location, scale = robust_location_scale(np.full((3, 3), np.nan))
    assert math.isnan(location) and math.isnan(scale)


def test_subsample_uses_odd_stride():
    data = np.arange(100, dtype=np.float32)
    data[11] = np.nan
    # ceil(100 / 10) = 10 is even -> stride 11; sample 11 is NaN and dropped
    np.testing.assert_array_equal(
        subsample(data, target=10), np.arange(0, 100, 11)[[0, 2, 3, 4, 5, 6, 7, 8, 9]]
    )


def test_background_noise_difference_recovers_sigma(sky):
    with_gradient, _ = sky
    assert background_noise(with_gradient) == pytest.approx(10.0, rel=0.05)


def test_background_noise_clipped_mad_needs_a_flat_background(sky):
    with_gradient, flat = sky
    assert background_noise(flat, method="clipped_mad") == pytest.approx(10.0, rel=0.05)
    # the gradient spans ~2500 ADU: the plain clipped MAD is useless there,
    # which is why "difference" is the default
    assert background_noise(with_gradient, method="clipped_mad") > 100


def test_background_noise_ignores_nan(sky):
    with_gradient, _ = sky
    holed = with_gradient.copy()
    holed[:40] = np.nan
    holed[:, -3:] = np.nan
    assert background_noise(holed) == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"method": "fft"}, "method"), ({"clip": 0}, "clip"), ({"iterations": -1}, "iterations")],
)
def test_background_noise_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        background_noise(np.ones((4, 4)), **kwargs)


def test_background_noise_requires_2d():
    with pytest.raises(ValueError, match="2-D"):
        background_noise(np.ones((2, 4, 4)))
