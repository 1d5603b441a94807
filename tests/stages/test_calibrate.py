from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.models import CalibrationConfig, CosmeticCorrectionConfig
from pipeline.stages.calibrate import CalibrationMasters, calibrate_light, raw_saturation


@pytest.fixture
def sensor():
    rng = np.random.default_rng(4)
    shape = (64, 80)
    bias = 1000.0 + rng.normal(0, 3, shape)
    thermal = np.full(shape, 2.0)  # per second of exposure
    hot = rng.choice(shape[0] * shape[1], 40, replace=False)
    thermal.flat[hot] = rng.uniform(50, 200, 40)
    flat = 1.0 + 0.2 * np.linspace(-1, 1, shape[1])[None, :] * np.ones(shape)
    sky = 300.0 + rng.normal(0, 1, shape)
    return rng, bias, thermal, flat, sky


def _light(sensor, exposure):
    _, bias, thermal, flat, sky = sensor
    return (bias + thermal * exposure + sky * flat).astype(np.float32)


def test_matching_dark_bias_flat_and_pedestal(sensor):
    _, bias, thermal, flat, sky = sensor
    masters = CalibrationMasters(
        dark=(bias + thermal * 60).astype(np.float32),
        flat=(flat / np.median(flat)).astype(np.float32),
    )
    config = CalibrationConfig(
        pedestal=100.0, cosmetic_correction=CosmeticCorrectionConfig(enabled=False)
    )
    result = calibrate_light(_light(sensor, 60), masters, config)
    expected = sky * np.median(flat) + 100.0
    np.testing.assert_allclose(result.image, expected, rtol=1e-5)
    assert result.image.dtype == np.float32


def test_scaled_and_optimized_dark(sensor):
    _, bias, thermal, flat, sky = sensor
    masters = CalibrationMasters(
        bias=bias.astype(np.float32), dark=(bias + thermal * 300).astype(np.float32), dark_scale=0.6
    )
    config = CalibrationConfig(cosmetic_correction=CosmeticCorrectionConfig(enabled=False))
    light = _light(sensor, 180) + np.random.default_rng(9).normal(0, 2, bias.shape).astype(
        np.float32
    )
    scaled = calibrate_light(light, masters, config)
    optimized = calibrate_light(light, masters, config, optimize_dark=True)
    assert scaled.notes["dark_scale"] == 0.6
    assert optimized.notes["dark_scale_optimized"] == pytest.approx(0.6, rel=0.02)
    np.testing.assert_allclose(np.median(optimized.image - sky * flat), 0.0, atol=1.0)


def test_near_zero_flat_pixels_become_no_data_not_infinity(sensor):
    _, bias, thermal, flat, _ = sensor
    dead = flat.copy()
    dead[10, 10] = 0.0
    dead[11, 11] = 0.01
    masters = CalibrationMasters(
        dark=(bias + thermal * 60).astype(np.float32), flat=dead.astype(np.float32)
    )
    config = CalibrationConfig(cosmetic_correction=CosmeticCorrectionConfig(enabled=False))
    image = calibrate_light(_light(sensor, 60), masters, config).image
    assert np.isnan(image[10, 10]) and np.isnan(image[11, 11])
    assert np.isfinite(image).sum() == image.size - 2


def test_defect_map_pixels_are_replaced(sensor):
    _, bias, thermal, flat, sky = sensor
    light = _light(sensor, 60)
    light[20, 30] = 60000.0  # a defect the master dark does not model
    defects = np.zeros(light.shape, dtype=np.uint8)
    defects[20, 30] = 1
    masters = CalibrationMasters(
        dark=(bias + thermal * 60).astype(np.float32), defects=defects.astype(np.float32)
    )
    result = calibrate_light(light, masters, CalibrationConfig())
    assert result.notes["defects_corrected"] == 1
    assert abs(result.image[20, 30] - np.median(result.image[18:23, 28:33])) < 20


def test_saturated_pixels_keep_a_known_level_through_calibration(sensor):
    """A clipped raw pixel ends at (level - bias - k dark) / flat: the calibrated level is the
    lower envelope of that over the frame, so every clipped pixel reaches it."""
    _, bias, thermal, flat, sky = sensor
    raw = _light(sensor, 60)
    clipped = np.zeros(raw.shape, dtype=bool)
    clipped[10:14, 20:24] = clipped[40:43, 60:63] = True
    raw[clipped] = 65535.0
    masters = CalibrationMasters(
        bias=bias.astype(np.float32),
        dark=(bias + thermal * 120).astype(np.float32),
        dark_scale=0.5,
        flat=(flat / np.median(flat)).astype(np.float32),
    )
    config = CalibrationConfig(cosmetic_correction=CosmeticCorrectionConfig(enabled=False))
    result = calibrate_light(raw, masters, config, saturation=65535.0)
    level = result.notes["saturation"]
    assert np.all(result.image[clipped] >= level)
    exact = (65535.0 - bias - 0.5 * thermal * 120) / (flat / np.median(flat))
    assert exact.min() <= level <= np.percentile(exact, 1)
    assert np.all(result.image[~clipped] < 0.1 * level)


def test_saturation_level_from_the_frames_own_clipping():
    raw = np.full((50, 60), 1200.0, dtype=np.float32)
    raw[5:8, 5:8] = 16380.0  # a 14-bit camera clipping below its data type's 65535
    assert raw_saturation(raw, 65535.0) == 16380.0
    assert raw_saturation(raw, None) == 16380.0
    raw[5:8, 5:8] = 1300.0
    raw[20, 20] = 9000.0  # one bright pixel is no clipping
    assert raw_saturation(raw, 65535.0) == 65535.0
    assert raw_saturation(raw, None) is None
