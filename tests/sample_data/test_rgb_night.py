"""Tests of the synthetic mono R, G, B night (``sample_data.rgb``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits

from sample_data import NightTruth, generate_night, generate_rgb_night, load_truth
from sample_data.color import colour_ratios
from sample_data.rgb import REFERENCE_TEFF, RGB_FILTERS

SMALL = {"width": 240, "height": 180, "n_lights_per_filter": 4}
RGB = ("R", "G", "B")
BLOCK = 20


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> NightTruth:
    """A small R, G, B night, generated once."""
    return generate_rgb_night(tmp_path_factory.mktemp("rgb_night"), seed=21, **SMALL)


@pytest.fixture(scope="module")
def lrgb(tmp_path_factory: pytest.TempPathFactory) -> NightTruth:
    """A small L, R, G, B night, generated once."""
    return generate_rgb_night(
        tmp_path_factory.mktemp("lrgb_night"), seed=22, luminance=True, **SMALL
    )


def _fits_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".fit", ".fits"))


def _raw(truth: NightTruth, relative: str) -> np.ndarray:
    return fits.getdata(truth.path(relative)).astype(np.float64)


def _calibrated(truth: NightTruth, light) -> np.ndarray:
    """Light minus truth bias and dark, divided by the truth flat response."""
    dark = truth.dark_current * (light.exposure / truth.sensor.gain)
    return (_raw(truth, light.path) - truth.bias_pattern - dark) / truth.flat_response(light.filter)


def _plane_fit(image: np.ndarray) -> np.ndarray:
    """``(level at the frame centre, d/dx, d/dy)`` of a plane fitted to block medians."""
    height, width = image.shape
    rows, cols = height // BLOCK, width // BLOCK
    blocks = image[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK)
    medians = np.median(blocks, axis=(1, 3)).ravel()
    y, x = np.mgrid[:rows, :cols] * BLOCK + (BLOCK - 1) / 2
    design = np.column_stack(
        [np.ones(medians.size), x.ravel() - (width - 1) / 2, y.ravel() - (height - 1) / 2]
    )
    return np.linalg.lstsq(design, medians, rcond=None)[0]


def _truth_slope(truth: NightTruth, light) -> np.ndarray:
    """The truth sky gradient of ``light`` as ``(d/dx, d/dy)`` in ADU per pixel."""
    half_diagonal = np.hypot((truth.width - 1) / 2, (truth.height - 1) / 2)
    size = light.sky_adu * light.sky_gradient / half_diagonal
    angle = light.sky_gradient_angle
    return size * np.array([np.cos(angle), np.sin(angle)])


def _angle_difference_deg(a: float, b: float) -> float:
    return float(np.degrees(abs(np.angle(np.exp(1j * (a - b))))))


def test_files_and_groups_per_filter(truth: NightTruth) -> None:
    root = truth.root
    assert list(truth.filters) == list(RGB)
    for name in RGB:
        assert len(list((root / "LIGHT").glob(f"*_{name}_*_120.00s_*.fits"))) == 4
        assert len(list((root / "Flats" / name).glob(f"Flat_{name}_*.fits"))) == 8
    assert len(list((root / "Darks").glob("Dark_120s_*.fit"))) == 8
    assert len(list((root / "Bias").glob("Bias_*.fit"))) == 12
    every = truth.light_frames + truth.bias_frames + truth.dark_frames + truth.flat_frames
    assert sorted(root / f.path for f in every) == _fits_files(root)
    groups: dict[tuple, int] = {}
    for path in _fits_files(root):
        header = fits.getheader(path)
        key = (header["IMAGETYP"], header.get("FILTER"), header["EXPTIME"])
        groups[key] = groups.get(key, 0) + 1
    assert groups == {
        **{("LIGHT", name, 120.0): 4 for name in RGB},
        **{("Flat Field", f.name, f.flat_exposure): 8 for f in RGB_FILTERS},
        ("Dark Frame", None, 120.0): 8,
        ("Bias Frame", None, 0.0): 12,
    }
    light = fits.getheader(truth.path(truth.lights("G")[0].path))
    assert light["EXPOSURE"] == 120.0 and light["INSTRUME"] == "ZWO ASI1600MM Pro"
    assert light["SWCREATE"].startswith("N.I.N.A.") and light["PIERSIDE"] == "WEST"


def test_lights_are_clean_and_dithered(truth: NightTruth) -> None:
    for light in truth.light_frames:
        assert not (light.flipped or light.cloudy or light.blurred) and light.trail is None
        assert light.cosmic_rays
        assert abs(light.rotation_deg) <= 0.3 + 1e-9
        centre = np.array([(truth.width - 1) / 2, (truth.height - 1) / 2, 1.0])
        shift = (light.sky_to_sensor @ centre - centre)[:2]
        assert np.abs(shift).max() <= 15.0 + 1e-9
    firsts = [truth.lights(name)[0] for name in RGB]
    pairs = zip(firsts[:-1], firsts[1:], strict=True)
    offsets = [np.hypot(*truth.sub_to_sub_matrix(a, b)[:2, 2]) for a, b in pairs]
    assert max(offsets) > 3.0


def test_filters_differ_in_sky_throughput_and_nebula(truth: NightTruth) -> None:
    r, g, b = (truth.filters[name] for name in RGB)
    assert r.sky_rate > g.sky_rate > b.sky_rate
    assert (r.star_throughput, g.star_throughput, b.star_throughput) == (0.85, 1.0, 0.7)
    assert (r.wavelength_nm, g.wavelength_nm, b.wavelength_nm) == (620.0, 530.0, 460.0)
    assert r.nebula_rate > b.nebula_rate > g.nebula_rate > 0
    assert len({r.gradient_scale, g.gradient_scale, b.gradient_scale}) == 3
    assert len({r.gradient_turn_deg, g.gradient_turn_deg, b.gradient_turn_deg}) == 3
    for name in RGB:
        assert all(0.015 <= lt.sky_gradient <= 0.04 for lt in truth.lights(name))
    # every light's direction is the night's angle plus its filter's turn, +/- a few degrees
    base = [
        lt.sky_gradient_angle - np.radians(truth.filters[lt.filter].gradient_turn_deg)
        for lt in truth.light_frames
    ]
    spread = [_angle_difference_deg(angle, base[0]) for angle in base]
    assert max(spread) < 30.0


def test_sky_levels_and_gradients_match_truth(truth: NightTruth) -> None:
    """Plane fits to block medians of the calibrated lights recover each filter's sky.

    The truth nebula and stars are subtracted first (faint stars would bias the block
    medians by about 0.8 % and the fitted slope by up to half of a 2 % gradient in B).
    """
    levels, directions = {}, {}
    for name in RGB:
        fitted, slopes = [], []
        for light in truth.lights(name):
            foreground = truth.nebula_image(light) + truth.star_image(light)
            level, *slope = _plane_fit(_calibrated(truth, light) - foreground)
            expected = _truth_slope(truth, light)
            assert abs(level - light.sky_adu) < 0.003 * light.sky_adu, light.path
            assert np.hypot(*(np.array(slope) - expected)) < 0.2 * np.hypot(*expected), light.path
            fitted.append(level)
            slopes.append(slope)
        levels[name] = np.mean(fitted)
        directions[name] = np.arctan2(*np.mean(slopes, axis=0)[::-1])
    assert levels["R"] > 1.2 * levels["G"] > 1.2**2 * levels["B"]
    for a, b in (("R", "G"), ("G", "B"), ("R", "B")):
        assert _angle_difference_deg(directions[a], directions[b]) > 30.0


def test_sky_gradient_and_nebula_images_add_up(truth: NightTruth) -> None:
    light = truth.lights("B")[1]
    np.testing.assert_allclose(
        truth.clean_background(light), truth.sky_gradient_image(light) + truth.nebula_image(light)
    )
    sky = truth.sky_gradient_image(light)
    fit = _plane_fit(sky)
    np.testing.assert_allclose(fit[0], light.sky_adu, rtol=1e-9)
    np.testing.assert_allclose(fit[1:], _truth_slope(truth, light), rtol=1e-9)
    nebula = {name: truth.nebula_image(truth.lights(name)[0]).mean() for name in RGB}
    assert nebula["R"] > 2 * nebula["B"] > 0 and nebula["B"] > nebula["G"] > 0


def test_star_fluxes_follow_temperature_and_throughput(truth: NightTruth) -> None:
    assert truth.has_star_colours and truth.stars.shape[1] == 4
    teff = truth.stars[:, 3]
    for k, name in enumerate(RGB):
        np.testing.assert_array_equal(truth.star_colour(name), colour_ratios(teff)[:, k])
        light = truth.lights(name)[0]
        filt = truth.filters[name]
        scale = filt.star_throughput * light.transmission * light.exposure / truth.sensor.gain
        stars = truth.stars_in_sensor(light)
        np.testing.assert_allclose(
            stars["flux_adu"],
            truth.stars[stars["id"], 2] * scale * truth.star_colour(name)[stars["id"]],
        )
        np.testing.assert_array_equal(stars["teff"], teff[stars["id"]])
        np.testing.assert_array_equal(stars["reference"], stars["id"] < truth.n_reference)
        assert stars["peak_adu"][~stars["reference"]].max() < 30000
    red_over_blue = truth.star_colour("R") / truth.star_colour("B")
    assert np.corrcoef(np.log(teff), np.log(red_over_blue))[0, 1] < -0.9


def test_reference_stars_are_bright_isolated_and_inside(truth: NightTruth) -> None:
    assert truth.n_reference == len(REFERENCE_TEFF) >= 6
    np.testing.assert_array_equal(truth.stars[: truth.n_reference, 3], REFERENCE_TEFF)
    assert np.sum(truth.stars[: truth.n_reference, 3] == 6500.0) >= 2
    for light in truth.light_frames:
        stars = truth.stars_in_sensor(light)
        refs = truth.reference_stars(light)
        assert refs.size == truth.n_reference
        assert np.all((refs["x"] > 15) & (refs["x"] < truth.width - 16))
        assert np.all((refs["y"] > 15) & (refs["y"] < truth.height - 16))
        for ref in refs:
            distance = np.hypot(stars["x"] - ref["x"], stars["y"] - ref["y"])
            assert np.sort(distance)[1] > 20.0
        response = truth.flat_response(light.filter)
        background = truth.clean_background(light) * response
        raw = _raw(truth, light.path) - truth.bias_pattern
        for ref in refs:
            x, y = int(round(ref["x"])), int(round(ref["y"]))
            peak = ref["peak_adu"] * response[y, x] + background[y, x]
            assert 3000.0 < peak < 0.6 * 65535
            assert raw[y - 3 : y + 4, x - 3 : x + 4].max() < 0.6 * 65535


def test_neutral_reference_stars_are_neutral_in_truth(truth: NightTruth) -> None:
    per_throughput = {}
    for name in RGB:
        light = truth.lights(name)[0]
        refs = truth.reference_stars(light)
        filt = truth.filters[name]
        scale = filt.star_throughput * light.transmission * light.exposure / truth.sensor.gain
        per_throughput[name] = refs["flux_adu"] / scale
        neutral = refs["teff"] == 6500.0
        assert neutral.sum() >= 2
    neutral = truth.reference_stars(0)["teff"] == 6500.0
    np.testing.assert_allclose(per_throughput["R"][neutral], per_throughput["G"][neutral])
    np.testing.assert_allclose(per_throughput["B"][neutral], per_throughput["G"][neutral])
    cool = truth.reference_stars(0)["teff"] < 5000.0
    assert np.all(per_throughput["R"][cool] > 1.3 * per_throughput["B"][cool])


def _cosmic_rays(truth: NightTruth, light) -> np.ndarray:
    """The light's cosmic-ray deposits (ADU) as calibrated: divided by the flat response."""
    deposits = np.zeros(truth.shape)
    for x, y, adu in light.cosmic_rays:
        deposits[y, x] += adu
    return deposits / truth.flat_response(light.filter)


