"""Band-tiled integration equals the in-memory result bit for bit, within the memory limit."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.models import (
    ESDRejection,
    LargeScaleRejection,
    LinearFitRejection,
    NoRejection,
    SigmaClipRejection,
    WinsorizedSigmaRejection,
)
from pipeline.engine.tasks import integrate_files
from pipeline.engine.tiling import MASTER_BYTES_PER_PIXEL, RESERVE_MB, band_height, row_bands
from pipeline.errors import IntegrationError
from pipeline.io.fits import write_image
from pipeline.kernels.localnorm import background_grid
from pipeline.stages.integrate import integrate_band
from pipeline.stages.normalize import LocalNormalization, Normalization
from sample_data.sky import render_stars

UNEVEN = [slice(0, 7), slice(7, 8), slice(8, 30), slice(30, 31), slice(31, 53)]


def test_row_bands_cover_every_row_once():
    bands = list(row_bands(53, 5))
    assert [b.stop - b.start for b in bands] == [5] * 10 + [3]


def test_band_height_keeps_bands_master_and_reserve_under_the_limit():
    shape, frames, workers = (3000, 4000), 200, 2
    height = band_height(shape, frames, memory_limit_mb=2048, workers=workers, compiled=True)
    band_bytes = frames * 4 * 1.15 * 4000 * height * workers
    total = band_bytes + 12e6 * MASTER_BYTES_PER_PIXEL + RESERVE_MB * 2**20
    assert 1 <= height < 3000 and total <= 2048 * 2**20


def test_band_height_refuses_a_limit_too_small_for_the_master():
    with pytest.raises(IntegrationError, match="memory_limit_mb=400 is too small.*raise it"):
        band_height((6000, 8000), 10, memory_limit_mb=400, workers=1, compiled=True)


def _stack(rng, shape=(9, 53, 40)):
    stack = rng.normal(100.0, 5.0, size=shape).astype(np.float32)
    stack[3, ..., 10:12, :] = 5000.0  # a trail
    stack[5, ..., :4, :7] = np.nan  # a footprint edge
    return stack


@pytest.mark.parametrize(
    "rejection",
    [
        NoRejection(),
        SigmaClipRejection(),
        WinsorizedSigmaRejection(),
        LinearFitRejection(),
        ESDRejection(),
    ],
    ids=lambda r: r.method,
)
@pytest.mark.parametrize("large_scale", [None, LargeScaleRejection()], ids=["plain", "grown"])
def test_tiled_integration_equals_in_memory(tmp_path, rejection, large_scale):
    stack = _stack(np.random.default_rng(12))
    paths = [write_image(tmp_path / f"sub{i}.fits", frame) for i, frame in enumerate(stack)]
    normalizations = [Normalization((1.0 + 0.01 * i,), (-0.5 * i,)) for i in range(9)]
    weights = np.linspace(0.5, 1.0, 9)
    noise = np.linspace(4.0, 6.0, 9)
    eager = integrate_band(
        stack,
        normalizations=normalizations,
        weights=weights,
        rejection=rejection,
        sub_noise=noise,
        pivot=[100.0],
        large_scale=large_scale,
    )
    tiled = integrate_files(
        paths,
        normalizations,
        weights,
        rejection,
        memory_limit_mb=2048,
        workers=2,
        sub_noise=noise,
        pivot=[100.0],
        large_scale=large_scale,
        bands=UNEVEN,
    )
    for name in ("image", "count", "low", "high", "noise"):
        np.testing.assert_array_equal(getattr(tiled, name), getattr(eager, name), err_msg=name)
    np.testing.assert_array_equal(tiled.rejected_per_sub, eager.rejected_per_sub)
    if not isinstance(rejection, NoRejection):
        assert (tiled.high[10:12] >= 1).all()  # the trail is rejected everywhere
        assert tiled.rejected_per_sub[3, 1] >= 2 * 40


def test_tiled_seeing_matched_rejection_equals_in_memory(tmp_path):
    """The model is fitted on fixed stripes and its terms need a halo: any banding gives
    the same master, masks and per-sub rejections as one band."""
    rng = np.random.default_rng(4)
    shape = (53, 40)
    stars = (rng.uniform(5, 35, 12), rng.uniform(5, 48, 12), 10.0 ** rng.uniform(3, 5, 12))
    stack = np.stack(
        [
            100.0 + render_stars(shape, *stars, fwhm) + rng.normal(0.0, 5.0, shape)
            for fwhm in np.linspace(2.0, 4.5, 9)
        ]
    ).astype(np.float32)
    stack[3, 10:12, :] += 5000.0  # a trail
    paths = [write_image(tmp_path / f"sub{i}.fits", frame) for i, frame in enumerate(stack)]
    settings = {
        "normalizations": [Normalization((1.0,), (0.0,))] * 9,
        "weights": np.ones(9),
        "rejection": WinsorizedSigmaRejection(),
        "sub_noise": np.full(9, 5.0),
        "pivot": [100.0],
        "large_scale": LargeScaleRejection(),
    }
    tiled = integrate_files(
        paths, **settings, memory_limit_mb=2048, bands=UNEVEN, psf_match_sigmas=(1.0, 2.5)
    )
    assert tiled.psf_match is not None and np.abs(tiled.psf_match.coefficients).max() > 0.1
    eager = integrate_band(stack, **settings, psf_match=tiled.psf_match)
    for name in ("image", "count", "low", "high", "noise"):
        np.testing.assert_array_equal(getattr(tiled, name), getattr(eager, name), err_msg=name)
    np.testing.assert_array_equal(tiled.rejected_per_sub, eager.rejected_per_sub)


def test_tiled_local_normalization_equals_in_memory(tmp_path):
    rng = np.random.default_rng(3)
    stack = _stack(rng, (6, 2, 53, 40))
    yy, xx = np.mgrid[0:53, 0:40]
    stack += (np.arange(6)[:, None, None, None] * (0.3 * xx - 0.2 * yy)).astype(np.float32)
    paths = [write_image(tmp_path / f"sub{i}.fits", frame) for i, frame in enumerate(stack)]
    reference = np.nanmean(stack, axis=0)
    local = [
        LocalNormalization(
            (1.0, 1.0),
            tuple(background_grid(reference[c] - stack[i, c], scale=64) for c in range(2)),
            (53, 40),
        )
        for i in range(6)
    ]
    eager = integrate_band(
        stack, normalizations=local, weights=np.ones(6), rejection=WinsorizedSigmaRejection()
    )
    tiled = integrate_files(
        paths, local, np.ones(6), WinsorizedSigmaRejection(), memory_limit_mb=2048, bands=UNEVEN
    )
    np.testing.assert_array_equal(tiled.image, eager.image)
    assert eager.image.shape == (2, 53, 40)


def test_noise_map_is_the_weighted_mean_noise():
    rng = np.random.default_rng(5)
    stack = rng.normal(0.0, 1.0, (4, 8, 8)).astype(np.float32)
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    noise = np.array([2.0, 1.0, 1.0, 0.5])
    factors = [Normalization((f,), (0.0,)) for f in (1.0, 2.0, 1.0, 1.0)]
    band = integrate_band(
        stack, normalizations=factors, weights=weights, rejection=NoRejection(), sub_noise=noise
    )
    sigma = noise * np.array([1.0, 2.0, 1.0, 1.0])
    expected = np.sqrt(np.sum(weights**2 * sigma**2)) / weights.sum()
    np.testing.assert_allclose(band.noise, expected, rtol=1e-6)


def test_large_scale_rejection_takes_the_faint_edges_of_a_trail():
    rng = np.random.default_rng(8)
    stack = rng.normal(100.0, 5.0, size=(9, 60, 400)).astype(np.float32)
    clean = stack.copy()
    trail = 2000.0 * np.exp(-0.5 * ((np.arange(60) - 30.0) / 3.0) ** 2)
    stack[4] += trail[:, None].astype(np.float32)
    common = dict(
        normalizations=[Normalization((1.0,), (0.0,))] * 9,
        weights=np.ones(9),
        rejection=WinsorizedSigmaRejection(),
        sub_noise=np.full(9, 5.0),
        pivot=[100.0],
    )
    plain = integrate_band(stack, **common)
    grown = integrate_band(stack, large_scale=LargeScaleRejection(), **common)
    reference = integrate_band(clean, **common)
    faint = (trail > 15.0) & (trail < 60.0)  # 3 to 12 sigma of one sub: the trail's edges
    assert faint.sum() == 4
    assert (plain.high[faint] >= 1).mean() < 0.9  # plain clipping misses part of the edges
    assert np.all(grown.high[faint] >= 1)  # growth from the bright core takes all of them
    leak_plain = (plain.image - reference.image)[faint].mean()
    leak_grown = (grown.image - reference.image)[faint].mean()
    assert abs(leak_grown) < 0.1 < leak_plain  # ADU; one sub's sigma is 5
