"""Measurement at real scale: the PSF stars are chosen (no saturated, blended or edge stars),
and the group's weights follow sharpness and transparency on common terms."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.loader import parse_config
from pipeline.config.models import PSFSignalWeighting
from pipeline.stages import measure, select
from sample_data import sky

SHAPE = (1024, 1536)
SKY, READ_NOISE, FULL_WELL = 800.0, 12.0, 60000.0
CONFIG = parse_config({})


def _field(rng: np.random.Generator, n: int = 1500) -> np.ndarray:
    """Sky positions and fluxes: a power law with hundreds of stars that saturate when sharp."""
    x = rng.uniform(-20, SHAPE[1] + 20, n)
    y = rng.uniform(-20, SHAPE[0] + 20, n)
    flux = 3e3 * (1.0 - rng.uniform(0.0, 1.0, n) * (1 - 1e-4)) ** (-1.0 / 0.7)
    return np.column_stack([x, y, np.minimum(flux, 3e7)])


def _sub(
    rng: np.random.Generator,
    stars: np.ndarray,
    *,
    fwhm: float,
    transparency: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A calibrated sub: stars (clipped at the full well), sky, photon and read noise."""
    light = sky.render_stars(
        SHAPE, stars[:, 0] + shift[0], stars[:, 1] + shift[1], stars[:, 2] * transparency, fwhm
    )
    electrons = rng.poisson(light + SKY).astype(np.float64)
    image = electrons + rng.normal(0.0, READ_NOISE, SHAPE)
    return np.minimum(image, FULL_WELL).astype(np.float32)


@pytest.fixture(scope="module")
def night():
    rng = np.random.default_rng(2026)
    stars = _field(rng)
    subs = {
        fwhm: _sub(rng, stars, fwhm=fwhm, shift=(0.37 * k, -0.61 * k))
        for k, fwhm in enumerate((2.2, 3.0, 4.2))
    }
    return stars, subs


@pytest.mark.parametrize("fwhm", [2.2, 3.0, 4.2])
def test_fwhm_of_a_field_full_of_saturated_stars_is_within_5_percent(night, fwhm):
    _, subs = night
    result = measure.measure_frame(subs[fwhm], CONFIG.measurement, saturation=FULL_WELL)
    print(f"FWHM truth {fwhm} measured {result.fwhm:.3f}; choice {result.psf_choice}")
    assert result.psf_choice["saturated"] >= 30
    assert result.psf_stars >= 40
    assert result.fwhm == pytest.approx(fwhm, rel=0.05)
    assert result.eccentricity < 0.25


def test_saturated_stars_are_found_without_a_saturation_level(night):
    _, subs = night
    with_level = measure.detect_stars(subs[2.2], CONFIG.measurement, saturation=FULL_WELL)
    without = measure.detect_stars(subs[2.2], CONFIG.measurement, saturation=None)
    clipped = with_level.saturated
    # the plateau test alone finds most of the stars the level finds
    assert np.count_nonzero(without.saturated & clipped) >= 0.8 * np.count_nonzero(clipped)
    result = measure.measure_frame(subs[2.2], CONFIG.measurement, saturation=None)
    assert result.fwhm == pytest.approx(2.2, rel=0.05)


def test_star_table_flags_its_saturated_stars(night):
    _, subs = night
    detection = measure.detect_stars(subs[2.2], CONFIG.measurement, saturation=FULL_WELL)
    core = detection.objects[detection.saturated]
    table, flagged = detection.stars, detection.stars_saturated
    distance = np.hypot(
        table[:, None, 0] - core["x"][None, :], table[:, None, 1] - core["y"][None, :]
    ).min(axis=1)
    assert CONFIG.measurement.max_stars - 5 <= len(table) <= CONFIG.measurement.max_stars
    # the brightest stars stay for matching (the same in every sub), flagged
    assert flagged[:20].all()
    np.testing.assert_array_equal(flagged, distance < 1.0)