def _aperture_fluxes(truth: NightTruth, light) -> tuple[np.ndarray, np.ndarray]:
    """Measured and truth flux of the reference stars of ``light`` (ADU, after the flat).

    The truth background and cosmic rays are subtracted from the calibrated light.
    """
    foreground = _calibrated(truth, light) - _cosmic_rays(truth, light)
    image = np.ascontiguousarray(foreground - truth.clean_background(light))
    refs = truth.reference_stars(light)
    radius = 3.0 * light.fwhm
    flux, _, _ = sep.sum_circle(image, refs["x"], refs["y"], radius)
    alpha = light.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / truth.psf_beta) - 1.0))
    enclosed = 1.0 - (1.0 + radius**2 / alpha**2) ** (1.0 - truth.psf_beta)
    return flux / enclosed, refs["flux_adu"]


def test_reference_star_colours_are_measured_in_the_frames(truth: NightTruth) -> None:
    """Aperture flux ratios R/G and B/G of every reference star match the truth within 3 %."""
    measured, expected = {}, {}
    for name in RGB:
        pairs = [_aperture_fluxes(truth, light) for light in truth.lights(name)]
        measured[name] = np.median([m for m, _ in pairs], axis=0)
        expected[name] = np.median([t for _, t in pairs], axis=0)
        assert np.all(np.abs(measured[name] / expected[name] - 1.0) < 0.03), name
    teff = truth.reference_stars(0)["teff"]
    for name in ("R", "B"):
        ratio = (measured[name] / measured["G"]) / (expected[name] / expected["G"])
        assert np.all(np.abs(ratio - 1.0) < 0.03), (name, ratio)
        neutral = (measured[name] / measured["G"])[teff == 6500.0]
        throughput = truth.filters[name].star_throughput / truth.filters["G"].star_throughput
        np.testing.assert_allclose(neutral, throughput, rtol=0.03)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_rgb_night(tmp_path / "a", seed=7, **SMALL)
    b = generate_rgb_night(tmp_path / "b", rng=np.random.default_rng(7), **SMALL)
    c = generate_rgb_night(tmp_path / "c", seed=8, **SMALL)
    files_a = _fits_files(a.root)
    assert [p.relative_to(a.root) for p in files_a] == [
        p.relative_to(b.root) for p in _fits_files(b.root)
    ]
    for path in files_a:
        assert path.read_bytes() == (b.root / path.relative_to(a.root)).read_bytes()
    assert a.seed == 7 and b.seed is None
    first = a.light_frames[0]
    assert not np.array_equal(_raw(a, first.path), _raw(c, c.light_frames[0].path))


