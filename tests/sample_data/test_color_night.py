"""Tests of the synthetic one-shot-colour (Bayer CFA) night (``sample_data.color``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from scipy import ndimage

from sample_data import ColorNightTruth, generate_color_night, load_color_truth
from sample_data.color_truth import CHANNELS, cfa_channel_index, mosaic

SMALL = {"width": 200, "height": 160, "n_lights": 2}
FRACTION = {"R": 0.25, "G": 0.5, "B": 0.25}


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> tuple[ColorNightTruth, float]:
    """The default colour night, generated once, with its generation time."""
    outdir = tmp_path_factory.mktemp("color_night")
    start = time.perf_counter()
    truth = generate_color_night(outdir)
    return truth, time.perf_counter() - start


@pytest.fixture(scope="module")
def truth(night: tuple[ColorNightTruth, float]) -> ColorNightTruth:
    return night[0]


def _fits_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".fit", ".fits"))


def _raw(truth: ColorNightTruth, relative: str) -> np.ndarray:
    return fits.getdata(truth.path(relative)).astype(np.float64)


def _stack(truth: ColorNightTruth, frames) -> np.ndarray:
    return np.mean([_raw(truth, f.path) for f in frames], axis=0)


def test_default_night_generates_quickly(night: tuple[ColorNightTruth, float]) -> None:
    assert night[1] < 10.0


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_color_night(tmp_path / "a", seed=7, **SMALL)
    b = generate_color_night(tmp_path / "b", seed=7, **SMALL)
    c = generate_color_night(tmp_path / "c", seed=8, **SMALL)
    files_a = _fits_files(tmp_path / "a")
    assert [p.relative_to(a.root) for p in files_a] == [
        p.relative_to(b.root) for p in _fits_files(tmp_path / "b")
    ]
    for path in files_a:
        assert path.read_bytes() == (b.root / path.relative_to(a.root)).read_bytes()
    assert not np.array_equal(_raw(a, a.light_frames[0].path), _raw(c, c.light_frames[0].path))


def test_passed_generator_gives_same_data_as_seed(tmp_path: Path) -> None:
    a = generate_color_night(tmp_path / "a", seed=11, **SMALL)
    b = generate_color_night(tmp_path / "b", rng=np.random.default_rng(11), **SMALL)
    assert b.seed is None and a.seed == 11
    for light_a, light_b in zip(a.light_frames, b.light_frames, strict=True):
        assert np.array_equal(_raw(a, light_a.path), _raw(b, light_b.path))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_lights": 0}, "at least 1"),
        ({"width": 100}, "at least 128x128"),
        ({"pattern": "RGBG"}, "unknown Bayer pattern"),
    ],
)
def test_rejects_unusable_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_color_night(tmp_path, **kwargs)


@pytest.mark.parametrize(
    ("pattern", "cell"),
    [("RGGB", [[0, 1], [1, 2]]), ("BGGR", [[2, 1], [1, 0]]), ("GRBG", [[1, 0], [2, 1]])],
)
def test_mosaic_samples_the_pattern_row_major(pattern: str, cell: list) -> None:
    index = cfa_channel_index(pattern, (4, 6))
    assert np.array_equal(index, np.tile(cell, (2, 3)))
    rgb = np.stack([np.full((4, 6), v) for v in (10.0, 20.0, 30.0)])
    assert np.array_equal(mosaic(rgb, pattern), 10.0 * (index + 1))


def test_file_layout_and_counts(truth: ColorNightTruth) -> None:
    root = truth.root
    assert len(list((root / "LIGHT").glob("2026-11-27_*_120.00s_*.fits"))) == 10
    assert len(list((root / "FLAT").glob("*_1.00s_*.fits"))) == 8
    assert len(list((root / "DARK").glob("*_120.00s_*.fits"))) == 8
    assert len(list((root / "BIAS").glob("*_0.00s_*.fits"))) == 12
    assert len(_fits_files(root)) == 10 + 8 + 8 + 12
    assert _fits_files(root / "truth") == []
    every = truth.light_frames + truth.bias_frames + truth.dark_frames + truth.flat_frames
    assert sorted(root / f.path for f in every) == _fits_files(root)
    names = {p.name for p in (root / "truth").iterdir()}
    assert {"truth.json", "stars.npy", "hot_pixels.npy", "bias_pattern.npy"} <= names
    assert {f"flat_response_{c}.npy" for c in CHANNELS} <= names


def test_headers(truth: ColorNightTruth) -> None:
    kinds = {"light": "LIGHT", "flat": "FLAT", "dark": "DARK", "bias": "BIAS"}
    groups = {
        "light": truth.light_frames,
        "flat": truth.flat_frames,
        "dark": truth.dark_frames,
        "bias": truth.bias_frames,
    }
    for kind, frames in groups.items():
        for frame in frames:
            with fits.open(truth.path(frame.path)) as hdul:
                header, data = hdul[0].header, hdul[0].data
                assert header["BITPIX"] == 16 and header["BZERO"] == 32768
                assert data.dtype == np.uint16 and data.shape == (480, 640)
            assert header["IMAGETYP"] == kinds[kind]
            assert header["BAYERPAT"] == "RGGB"
            assert header["XBAYROFF"] == 0 and header["YBAYROFF"] == 0
            assert header["ROWORDER"] == "TOP-DOWN"
            assert header["INSTRUME"] == "ZWO ASI2600MC Pro"
            assert "FILTER" not in header
            assert header["EXPTIME"] == header["EXPOSURE"] == frame.exposure
            assert header["DATE-OBS"] == frame.date_obs
            assert abs(header["CCD-TEMP"] + 10.0) <= 0.3 + 1e-9
    assert {f.exposure for f in truth.light_frames} == {120.0}
    assert {f.exposure for f in truth.dark_frames} == {120.0}
    assert {f.exposure for f in truth.flat_frames} == {1.0}


def test_dates_follow_the_session(truth: ColorNightTruth) -> None:
    lights = [lt.date_obs for lt in truth.light_frames]
    assert lights == sorted(lights) and len(set(lights)) == len(lights)
    assert max(f.date_obs for f in truth.flat_frames) < lights[0]
    assert lights[-1] < min(f.date_obs for f in truth.dark_frames + truth.bias_frames)


def test_truth_round_trips_through_json(truth: ColorNightTruth) -> None:
    loaded = load_color_truth(truth.root)
    assert loaded.light_frames == truth.light_frames
    for name in ("flat_frames", "dark_frames", "bias_frames", "nebula", "sensor", "pattern"):
        assert getattr(loaded, name) == getattr(truth, name)
    for name in ("qe", "sky_rate", "nebula_rate", "flat_level"):
        assert getattr(loaded, name) == getattr(truth, name)
    for name in ("stars", "hot_pixels", "bias_pattern", "dark_current"):
        assert np.array_equal(getattr(loaded, name), getattr(truth, name))
    for channel in CHANNELS:
        assert np.array_equal(loaded.flat_response(channel), truth.flat_response(channel))
    assert np.array_equal(loaded.star_channel_flux_adu(3), truth.star_channel_flux_adu(3))
    data = json.loads((truth.root / "truth" / "truth.json").read_text())
    assert data["seed"] == 20261127 and data["pattern"] == "RGGB"


def test_dithers_are_small_rotations_and_shifts(truth: ColorNightTruth) -> None:
    for lt in truth.lights():
        m = lt.sky_to_sensor
        assert np.allclose(m[:2, :2] @ m[:2, :2].T, np.eye(2))
        assert abs(lt.rotation_deg) <= 0.3 + 1e-9
        centre = m @ np.array([(truth.width - 1) / 2, (truth.height - 1) / 2, 1.0])
        assert np.all(np.abs(centre[:2] - [(truth.width - 1) / 2, (truth.height - 1) / 2]) <= 10)
    i, j = truth.lights()[0], truth.lights()[-1]
    stars_i, stars_j = truth.stars_in_sensor(i), truth.stars_in_sensor(j)
    common, ai, aj = np.intersect1d(stars_i["id"], stars_j["id"], return_indices=True)
    assert common.size > 150
    xy = truth.sub_to_sub_matrix(i, j) @ np.vstack(
        [stars_i["x"][ai], stars_i["y"][ai], np.ones(common.size)]
    )
    assert np.allclose(xy[0], stars_j["x"][aj]) and np.allclose(xy[1], stars_j["y"][aj])


def test_stars_have_colours_and_qe(truth: ColorNightTruth) -> None:
    rates = truth.stars[:, 2:5]
    red, blue = rates[:, 0] / rates[:, 1], rates[:, 2] / rates[:, 1]
    assert red.min() >= 0.5 and red.max() <= 2.0 and blue.min() >= 0.5 and blue.max() <= 2.0
    assert (red > 1.2).sum() > 20 and (blue > 1.1).sum() > 20
    # Cooler stars are redder.
    assert np.corrcoef(truth.stars[:, 5], red)[0, 1] < -0.8
    light = truth.lights()[0]
    flux = truth.star_channel_flux_adu(light)
    scale = light.transmission * light.exposure / truth.sensor.gain
    assert np.allclose(flux, rates * np.array([0.75, 1.0, 0.85]) * scale)
    stars = truth.stars_in_sensor(light)
    assert 200 <= stars.size <= 320
    assert np.allclose(stars["flux_r"], flux[stars["id"], 0])
    assert stars["peak_adu"][~stars["reference"]].max() < 30000
    for lt in truth.lights():
        assert _raw(truth, lt.path).max() < 65535


def _calibrated_residual(truth: ColorNightTruth, light) -> tuple[np.ndarray, np.ndarray]:
    """Truth-calibrated light minus its truth background mosaic, and the pixel variance."""
    raw = _raw(truth, light.path)
    response = truth.cfa_flat_response()
    dark = truth.dark_current * (light.exposure / truth.sensor.gain)
    image = (raw - truth.bias_pattern - dark) / response
    image -= truth.mosaic(truth.clean_background_rgb(light))
    gain, read_noise = truth.sensor.gain, truth.sensor.read_noise
    variance = (truth.expected_raw(light) - truth.bias_pattern) / gain + (read_noise / gain) ** 2
    return image, variance / response**2


def _clean_references(truth: ColorNightTruth, light) -> np.ndarray:
    """Reference stars of ``light`` with no cosmic ray or hot pixel within 16 px."""
    stars = truth.reference_stars(light)
    defects = np.vstack([truth.hot_pixels[:, :2], np.array(light.cosmic_rays)[:, :2]])
    distance = np.hypot(
        defects[None, :, 0] - stars["x"][:, None], defects[None, :, 1] - stars["y"][:, None]
    )
    return stars[distance.min(axis=1) >= 16]


def test_reference_stars_are_bright_isolated_and_coloured(truth: ColorNightTruth) -> None:
    assert truth.n_reference == 6
    for light in truth.lights():
        stars = truth.stars_in_sensor(light)
        refs = stars[stars["reference"]]
        assert refs.size == 6
        assert np.all((refs["x"] > 30) & (refs["x"] < truth.width - 31))
        assert np.all((refs["y"] > 30) & (refs["y"] < truth.height - 31))
        for ref in refs:
            distance = np.hypot(stars["x"] - ref["x"], stars["y"] - ref["y"])
            assert np.sort(distance)[1] > 30
        assert 20000 < refs["peak_adu"].min() and refs["peak_adu"].max() < 50000
    refs = truth.reference_stars(0)
    red = refs["flux_r"] / refs["flux_g"] / 0.75
    assert red.max() > 1.5 and red.min() < 0.85


def test_mosaic_holds_each_channels_share_of_star_flux(truth: ColorNightTruth) -> None:
    light = truth.lights()[0]
    image, variance = _calibrated_residual(truth, light)
    stars = _clean_references(truth, light)
    assert stars.size >= 3
    radius = 4.0 * light.fwhm
    alpha = light.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / truth.psf_beta) - 1.0))
    enclosed = 1.0 - (1.0 + radius**2 / alpha**2) ** (1.0 - truth.psf_beta)
    yy, xx = np.indices(truth.shape)
    index = truth.channel_index()
    for star in stars:
        aperture = np.hypot(xx - star["x"], yy - star["y"]) <= radius
        for k, channel in enumerate(CHANNELS):
            sites = aperture & (index == k)
            measured = image[sites].sum()
            sigma = np.sqrt(variance[sites].sum())
            expected = star[f"flux_{channel.lower()}"] * FRACTION[channel] * enclosed
            assert expected > 100 * sigma
            assert abs(measured - expected) < 5 * sigma + 0.01 * expected, (channel, star)


def test_star_colour_survives_in_the_mosaic(truth: ColorNightTruth) -> None:
    """Per-CFA-colour sums of bright stars give the truth R/G and B/G within 2 %."""
    light = truth.lights()[1]
    image, _ = _calibrated_residual(truth, light)
    index = truth.channel_index()
    yy, xx = np.indices(truth.shape)
    stars = _clean_references(truth, light)
    assert stars.size >= 3
    for star in stars:
        aperture = np.hypot(xx - star["x"], yy - star["y"]) <= 4.0 * light.fwhm
        sums = [image[aperture & (index == k)].sum() / FRACTION[c] for k, c in enumerate(CHANNELS)]
        assert abs(sums[0] / sums[1] / (star["flux_r"] / star["flux_g"]) - 1) < 0.02
        assert abs(sums[2] / sums[1] / (star["flux_b"] / star["flux_g"]) - 1) < 0.02


def test_sky_background_is_coloured(truth: ColorNightTruth) -> None:
    light = truth.lights()[0]
    image, _ = _calibrated_residual(truth, light)
    assert abs(np.median(image)) < 2.0
    ratios = np.array(light.sky_adu) / light.sky_adu[1]
    assert np.allclose(ratios, [1.3, 1.0, 0.8])
    background = truth.clean_background_rgb(light)
    assert background[0].mean() > background[1].mean() > background[2].mean()


def test_flats_carry_the_illumination_colour(truth: ColorNightTruth) -> None:
    flat = _stack(truth, truth.flat_frames) - truth.bias_pattern
    index = truth.channel_index()
    medians = [np.median(flat[index == k]) for k in range(3)]
    assert 24000 < medians[1] < 26000
    assert abs(medians[0] / medians[1] - 0.7) < 0.01
    assert abs(medians[2] / medians[1] - 0.5) < 0.01
    # Per-channel median normalisation recovers the response; a global one does not.
    per_channel = flat.copy()
    for k in range(3):
        per_channel[index == k] /= medians[k]
    ratio = per_channel / truth.cfa_flat_response()
    assert abs(np.median(ratio) - 1.0) < 0.005 and np.std(ratio) < 0.01
    global_ratio = flat / np.median(flat) / truth.cfa_flat_response()
    assert abs(np.median(global_ratio[index == 2]) / np.median(global_ratio[index == 1]) - 1) > 0.3
    for channel in CHANNELS:
        response = truth.flat_response(channel)
        assert abs(np.median(response[truth.channel_mask(channel)]) - 1.0) < 1e-6
        assert 0.6 < response.min() / response.max() < 0.85


def test_darks_carry_hot_pixels_at_truth_positions(truth: ColorNightTruth) -> None:
    gain = truth.sensor.gain
    dark = _stack(truth, truth.dark_frames) - truth.bias_pattern
    found = np.argwhere(dark > 100.0)
    expected = {(int(y), int(x)) for x, y, _ in truth.hot_pixels}
    assert {(int(y), int(x)) for y, x in found} == expected
    for x, y, rate in truth.hot_pixels:
        signal = dark[int(y), int(x)]
        want = rate * truth.exposure / gain
        assert abs(signal - want) < 5 * np.sqrt(want * gain / len(truth.dark_frames)) / gain + 2
    bias = _stack(truth, truth.bias_frames)
    assert np.corrcoef(bias.mean(axis=0), truth.bias_pattern[0])[0, 1] > 0.99


def test_cosmic_rays_and_noise_model(truth: ColorNightTruth) -> None:
    light = truth.lights()[2]
    assert 5 <= len(light.cosmic_rays) <= 80
    expected = truth.expected_raw(light)
    raw = _raw(truth, light.path)
    hits = np.array(light.cosmic_rays)
    rows, cols = hits[:, 1].astype(int), hits[:, 0].astype(int)
    assert np.median((raw[rows, cols] - expected[rows, cols]) / hits[:, 2]) > 0.9
    mask = np.ones(raw.shape, bool)
    mask[rows, cols] = False
    gain = truth.sensor.gain
    variance = (expected - truth.bias_pattern) / gain + (truth.sensor.read_noise / gain) ** 2
    z = ((raw - expected) / np.sqrt(variance))[mask]
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02


def test_other_pattern_moves_the_channels(tmp_path: Path) -> None:
    truth = generate_color_night(tmp_path, seed=3, pattern="GBRG", **SMALL)
    assert fits.getheader(truth.path(truth.light_frames[0].path))["BAYERPAT"] == "GBRG"
    flat = _stack(truth, truth.flat_frames) - truth.bias_pattern
    cell = [[np.median(flat[dy::2, dx::2]) for dx in (0, 1)] for dy in (0, 1)]
    green = (cell[0][0] + cell[1][1]) / 2
    assert abs(cell[0][1] / green - 0.5) < 0.02  # B at [0, 1]
    assert abs(cell[1][0] / green - 0.7) < 0.02  # R at [1, 0]
    assert truth.channel_mask("R")[1, 0] and truth.channel_mask("B")[0, 1]


def test_calibration_and_debayer_recover_truth_colours(truth: ColorNightTruth) -> None:
    """Masters from the frames, per-channel flat, bilinear debayer: R/G and B/G within 2 %."""

    def master(frames) -> np.ndarray:
        return np.median([_raw(truth, f.path) for f in frames], axis=0)

    index = truth.channel_index()
    flat = master(truth.flat_frames) - master(truth.bias_frames)
    for k in range(3):
        flat[index == k] /= np.median(flat[index == k])
    dark = master(truth.dark_frames)
    kernels = {
        "R": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0,
        "G": np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4.0,
        "B": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0,
    }
    for light in truth.lights()[:3]:
        calibrated = (_raw(truth, light.path) - dark) / flat
        stars = _clean_references(truth, light)
        assert stars.size >= 3
        radius = 3.0 * light.fwhm
        alpha = light.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / truth.psf_beta) - 1.0))
        enclosed = 1.0 - (1.0 + radius**2 / alpha**2) ** (1.0 - truth.psf_beta)
        flux = {}
        for k, channel in enumerate(CHANNELS):
            plane = ndimage.convolve(np.where(index == k, calibrated, 0.0), kernels[channel])
            flux[channel], _, _ = sep.sum_circle(
                np.ascontiguousarray(plane),
                stars["x"],
                stars["y"],
                radius,
                bkgann=(4.0 * light.fwhm, 6.0 * light.fwhm),
            )
        assert np.all(np.abs(flux["G"] / enclosed / stars["flux_g"] - 1) < 0.02)
        red = flux["R"] / flux["G"] / (stars["flux_r"] / stars["flux_g"])
        blue = flux["B"] / flux["G"] / (stars["flux_b"] / stars["flux_g"])
        assert np.all(np.abs(red - 1) < 0.02) and np.all(np.abs(blue - 1) < 0.02)