def test_psf_stars_are_spread_over_the_field_and_away_from_edges(night):
    _, subs = night
    detection = measure.detect_stars(subs[3.0], CONFIG.measurement, saturation=FULL_WELL)
    choice = measure.choose_psf_stars(detection, SHAPE, CONFIG.measurement)
    column = (choice.x * 4 // SHAPE[1]).astype(int)
    row = (choice.y * 4 // SHAPE[0]).astype(int)
    cells = set(zip(column, row, strict=True))
    assert len(cells) == 16
    assert choice.counts["chosen"] == CONFIG.measurement.psf_stars
    assert choice.counts["edge"] > 0 and choice.counts["blended"] > 0
    assert choice.x.min() > 5 and choice.x.max() < SHAPE[1] - 6


def test_a_blended_pair_is_not_a_psf_star():
    rng = np.random.default_rng(5)
    x = np.array([200.0, 207.0, 600.0, 900.0, 1200.0])
    y = np.array([300.0, 303.0, 500.0, 700.0, 400.0])
    flux = np.array([4e5, 2e5, 4e5, 4e5, 4e5])
    image = _sub(rng, np.column_stack([x, y, flux]), fwhm=3.0)
    detection = measure.detect_stars(image, CONFIG.measurement, saturation=FULL_WELL)
    choice = measure.choose_psf_stars(detection, SHAPE, CONFIG.measurement)
    chosen = np.column_stack([choice.x, choice.y])
    assert not np.any(np.hypot(chosen[:, 0] - 203.5, chosen[:, 1] - 301.5) < 8)
    assert len(chosen) == 3


def _group_weights(subs: list[np.ndarray], weighting=CONFIG.weighting.weights) -> np.ndarray:
    results = [measure.measure_frame(s, CONFIG.measurement, saturation=FULL_WELL) for s in subs]
    ratios = select.provisional_flux_ratios(
        [r.stars for r in results],
        0,
        CONFIG.registration,
        saturated=[r.stars_saturated for r in results],
    )
    return select.sub_weights([r.metrics() for r in results], weighting, flux_ratios=ratios)


def test_a_sharper_sub_of_equal_transparency_weighs_more(night):
    _, subs = night
    psfsw = _group_weights([subs[4.2], subs[3.0], subs[2.2]], PSFSignalWeighting())
    print("PSF signal weights, FWHM 4.2 / 3.0 / 2.2 px:", np.round(psfsw, 3))
    assert psfsw[0] < psfsw[1] < psfsw[2]
    # PSFSW ~ 1 / area: the sharpest sub weighs about (4.2 / 2.2)^2 times the blurriest
    assert psfsw[2] / psfsw[0] == pytest.approx((4.2 / 2.2) ** 2, rel=0.25)
    default = _group_weights([subs[4.2], subs[3.0], subs[2.2]])
    print("aperture SNR weights (default):", np.round(default, 3))
    assert default[0] < default[1] < default[2]
    # the light of each sub's stars inside 1.5 x the median FWHM (4.5 px), beta 3.5
    enclosed = select.moffat_enclosed(4.5, np.array([4.2, 2.2]), np.array([3.5, 3.5]))
    assert default[2] / default[0] == pytest.approx(enclosed[1] / enclosed[0], rel=0.1)


def test_a_hazy_sub_weighs_less_than_a_clear_one_of_equal_seeing(night):
    stars, _ = night
    rng = np.random.default_rng(11)
    clear = _sub(rng, stars, fwhm=3.0)
    hazy = _sub(rng, stars, fwhm=3.0, transparency=0.6, shift=(1.3, 0.4))
    weights = _group_weights([clear, hazy])
    assert weights[1] < 0.5 * weights[0]


def test_sharp_and_blurry_subs_of_a_saturated_field_register_with_unbiased_photometry(night):
    """The brightest stars (saturated in the sharp sub only) still match; the flux ratio
    leaves them out and measures in apertures of 2 FWHM: equal transparency gives 1."""
    from pipeline.stages.register import solve_transform

    _, subs = night
    sharp, blurry = (
        measure.measure_frame(subs[f], CONFIG.measurement, saturation=FULL_WELL) for f in (2.2, 4.2)
    )
    solution = solve_transform(
        blurry.stars,
        sharp.stars,
        CONFIG.registration,
        saturated=(blurry.stars_saturated, sharp.stars_saturated),
    )
    # subs[4.2] is shifted by 2 x (0.37, -0.61) px, subs[2.2] by 0
    np.testing.assert_allclose(solution.matrix[:2, 2], [-0.74, 1.22], atol=0.05)
    assert solution.flux_ratio == pytest.approx(1.0, abs=0.02)
    biased = solve_transform(blurry.stars, sharp.stars, CONFIG.registration).flux_ratio
    print(f"flux ratio {solution.flux_ratio:.4f}; with saturated stars {biased:.4f}")
