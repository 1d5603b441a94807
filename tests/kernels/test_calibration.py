"""Tests for pipeline.kernels.calibration, with ccdproc as the oracle."""

from __future__ import annotations

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.nddata import CCDData

from pipeline.kernels.calibration import (
    flat_correct,
    normalize_flat,
    subtract_bias,
    subtract_dark,
)

SHAPE = (48, 64)


def ccd(array):
    return CCDData(array, unit="adu")


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(11)
    light = rng.uniform(1500, 9000, SHAPE).astype(np.float32)
    bias = rng.normal(300, 4, SHAPE).astype(np.float32)
    dark = rng.uniform(5, 60, SHAPE).astype(np.float32)
    flat = rng.uniform(0.7, 1.3, SHAPE).astype(np.float32)
    return light, bias, dark, flat


def test_subtract_bias_matches_ccdproc(frames):
    light, bias, _, _ = frames
    ours = subtract_bias(light, bias)
    ref = ccdproc.subtract_bias(ccd(light), ccd(bias)).data
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


@pytest.mark.parametrize(("dark_s", "light_s"), [(30.0, 120.0), (300.0, 60.0), (60.0, 60.0)])
def test_subtract_scaled_dark_matches_ccdproc(frames, dark_s, light_s):
    light, _, dark, _ = frames
    ours = subtract_dark(light, dark, dark_exposure=dark_s, image_exposure=light_s, scale=True)
    ref = ccdproc.subtract_dark(
        ccd(light), ccd(dark), dark_exposure=dark_s * u.s, data_exposure=light_s * u.s, scale=True
    ).data
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_subtract_unscaled_dark_matches_ccdproc(frames):
    light, _, dark, _ = frames
    ours = subtract_dark(light, dark, dark_exposure=30, image_exposure=120, scale=False)
    ref = ccdproc.subtract_dark(
        ccd(light), ccd(dark), dark_exposure=30 * u.s, data_exposure=120 * u.s, scale=False
    ).data
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_flat_correct_matches_ccdproc(frames):
    light, _, _, flat = frames
    flat = flat.copy()
    flat[3, 4] = 1e-4  # below min_value
    flat[5, 6] = -0.2
    flat[7, 8] = np.nan
    ours = flat_correct(light, flat, min_value=1e-3)
    ref = ccdproc.flat_correct(ccd(light), ccd(flat), min_value=1e-3, norm_value=1).data
    usable = flat >= 1e-3
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours[usable], ref[usable], rtol=1e-6)
    # unusable flat pixels are no data, never inf
    assert np.isnan(ours[~usable]).all() and np.isfinite(ours[usable]).all()


def test_normalize_flat_has_unit_median_and_ignores_nan(frames):
    _, _, _, flat = frames
    raw = flat * 23000
    raw[0, :10] = np.nan
    normed = normalize_flat(raw)
    assert normed.dtype == np.float32
    assert np.nanmedian(normed) == pytest.approx(1.0, rel=1e-6)
    assert np.isnan(normed[0, :10]).all()


def test_full_chain_on_raw_uint16(frames):
    light, bias, dark, flat = frames
    raw = np.round(light + bias + dark * 4).astype(np.uint16)
    out = flat_correct(
        subtract_dark(
            subtract_bias(raw, bias), dark, dark_exposure=30, image_exposure=120, scale=True
        ),
        normalize_flat(flat * 20000),
    )
    assert out.dtype == np.float32
    expected = (raw.astype(np.float64) - bias - dark * 4) / (flat / np.median(flat))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_float64_stays_float64(frames):
    light, bias, _, _ = frames
    assert subtract_bias(light.astype(np.float64), bias).dtype == np.float64


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: subtract_bias(np.ones((3, 3)), np.ones((3, 4))), "shape"),
        (
            lambda: subtract_dark(
                np.ones(3), np.ones(3), dark_exposure=0, image_exposure=1, scale=True
            ),
            "dark_exposure=0",
        ),
        (
            lambda: subtract_dark(
                np.ones(3), np.ones(3), dark_exposure=1, image_exposure=np.nan, scale=True
            ),
            "image_exposure=nan",
        ),
        (lambda: flat_correct(np.ones(3), np.ones(3), min_value=0), "min_value=0"),
        (lambda: normalize_flat(np.full(4, np.nan)), "median"),
        (lambda: normalize_flat(-np.ones(4)), "median"),
    ],
)
def test_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