def test_truth_round_trips_through_json(truth: NightTruth) -> None:
    loaded = load_truth(truth.root)
    assert loaded.filters == truth.filters and loaded.n_reference == truth.n_reference
    assert loaded.light_frames == truth.light_frames and loaded.nebula == truth.nebula
    assert loaded.flat_frames == truth.flat_frames and loaded.dark_frames == truth.dark_frames
    for name in ("stars", "hot_pixels", "bias_pattern", "dark_current"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(truth, name))
    for light in truth.light_frames[::4]:
        np.testing.assert_array_equal(loaded.stars_in_sensor(light), truth.stars_in_sensor(light))
        np.testing.assert_array_equal(loaded.star_image(light), truth.star_image(light))
    data = json.loads((truth.root / "truth" / "truth.json").read_text())
    assert data["seed"] == 21 and data["n_reference"] == truth.n_reference
    assert data["filters"]["B"]["gradient_turn_deg"] == truth.filters["B"].gradient_turn_deg


def test_older_truth_files_load_with_defaults(tmp_path: Path) -> None:
    night = generate_night(tmp_path, seed=3, width=160, height=128, n_lights_per_filter=4)
    data = json.loads((tmp_path / "truth" / "truth.json").read_text())
    assert "n_reference" not in data
    assert set(data["filters"]["L"]) == {
        "name",
        "exposure",
        "sky_rate",
        "star_throughput",
        "nebula_rate",
        "flat_level",
        "flat_exposure",
    }
    loaded = load_truth(tmp_path)
    assert loaded.filters == night.filters and loaded.n_reference == 0
    assert not loaded.has_star_colours
    assert loaded.stars_in_sensor(0).dtype.names == ("id", "x", "y", "flux_adu", "peak_adu")
    assert loaded.reference_stars(0).size == 0
    np.testing.assert_array_equal(loaded.star_colour("Ha"), np.ones(len(loaded.stars)))


