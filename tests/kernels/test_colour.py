"""Colour calibration kernels: background neutralization and white balance."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels.colour import (
    apply_colour_calibration,
    channel_backgrounds,
    region_white_factors,
    stellar_white_factors,
)


def test_stellar_white_factors_make_the_mean_star_neutral_and_ignore_outliers():
    rng = np.random.default_rng(1)
    n = 300
    true_mean = np.array([1.3, 1.0, 0.7])  # a colour cast: red strong, blue weak
    colours = np.exp(rng.normal(0.0, 0.1, (n, 3)))  # star-to-star colour scatter
    colours[:, 1] = 1.0
    g_flux = rng.uniform(1e3, 1e5, n)
    fluxes = g_flux[:, None] * colours * true_mean
    fluxes[:5, 0] *= 20.0  # five wild red measurements (blends, hot pixels)
    balance = stellar_white_factors(fluxes)
    assert not balance.used[:5].any()
    assert balance.used.sum() > 0.95 * (n - 5)
    # the geometric mean of the scatter over the used stars is the residual expectation
    scatter = np.exp(np.log(colours[balance.used]).mean(axis=0))
    np.testing.assert_allclose(balance.mean_ratios, true_mean * scatter, rtol=1e-9)
    np.testing.assert_allclose(balance.factors * balance.mean_ratios, 1.0, rtol=1e-12)
    np.testing.assert_allclose(balance.factors, 1.0 / true_mean, rtol=0.03)
    assert balance.factors[1] == 1.0


def test_stellar_white_factors_refuse_too_few_stars():
    fluxes = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, -1.0], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="only 2 stars have a positive flux"):
        stellar_white_factors(fluxes)


def test_region_white_factors_neutralize_the_region_above_its_surroundings():
    image = np.empty((3, 40, 50), dtype=np.float32)
    backgrounds = np.array([100.0, 80.0, 60.0])
    image[:] = backgrounds[:, None, None]
    # a red nebula under the reference object: its glow is no part of the object's colour
    image[:, 5:30, 25:45] += np.array([50.0, 5.0, 10.0], dtype=np.float32)[:, None, None]
    image[:, 14:18, 33:37] += np.array([300.0, 200.0, 100.0], dtype=np.float32)[:, None, None]
    factors = region_white_factors(image, (31, 12, 39, 20))
    np.testing.assert_allclose(factors, [2.0 / 3.0, 1.0, 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="outside the 50x40 image"):
        region_white_factors(image, (30, 10, 60, 20))
    with pytest.raises(ValueError, match="no signal above its surroundings"):
        region_white_factors(image, (0, 0, 10, 10))


def test_apply_colour_calibration_is_the_linear_formula_and_neutralizes():
    rng = np.random.default_rng(2)
    image = rng.normal(50.0, 5.0, (3, 30, 40)).astype(np.float32)
    image[1, 0, 0] = np.nan
    backgrounds = np.array([52.0, 48.0, 45.0])
    factors = np.array([0.8, 1.0, 1.4])
    out = apply_colour_calibration(image, backgrounds, 47.0, factors)
    assert out.dtype == np.float32 and np.isnan(out[1, 0, 0])
    signal = image.astype(np.float64) - backgrounds[:, None, None]
    expected = 47.0 + factors[:, None, None] * signal
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    # each channel's background lands on the common level
    levels = channel_backgrounds(apply_colour_calibration(image, [50.0] * 3, 47.0, factors))
    np.testing.assert_allclose(levels, 47.0, atol=0.5)
    kept = apply_colour_calibration(image, backgrounds, backgrounds, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(kept, image, rtol=1e-6)
    with pytest.raises(ValueError, match="one background and one factor per channel"):
        apply_colour_calibration(image, backgrounds[:2], 47.0, factors)


def test_channel_backgrounds_are_medians_of_the_masked_pixels():
    rng = np.random.default_rng(3)
    image = rng.normal(10.0, 1.0, (3, 20, 20))
    mask = rng.uniform(size=(20, 20)) > 0.3
    expected = [np.median(plane[mask]) for plane in image]
    np.testing.assert_allclose(channel_backgrounds(image, mask), expected)
    with pytest.raises(ValueError, match="mask of one plane's shape"):
        channel_backgrounds(image, mask[:10])


def test_region_white_factors_refuse_a_box_without_data():
    image = np.full((3, 40, 50), np.nan, dtype=np.float32)
    image[:, 20:, :] = 1.0
    with pytest.raises(ValueError, match="has no data"):
        region_white_factors(image, (0, 0, 5, 5))
