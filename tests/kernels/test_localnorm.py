"""Tests for pipeline.kernels.localnorm (local normalization background model)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels.localnorm import (
    GridGeometry,
    background_grid,
    evaluate_background,
    grid_geometry,
    local_normalization_offset,
)

SHAPE = (480, 640)
NOISE = 10.0


def _coordinates(shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.indices(shape, dtype=np.float64)
    return y, x


def _ramp(shape: tuple[int, int] = SHAPE, *, across: float = 50.0) -> np.ndarray:
    """A linear gradient rising by ``across`` ADU from the left to the right edge."""
    y, x = _coordinates(shape)
    return 100.0 + across * x / (shape[1] - 1) + 0.3 * across * y / (shape[0] - 1)


def _add_stars(image: np.ndarray, rng: np.random.Generator, n: int, peak: float) -> None:
    """Add ``n`` round Gaussian stars (sigma 1.2-2.5 px) of the given peak, in place."""
    height, width = image.shape
    for cy, cx, s in zip(
        rng.uniform(0, height, n), rng.uniform(0, width, n), rng.uniform(1.2, 2.5, n), strict=True
    ):
        y0, y1 = max(int(cy - 8 * s), 0), min(int(cy + 8 * s) + 1, height)
        x0, x1 = max(int(cx - 8 * s), 0), min(int(cx + 8 * s) + 1, width)
        y, x = np.mgrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += peak * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))


def _nan_border(image: np.ndarray) -> np.ndarray:
    """Registration-like border without data: top rows, left columns, a bottom-right notch."""
    out = image.copy()
    out[:25, :] = np.nan
    out[:, :40] = np.nan
    out[-10:, -60:] = np.nan
    return out


def _star_field(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """Background + Gaussian noise + 200 bright stars + a NaN border."""
    image = background + rng.normal(0.0, NOISE, background.shape)
    _add_stars(image, rng, 200, 5000.0)
    return _nan_border(image)


def _model(image: np.ndarray, scale: int) -> np.ndarray:
    return evaluate_background(background_grid(image, scale=scale), image.shape)


@pytest.mark.parametrize("scale", [1024, 256])
def test_recovers_linear_gradient_under_stars_noise_and_nan_border(scale: int) -> None:
    truth = _ramp()
    image = _star_field(np.random.default_rng(1), truth)
    finite = np.isfinite(image)
    error = (_model(image, scale) - truth)[finite]
    assert np.sqrt(np.mean(error**2)) < 0.5
    assert np.max(np.abs(error)) < 1.5


@pytest.mark.parametrize("scale", [64, 256, 1024])
@pytest.mark.parametrize("shape", [SHAPE, (301, 517)])
def test_noise_free_linear_gradient_is_reproduced_exactly(
    scale: int, shape: tuple[int, int]
) -> None:
    truth = _ramp(shape, across=80.0)
    model = _model(truth, scale)
    assert model.dtype == np.float32
    np.testing.assert_allclose(model, truth, rtol=0, atol=1e-4)


@pytest.mark.parametrize("scale", [256, 1024])
def test_linear_gradient_next_to_a_nan_border_is_kept(scale: int) -> None:
    """Partly empty blocks are moved to their node with the local fit: no edge bias.

    Taking each block median at its node instead errs by 3.5 ADU at scale 1024; what
    remains is the median of a ramp over an L-shaped block not being its centroid value.
    """
    truth = _ramp(across=80.0)
    image = _nan_border(truth)
    error = (_model(image, scale) - truth)[np.isfinite(image)]
    assert np.max(np.abs(error)) < 0.1


@pytest.mark.parametrize("border", [False, True])
def test_constant_gives_the_constant(border: bool) -> None:
    image = np.full(SHAPE, 1234.5)
    if border:
        image = _nan_border(image)
    grid = background_grid(image, scale=256)
    np.testing.assert_allclose(grid, 1234.5, rtol=1e-12)
    np.testing.assert_allclose(evaluate_background(grid, SHAPE), 1234.5, rtol=1e-6)


@pytest.mark.parametrize("scale", [1024, 256])
def test_row_bands_equal_whole_frame_bit_for_bit(scale: int) -> None:
    image = _star_field(np.random.default_rng(2), _ramp())
    grid = background_grid(image, scale=scale)
    whole = evaluate_background(grid, SHAPE)
    edges = [0, 7, 107, 108, SHAPE[0]]
    bands = [
        evaluate_background(grid, SHAPE, rows=slice(a, b))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    assert [band.shape[0] for band in bands] == [7, 100, 1, SHAPE[0] - 108]
    assert np.array_equal(np.concatenate(bands), whole)
    assert np.array_equal(evaluate_background(grid, SHAPE, rows=slice(None)), whole)
    assert np.array_equal(evaluate_background(grid, SHAPE, rows=slice(3, 450, 11)), whole[3:450:11])


def test_small_structure_is_not_followed_at_large_scale() -> None:
    y, x = _coordinates()
    cy, cx = 250.0, 300.0
    blob = 100.0 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 20.0**2))
    image = 500.0 + blob + np.random.default_rng(3).normal(0.0, NOISE, SHAPE)
    model = _model(image, 1024)
    assert abs(model[int(cy), int(cx)] - 500.0) < 0.1 * 100.0


def test_large_quadratic_bowl_is_followed_at_scale_256() -> None:
    y, x = _coordinates()
    height, width = SHAPE
    u, v = (x - (width - 1) / 2) / ((width - 1) / 2), (y - (height - 1) / 2) / ((height - 1) / 2)
    bowl = 300.0 + 40.0 * (u**2 + v**2) / 2  # 0 at the centre, 40 ADU in the corners
    image = bowl + np.random.default_rng(4).normal(0.0, NOISE, SHAPE)
    error = _model(image, 256) - bowl
    assert np.sqrt(np.mean(error**2)) < 2.0


def test_all_nan_difference_is_refused() -> None:
    with pytest.raises(ValueError, match=r"difference \(480, 640\) has no finite pixel"):
        background_grid(np.full(SHAPE, np.nan, dtype=np.float32), scale=1024)


def test_infinite_pixels_count_as_no_data() -> None:
    image = np.full(SHAPE, 7.0)
    image[100:110, 200:220] = np.inf
    np.testing.assert_allclose(background_grid(image, scale=256), 7.0, rtol=1e-12)


def test_float32_input_matches_float64() -> None:
    image = _star_field(np.random.default_rng(5), _ramp())
    grid32 = background_grid(image.astype(np.float32), scale=256)
    grid64 = background_grid(image, scale=256)
    assert grid32.dtype == np.float64 and grid32.shape == grid64.shape == (15, 20)
    np.testing.assert_allclose(grid32, grid64, atol=1e-3)
    model = evaluate_background(grid32, SHAPE)
    assert model.dtype == np.float32 and model.shape == SHAPE


def test_local_normalization_offset_matches_sub_to_reference() -> None:
    """``A1 * S + A0`` has the reference's background wherever both have data."""
    rng = np.random.default_rng(6)
    y, x = _coordinates()
    stars = np.zeros(SHAPE)
    _add_stars(stars, rng, 150, 4000.0)
    reference = 800.0 + 30.0 * y / SHAPE[0] + stars + rng.normal(0.0, NOISE, SHAPE)
    sub_background = 400.0 - 25.0 * x / SHAPE[1] + 10.0 * y / SHAPE[0]
    sub = (stars + sub_background * 2.0 + rng.normal(0.0, NOISE, SHAPE)) / 2.0
    sub[:, :30] = np.nan  # registration border of the sub only
    a1 = 2.0
    grid = local_normalization_offset(reference, sub, scale=512, global_scale=a1)
    normalized = a1 * sub + evaluate_background(grid, SHAPE)
    expected = 800.0 + 30.0 * y / SHAPE[0] + stars
    residual = (normalized - expected)[:, 30:]
    assert abs(np.mean(residual)) < 0.5
    # The gradients are gone: residual means of the four quadrants agree to 1 ADU.
    quadrants = [
        q.mean() for half in np.array_split(residual, 2) for q in np.array_split(half, 2, 1)
    ]
    assert np.ptp(quadrants) < 1.0