def test_luminance_night(lrgb: NightTruth) -> None:
    assert list(lrgb.filters) == ["L", *RGB]
    assert [lt.filter for lt in lrgb.light_frames] == [f for f in ("L", *RGB) for _ in range(4)]
    assert {lt.exposure for lt in lrgb.lights("L")} == {60.0}
    assert sorted({f.exposure for f in lrgb.dark_frames}) == [60.0, 120.0]
    assert lrgb.filters["L"].wavelength_nm is None
    np.testing.assert_array_equal(lrgb.star_colour("L"), np.ones(len(lrgb.stars)))
    assert all(not (lt.cloudy or lt.blurred or lt.trail) for lt in lrgb.lights("L"))
    for light in lrgb.light_frames:
        refs = lrgb.reference_stars(light)
        assert refs["peak_adu"].max() * lrgb.flat_response(light.filter).max() < 0.55 * 65535
    header = fits.getheader(lrgb.path(lrgb.lights("L")[0].path))
    assert header["FILTER"] == "L" and header["IMAGETYP"] == "LIGHT"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 200}, r"at least 231x151 pixels"),
        ({"height": 140}, r"at least 231x151 pixels"),
        ({"n_lights_per_filter": 0}, "at least 1"),
    ],
)
def test_rejects_unusable_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    settings = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_rgb_night(tmp_path, **settings)


def test_portrait_sensor_holds_the_reference_grid(tmp_path: Path) -> None:
    truth = generate_rgb_night(tmp_path, seed=4, width=160, height=240, n_lights_per_filter=1)
    for light in truth.light_frames:
        assert truth.reference_stars(light).size == truth.n_reference
