from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.loader import parse_config
from pipeline.kernels.psfmatch import solve_coefficients
from pipeline.stages.integrate import (
    PsfMatch,
    autocrop_box,
    integrate_band,
    psf_match_equations,
)
from pipeline.stages.normalize import Normalization
from sample_data.sky import render_stars


def test_autocrop_peels_the_under_covered_border():
    count = np.full((60, 80), 10, dtype=np.uint16)
    count[:7] = 3  # dither: the top rows are covered by few subs
    count[:, 70:] = 4
    count[50:, :5] = 2  # a corner missing after a small rotation
    rows, cols = autocrop_box(count, minimum=8)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (7, 60, 5, 70)
    assert (count[rows, cols] >= 8).all()


def test_autocrop_of_a_colour_count_uses_the_worst_channel():
    count = np.full((3, 20, 30), 10, dtype=np.uint16)
    count[2, :, :4] = 1
    rows, cols = autocrop_box(count, minimum=5)
    assert cols.start == 4 and rows == slice(0, 20)


PLANTED = [
    {"method": "sigma_clip", "low": 3, "high": 3},
    {"method": "winsorized_sigma", "low": 3, "high": 3},
    {"method": "minmax", "n_low": 1, "n_high": 1},
    {"method": "percentile_clip"},
    {"method": "averaged_sigma", "low": 1.5, "high": 1.5},
    {"method": "linear_fit", "low": 5, "high": 4},
    {"method": "esd", "alpha": 0.01, "low_relaxation": 1},
]


@pytest.mark.parametrize("method", PLANTED, ids=lambda m: m["method"])
@pytest.mark.parametrize("equalize", [False, True], ids=["plain", "noise-equalised"])
def test_integration_rejects_exactly_the_planted_outliers(method, equalize):
    """15 subs at 100 +- 1, one at 1000 and one at -500: the master is the mean of the rest."""
    rejection = parse_config({"integration": {"rejection": method}}).integration.rejection
    rng = np.random.default_rng(21)
    stack = rng.normal(100.0, 1.0, (15, 1, 1)).astype(np.float32)
    stack[4], stack[11] = 1000.0, -500.0
    band = integrate_band(
        stack,
        normalizations=[Normalization((1.0,), (0.0,))] * 15,
        weights=np.ones(15),
        rejection=rejection,
        sub_noise=np.ones(15) if equalize else None,
        pivot=[100.0] if equalize else None,
    )
    good = np.delete(stack[:, 0, 0], [4, 11])
    assert (band.low[0, 0], band.high[0, 0], band.count[0, 0]) == (1, 1, 13)
    np.testing.assert_allclose(band.image[0, 0], good.mean(dtype=np.float64), rtol=1e-6)
    assert band.rejected_per_sub[4].tolist() == [0, 1]
    assert band.rejected_per_sub[11].tolist() == [1, 0]


def _matched(stack, settings, sigmas):
    """The seeing-difference model of every sub, fitted on the whole stack."""
    ata, atb = psf_match_equations(stack, **settings, sigmas=sigmas)
    coefficients = [solve_coefficients(a, b) for a, b in zip(ata, atb, strict=True)]
    return PsfMatch(tuple(sigmas), np.stack(coefficients))


