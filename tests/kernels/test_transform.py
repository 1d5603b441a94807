"""Tests for pipeline.kernels.transform."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.kernels.transform import INTERPOLATIONS, footprint, warp_image

H, W = 72, 96
INTERIOR = (slice(10, -10), slice(10, -10))


def translation(dx, dy):
    """Matrix for content moved by (+dx, +dy): output (x, y) samples input (x - dx, y - dy)."""
    return np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]])


def rotation(degrees, cx, cy, dx=0.0, dy=0.0):
    """Output->input matrix: rotate about (cx, cy), then translate."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array(
        [[c, -s, cx - c * cx + s * cy + dx], [s, c, cy - s * cx - c * cy + dy], [0.0, 0.0, 1.0]]
    )


def smooth(x, y):
    """Band-limited test scene on a sky pedestal: periods >= 40 px, Gaussians sigma >= 6."""
    v = 20.0 + 2.0 * np.sin(2 * np.pi * (x / 48.0 + y / 71.0) + 0.3)
    v += 1.5 * np.cos(2 * np.pi * (x / 64.0 - y / 40.0) + 1.1)
    v += 3.0 * np.exp(-((x - 40.3) ** 2 + (y - 30.7) ** 2) / (2 * 7.0**2))
    v += 2.0 * np.exp(-((x - 70.2) ** 2 + (y - 45.9) ** 2) / (2 * 9.0**2))
    return v


@pytest.fixture(scope="module")
def grid():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    return xx, yy


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(3).normal(100, 10, (H, W)).astype(np.float32)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_integer_shift_is_np_roll(noise, interpolation):
    out = warp_image(
        noise, translation(3, -2), output_shape=noise.shape, interpolation=interpolation
    )
    expected = np.roll(noise, (-2, 3), axis=(0, 1))
    np.testing.assert_array_equal(out[INTERIOR], expected[INTERIOR])


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_rotation_by_180_degrees_is_rot90_twice(noise, interpolation):
    matrix = rotation(180, (W - 1) / 2, (H - 1) / 2)
    out = warp_image(noise, matrix, output_shape=noise.shape, interpolation=interpolation)
    np.testing.assert_array_equal(out, np.rot90(noise, 2))


def test_subpixel_shift_of_band_limited_image(grid):
    xx, yy = grid
    image = smooth(xx, yy).astype(np.float32)
    dx, dy = -2.4, 1.32
    expected = smooth(xx - dx, yy - dy)
    out = warp_image(image, translation(dx, dy), output_shape=image.shape, clamp=False)
    np.testing.assert_allclose(out[INTERIOR], expected[INTERIOR], rtol=1e-3)
    # Lanczos-3's normalised taps have a sub-pixel phase bias (first moment up to
    # 0.02 px), so its error relative to the signal amplitude is a few 1e-3; the
    # cubic B-spline reproduces smooth signals far more closely.
    amplitude = np.ptp(expected[INTERIOR])
    assert np.abs(out - expected)[INTERIOR].max() < 5e-3 * amplitude
    spline = warp_image(
        image, translation(dx, dy), output_shape=image.shape, interpolation="bicubic"
    )
    assert np.abs(spline - expected)[INTERIOR].max() < 1e-3 * amplitude


def test_clamp_bounds_lanczos_by_the_nearest_pixels(noise):
    matrix = rotation(11, W / 2, H / 2, 0.37, -0.61)
    clamped = warp_image(noise, matrix, output_shape=noise.shape)
    free = warp_image(noise, matrix, output_shape=noise.shape, clamp=False)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    sx = matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2]
    sy = matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2]
    ok = ~np.isnan(clamped)
    x0 = np.clip(np.floor(sx).astype(int), 0, W - 1)
    y0 = np.clip(np.floor(sy).astype(int), 0, H - 1)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    corners = np.stack([noise[y0, x0], noise[y0, x1], noise[y1, x0], noise[y1, x1]])
    assert np.all(clamped[ok] >= corners.min(axis=0)[ok])
    assert np.all(clamped[ok] <= corners.max(axis=0)[ok])
    assert np.any(free[ok] > corners.max(axis=0)[ok])  # ringing exists without clamping


@pytest.mark.parametrize(("interpolation", "clamp"), [("lanczos3", False), ("bicubic", True)])
def test_transform_then_inverse_is_identity(grid, interpolation, clamp):
    xx, yy = grid
    image = smooth(xx, yy).astype(np.float32)
    matrix = rotation(7, W / 2, H / 2, 1.7, -0.6)
    there = warp_image(
        image, matrix, output_shape=image.shape, interpolation=interpolation, clamp=clamp
    )
    back = warp_image(
        there,
        np.linalg.inv(matrix),
        output_shape=image.shape,
        interpolation=interpolation,
        clamp=clamp,
    )
    core = (slice(16, -16), slice(16, -16))
    np.testing.assert_allclose(back[core], image[core], rtol=1e-3)