def test_grid_geometry_tiles_the_image() -> None:
    geometry = grid_geometry((3000, 4000), 1024)
    assert geometry.grid_shape == (24, 32)
    assert geometry.edges(0)[0] == 0 and geometry.edges(0)[-1] == 3000
    assert set(np.diff(geometry.edges(1))) <= {125}
    assert np.diff(geometry.edges(0)).max() <= 128
    np.testing.assert_allclose(np.diff(geometry.centres(0)), 3000 / 24)
    assert grid_geometry(SHAPE, 64).grid_shape == (30, 40)  # block 16 px minimum
    assert grid_geometry((40, 5000), 1024).grid_shape == (1, 40)


def test_tiny_grid_degrades_to_lower_order() -> None:
    """A strip one block tall still follows its gradient along the long axis."""
    y, x = _coordinates((60, 900))
    truth = 50.0 + 0.05 * x
    model = _model(truth, 1024)
    np.testing.assert_allclose(model, truth, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 16}, r"scale=16 must be an integer number of pixels >= 32"),
        ({"scale": 100.5}, r"scale=100.5 must be an integer"),
        ({"clip_sigma": 0.0}, r"clip_sigma=0.0 must be a positive number"),
    ],
)
def test_background_grid_rejects_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        background_grid(np.zeros(SHAPE), **kwargs)


def test_background_grid_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match=r"difference has shape \(3, 480, 640\); pass a 2-D"):
        background_grid(np.zeros((3, *SHAPE)), scale=1024)


def test_local_normalization_offset_rejects_mismatched_frames() -> None:
    with pytest.raises(ValueError, match=r"sub has shape \(480, 641\) but reference has shape"):
        local_normalization_offset(
            np.zeros(SHAPE), np.zeros((480, 641)), scale=1024, global_scale=1.0
        )
    with pytest.raises(ValueError, match=r"global_scale=nan must be a finite number"):
        local_normalization_offset(
            np.zeros(SHAPE), np.zeros(SHAPE), scale=1024, global_scale=float("nan")
        )


def test_evaluate_background_rejects_bad_input() -> None:
    grid = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"grid_shape=\(4, 5\) has more nodes than .* \(3, 640\)"):
        evaluate_background(grid, (3, 640))
    with pytest.raises(ValueError, match=r"grid has non-finite node values"):
        evaluate_background(np.full((4, 5), np.nan), SHAPE)
    with pytest.raises(ValueError, match=r"rows=5 must be a slice"):
        evaluate_background(grid, SHAPE, rows=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape=\(0, 640\) must be two positive integers"):
        GridGeometry((0, 640), (4, 5))