@pytest.mark.parametrize("frames", [8, 40])
def test_pure_noise_loses_what_the_thresholds_promise(frames):
    """Gaussian noise subs, shipped settings (auto + large-scale rejection + seeing-matched
    tests): the false rejection rate per sub is within 2x of the thresholds' one-sided tail
    probabilities."""
    from pipeline.stages.rejection import expected_false_rates, resolve_rejection

    config = parse_config({}).integration
    rng = np.random.default_rng(frames)
    stack = rng.normal(1000.0, 10.0, size=(frames, 500, 600)).astype(np.float32)
    noise = rng.uniform(9.0, 11.0, frames)  # as measured on each sub: a few % off
    settings = {
        "normalizations": [Normalization(factor=(1.0,), offset=(0.0,))] * frames,
        "weights": np.ones(frames),
        "rejection": config.rejection,
        "sub_noise": noise,
        "pivot": [1000.0],
    }
    sigmas = [f * 3.0 for f in config.psf_matched_rejection.blur_fwhm]
    band = integrate_band(
        stack,
        **settings,
        large_scale=config.large_scale_rejection,
        psf_match=_matched(stack, settings, sigmas),
    )
    rates = band.rejected_per_sub.sum(axis=0) / (frames * 500 * 600)
    promised = expected_false_rates(resolve_rejection(config.rejection, frames))
    print(
        f"N={frames}: low {rates[0]:.2e} (tail {promised['low']:.2e}), "
        f"high {rates[1]:.2e} (tail {promised['high']:.2e})"
    )
    assert promised["high"] / 2 <= rates[1] <= 2 * promised["high"]
    assert promised["low"] / 2 <= rates[0] <= 2 * promised["low"]


def _seeing_night(rng, frames=16, blurry=4, shape=(200, 200), rays=20):
    """Subs of one star field: most at FWHM 2.6 px, ``blurry`` at 4.4 px; sky 1000, noise 10;
    ``rays`` single-pixel cosmic rays per sub. Returns (stack, ray positions per sub)."""
    stars = (
        rng.uniform(12, shape[1] - 12, 40),
        rng.uniform(12, shape[0] - 12, 40),
        10.0 ** rng.uniform(3.5, 5.5, 40),
    )
    sharp, wide = (render_stars(shape, *stars, fwhm) for fwhm in (2.6, 4.4))
    stack = np.empty((frames,) + shape, dtype=np.float32)
    hits = []
    for index in range(frames):
        scene = wide if index < blurry else sharp
        stack[index] = 1000.0 + scene + rng.normal(0.0, 10.0, shape)
        ys, xs = rng.integers(5, shape[0] - 5, rays), rng.integers(5, shape[1] - 5, rays)
        stack[index, ys, xs] += rng.uniform(300.0, 3000.0, rays).astype(np.float32)
        hits.append((ys, xs))
    return stack, hits


def test_blurrier_subs_keep_their_star_wings_and_lose_their_cosmic_rays():
    """Without the model a 4.4 px sub among 2.6 px ones loses its stars' wings (many times
    its planted rays); with it (the shipped default) it loses at most 3x its rays plus
    0.05 %, and every ray is still rejected."""
    rng = np.random.default_rng(21)
    stack, hits = _seeing_night(rng)
    config = parse_config({}).integration
    frames = stack.shape[0]
    settings = {
        "normalizations": [Normalization(factor=(1.0,), offset=(0.0,))] * frames,
        "weights": np.ones(frames),
        "rejection": config.rejection,
        "sub_noise": np.full(frames, 10.0),
        "pivot": [1000.0],
    }
    sigmas = [f * 2.6 for f in config.psf_matched_rejection.blur_fwhm]
    plain = integrate_band(stack, **settings, large_scale=config.large_scale_rejection)
    matched = integrate_band(
        stack,
        **settings,
        large_scale=config.large_scale_rejection,
        psf_match=_matched(stack, settings, sigmas),
    )
    pixels, rays = stack[0].size, hits[0][0].size
    limit = 3 * rays + 0.0005 * pixels
    print("high rejections, plain:", plain.rejected_per_sub[:, 1].tolist())
    print("high rejections, matched:", matched.rejected_per_sub[:, 1].tolist())
    assert plain.rejected_per_sub[:4, 1].min() > 3 * limit  # the wings go without the model
    assert matched.rejected_per_sub[:, 1].max() <= limit
    for index, (ys, xs) in enumerate(hits):
        assert (matched.high[ys, xs] >= 1).all(), f"sub {index} kept a cosmic ray"