def test_bicubic_and_bilinear_match_scipy(noise, grid):
    xx, yy = grid
    matrix = rotation(-5, W / 2, H / 2, 0.3, 0.2)
    sx = matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2]
    sy = matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2]
    for interpolation, order in (("bicubic", 3), ("bilinear", 1)):
        out = warp_image(noise, matrix, output_shape=noise.shape, interpolation=interpolation)
        ref = ndimage.map_coordinates(
            noise.astype(np.float64), [sy, sx], order=order, mode="nearest"
        )
        ok = ~np.isnan(out)
        np.testing.assert_allclose(out[ok], ref[ok], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_dtype(noise, dtype):
    out = warp_image(noise.astype(dtype), translation(0.5, 0.25), output_shape=(40, 50))
    assert out.shape == (40, 50)
    assert out.dtype == (np.float64 if dtype == np.float64 else np.float32)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_no_data_outside_the_input(noise, interpolation):
    out = warp_image(
        noise, translation(3.4, -1.6), output_shape=noise.shape, interpolation=interpolation
    )
    # source x = x - 3.4 >= -0.5  <=>  x >= 2.9;  source y = y + 1.6 <= H - 0.5  <=>  y <= H - 2.1
    expected = np.zeros(noise.shape, dtype=bool)
    expected[:, :3] = True
    expected[H - 2 :, :] = True
    np.testing.assert_array_equal(np.isnan(out), expected)
    np.testing.assert_array_equal(footprint(out), expected)


def test_projective_horizon_is_no_data(noise, grid):
    xx, yy = grid
    matrix = np.array([[1.0, 0, 0], [0, 1.0, 0], [-0.02, 0, 1.0]])  # w <= 0 for x >= 50
    out = warp_image(noise, matrix, output_shape=noise.shape, interpolation="bilinear")
    w = 1.0 - 0.02 * xx
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = xx / w, yy / w
    inside = (w > 0) & (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)
    np.testing.assert_array_equal(np.isnan(out), ~inside)
    assert np.isnan(out[:, 50:]).all() and inside[:, :5].any()


def test_nan_input_holes_neither_spread_nor_ring():
    image = np.full((40, 40), 5.0, dtype=np.float32)
    image[15:20, 15:20] = np.nan
    out = warp_image(image, translation(0.5, 0.0), output_shape=image.shape, clamp=False)
    # nearest source pixel of output x is round-half-up(x - 0.5) = x (for x >= 0)
    hole = np.isnan(out)
    np.testing.assert_array_equal(hole[:, 1:], np.isnan(image)[:, 1:])
    np.testing.assert_allclose(out[~hole], 5.0, rtol=1e-6)


def test_all_nan_input_gives_all_nan():
    out = warp_image(np.full((8, 8), np.nan), np.eye(3), output_shape=(8, 8))
    assert np.isnan(out).all()


def test_colour_image_is_warped_per_channel(noise):
    colour = np.stack([noise, noise * 0.5, noise + 3])
    colour[1, 5, 5] = np.nan
    matrix = rotation(3, W / 2, H / 2, 0.2, 0.7)
    out = warp_image(colour, matrix, output_shape=(H, W))
    assert out.shape == (3, H, W)
    for c in range(3):
        np.testing.assert_array_equal(out[c], warp_image(colour[c], matrix, output_shape=(H, W)))
    np.testing.assert_array_equal(footprint(out), np.isnan(out).any(axis=0))


def test_large_output_is_banded_consistently(noise):
    matrix = rotation(2, W / 2, H / 2, 0.3, 0.1)
    small = warp_image(noise, matrix, output_shape=(300, 1000))
    assert small.shape == (300, 1000)  # 300k px > one band: crosses band borders
    np.testing.assert_array_equal(small[:H, :W], warp_image(noise, matrix, output_shape=(H, W)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matrix": np.eye(2)}, "3x3"),
        ({"matrix": np.full((3, 3), np.nan)}, "3x3"),
        ({"output_shape": (0, 5)}, "output_shape"),
        ({"output_shape": (5,)}, "output_shape"),
        ({"interpolation": "cubic"}, "interpolation"),
    ],
)
def test_validation(noise, kwargs, message):
    args = {"matrix": np.eye(3), "output_shape": (5, 5)} | kwargs
    matrix = args.pop("matrix")
    with pytest.raises(ValueError, match=message):
        warp_image(noise, matrix, **args)


def test_footprint_requires_an_image():
    with pytest.raises(ValueError, match="2-D or 3-D"):
        footprint(np.zeros(4))


def test_infinite_input_pixels_are_no_data():
    image = np.full((20, 20), 2.0)
    image[10, 10] = np.inf
    out = warp_image(image, translation(0.3, 0.3), output_shape=image.shape)
    hole = np.isnan(out)
    assert hole[10, 10] and hole.sum() == 1  # a 0.3 px shift stays inside the input
    np.testing.assert_array_equal(out[~hole], 2.0)


def test_compiled_lanczos_matches_the_numpy_path(monkeypatch):
    import pipeline.kernels.transform as transform

    rng = np.random.default_rng(8)
    image = rng.normal(100.0, 10.0, (60, 70)).astype(np.float32)
    image[5, 5] = np.nan
    matrix = np.array([[0.998, -0.03, 3.3], [0.03, 0.998, -2.6], [1e-5, 0.0, 1.0]])
    compiled = transform.warp_image(image, matrix, output_shape=(50, 80))
    monkeypatch.setattr(transform, "_COMPILED", False)
    reference = transform.warp_image(image, matrix, output_shape=(50, 80))
    np.testing.assert_array_equal(np.isnan(compiled), np.isnan(reference))
    np.testing.assert_allclose(compiled, reference, rtol=2e-6, atol=1e-4)
