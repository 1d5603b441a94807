"""Tests for pipeline.kernels.noise (multiresolution-support noise estimate)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.kernels.noise import (
    MRS_BIAS_CORRECTION,
    atrous_layers,
    gaussian_noise_response,
    mrs_noise,
)

SHAPE = (1024, 1024)
BACKGROUND = 1000.0


def _moffat_stars(rng, shape, n, *, fwhm=3.0, beta=3.5):
    """Point-sampled Moffat stars, fluxes log-uniform over 3.5 decades (some saturate-bright)."""
    h, w = shape
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    x = rng.uniform(0, w, n)
    y = rng.uniform(0, h, n)
    flux = 10.0 ** rng.uniform(2.5, 6.0, n)
    peak = flux * (beta - 1.0) / (math.pi * alpha**2)
    radius = 25
    offsets = np.arange(-radius, radius + 1)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    rows = iy[:, None, None] + offsets[None, :, None]
    cols = ix[:, None, None] + offsets[None, None, :]
    q = ((cols - x[:, None, None]) ** 2 + (rows - y[:, None, None]) ** 2) / alpha**2
    stamps = peak[:, None, None] * (1.0 + q) ** -beta
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    image = np.bincount((rows * w + cols)[inside], weights=stamps[inside], minlength=h * w)
    return image.reshape(shape)


@pytest.fixture(scope="module")
def scene():
    """Noise-free sky: 10 % gradient, two nebula-like blobs, 300 Moffat stars."""
    rng = np.random.default_rng(20240611)
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    gradient = BACKGROUND * (1.0 + 0.1 * xx / w)
    nebula = 150.0 * np.exp(-((xx - 600) ** 2 + (yy - 400) ** 2) / (2 * 120.0**2)) + 80.0 * np.exp(
        -((xx - 300) ** 2) / (2 * 40.0**2) - (yy - 700) ** 2 / (2 * 150.0**2)
    )
    stars = _moffat_stars(rng, SHAPE, 300)
    assert stars.max() > 20_000  # some bright stars
    return gradient + nebula + stars


def test_gaussian_noise_response_matches_starck_table():
    response = gaussian_noise_response(5)
    # layer 0 in closed form: sqrt(1 - 2 h(0) + sum h^2), h(0) = 36/256, sum b^2 = 70/256
    assert response[0] == pytest.approx(math.sqrt(1 - 2 * 36 / 256 + (70 / 256) ** 2), rel=1e-12)
    # Starck & Murtagh (1998), Table 1 (Monte Carlo): 0.889, 0.200, 0.086, 0.041, 0.020
    np.testing.assert_allclose(response, [0.889, 0.200, 0.086, 0.041, 0.020], atol=0.002)


def test_gaussian_noise_response_matches_simulated_layers():
    rng = np.random.default_rng(5)
    noise = rng.normal(0.0, 1.0, (512, 512))
    layers = atrous_layers(noise, layers=3)
    measured = [np.std(layer[32:-32, 32:-32]) for layer in layers[:3]]
    np.testing.assert_allclose(measured, gaussian_noise_response(3), rtol=0.02)


def test_atrous_layers_reconstruct_and_keep_dtype(scene):
    image = scene[:300, :200].astype(np.float32)
    layers = atrous_layers(image, layers=4)
    assert layers.shape == (5, 300, 200) and layers.dtype == np.float32
    np.testing.assert_allclose(layers.sum(axis=0), image, rtol=0, atol=1e-2)
    as64 = atrous_layers(image.astype(np.float64), layers=2)
    assert as64.dtype == np.float64
    np.testing.assert_allclose(as64.sum(axis=0), image, atol=1e-9)


def test_atrous_layers_of_a_constant_are_zero_with_mirror_borders():
    layers = atrous_layers(np.full((20, 30), 7.0), layers=3)
    np.testing.assert_allclose(layers[:3], 0.0, atol=1e-12)
    np.testing.assert_allclose(layers[3], 7.0)


def test_atrous_layers_refuses_nan():
    image = np.ones((16, 16))
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        atrous_layers(image)


@pytest.mark.parametrize("sigma", [5.0, 20.0])
def test_mrs_noise_on_pure_noise_within_one_percent(sigma):
    rng = np.random.default_rng(int(sigma))
    for _ in range(2):
        image = (BACKGROUND + rng.normal(0.0, sigma, SHAPE)).astype(np.float32)
        assert mrs_noise(image) == pytest.approx(sigma, rel=0.01)


@pytest.mark.parametrize("sigma", [5.0, 20.0])
def test_mrs_noise_on_sky_with_stars_nebula_and_gradient(scene, sigma):
    rng = np.random.default_rng(100 + int(sigma))
    image = (scene + rng.normal(0.0, sigma, SHAPE)).astype(np.float32)
    # acceptance criterion of the brief: within 3 % of the true sigma
    assert mrs_noise(image) == pytest.approx(sigma, rel=0.03)
    # the structure is what makes this hard: a plain standard deviation is useless
    assert np.std(image) > 10 * sigma


def test_mrs_noise_ignores_nan_holes_and_borders(scene):
    rng = np.random.default_rng(7)
    image = (scene + rng.normal(0.0, 5.0, SHAPE)).astype(np.float32)
    holed = image.copy()
    holed[:100] = np.nan  # registration border
    holed[:, -57:] = np.nan
    holed[500:540, 200:260] = np.nan  # masked region
    estimate = mrs_noise(holed)
    assert estimate == pytest.approx(5.0, rel=0.03)
    # the finite part gives the same answer as the complete frame to well within noise
    assert estimate == pytest.approx(mrs_noise(image), rel=0.02)


def test_mrs_noise_degenerate_images():
    assert math.isnan(mrs_noise(np.full((8, 8), np.nan)))
    assert mrs_noise(np.full((40, 40), 3.0)) == 0.0


def test_mrs_noise_scales_with_the_image(scene):
    rng = np.random.default_rng(11)
    image = scene + rng.normal(0.0, 20.0, SHAPE)
    assert mrs_noise(7.0 * image) == pytest.approx(7.0 * mrs_noise(image), rel=1e-4)


def test_mrs_noise_bias_correction_is_pixinsights():
    # PCL NoiseMRS divides the converged standard deviation by 0.974
    assert MRS_BIAS_CORRECTION == 0.974


def test_mrs_noise_small_image_still_gives_an_estimate():
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 2.0, (24, 24))
    estimate = mrs_noise(image)
    assert 1.4 < estimate < 2.6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": 0}, "layers"),
        ({"k": 0.0}, "k="),
        ({"max_iterations": 0}, "max_iterations"),
        ({"tolerance": 0.0}, "tolerance"),
    ],
)
def test_mrs_noise_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mrs_noise(np.ones((16, 16)), **kwargs)


def test_mrs_noise_requires_2d():
    with pytest.raises(ValueError, match="2-D"):
        mrs_noise(np.ones((2, 16, 16)))
    with pytest.raises(ValueError, match="2 x 2"):
        mrs_noise(np.ones((1, 16)))


def test_pixel_noise_is_the_spread_of_single_pixels_also_after_resampling():
    """White noise: pixel_noise == std. Lanczos-resampled noise (a registered sub): pixel_noise
    still equals the per-pixel std."""
    from pipeline.kernels.noise import pixel_noise
    from pipeline.kernels.transform import warp_image

    rng = np.random.default_rng(8)
    white = rng.normal(500.0, 7.0, (1024, 1024)).astype(np.float32)
    assert pixel_noise(white) == pytest.approx(7.0, rel=0.02)
    shift = np.array([[1.0, 0.0, 0.47], [0.0, 1.0, 0.53], [0.0, 0.0, 1.0]])
    warped = warp_image(white, shift, output_shape=white.shape)[8:-8, 8:-8]
    spread = float(np.std(warped))
    assert spread < 0.9 * 7.0  # resampling lowers the per-pixel noise
    assert pixel_noise(warped) == pytest.approx(spread, rel=0.03)
    with_nan = white.copy()
    with_nan[:, :300] = np.nan
    assert pixel_noise(with_nan) == pytest.approx(7.0, rel=0.02)
