"""Tests of the synthetic sample-night generator (``sample_data``)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits

from sample_data import NightTruth, generate_night, load_truth

SMALL = {"width": 200, "height": 160, "n_lights_per_filter": 4}


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> tuple[NightTruth, float]:
    """The default night, generated once, with its generation time."""
    outdir = tmp_path_factory.mktemp("night")
    start = time.perf_counter()
    truth = generate_night(outdir)
    return truth, time.perf_counter() - start


@pytest.fixture(scope="module")
def truth(night: tuple[NightTruth, float]) -> NightTruth:
    return night[0]


def _fits_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".fit", ".fits"))


def _raw(truth: NightTruth, relative: str) -> np.ndarray:
    return fits.getdata(truth.path(relative)).astype(np.float64)


def _calibrated(truth: NightTruth, light) -> np.ndarray:
    """Light minus truth bias and dark, divided by the truth flat response."""
    raw = _raw(truth, light.path)
    dark = truth.dark_current * (light.exposure / truth.sensor.gain)
    return (raw - truth.bias_pattern - dark) / truth.flat_response(light.filter)


def test_default_night_generates_quickly(night: tuple[NightTruth, float]) -> None:
    assert night[1] < 10.0


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_night(tmp_path / "a", seed=7, **SMALL)
    b = generate_night(tmp_path / "b", seed=7, **SMALL)
    c = generate_night(tmp_path / "c", seed=8, **SMALL)
    files_a = _fits_files(tmp_path / "a")
    assert [p.relative_to(a.root) for p in files_a] == [
        p.relative_to(b.root) for p in _fits_files(tmp_path / "b")
    ]
    for path in files_a:
        assert path.read_bytes() == (b.root / path.relative_to(a.root)).read_bytes()
    first = a.light_frames[0]
    assert not np.array_equal(_raw(a, first.path), _raw(c, c.light_frames[0].path))


def test_passed_generator_gives_same_data_as_seed(tmp_path: Path) -> None:
    a = generate_night(tmp_path / "a", seed=11, **SMALL)
    b = generate_night(tmp_path / "b", rng=np.random.default_rng(11), **SMALL)
    assert b.seed is None and a.seed == 11
    for light_a, light_b in zip(a.light_frames, b.light_frames, strict=True):
        assert np.array_equal(_raw(a, light_a.path), _raw(b, light_b.path))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_lights_per_filter": 3}, "at least 4"), ({"width": 100}, "at least 128x128")],
)
def test_rejects_unusable_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_night(tmp_path, **kwargs)


def test_file_layout_and_counts(truth: NightTruth) -> None:
    root = truth.root
    assert len(list((root / "LIGHT").glob("*_L_*_60.00s_*.fits"))) == 10
    assert len(list((root / "Lights").glob("NGC7000_Light_Ha_180s_Bin1_*C_*.fit"))) == 10
    assert len(list((root / "Bias").glob("Bias_*.fit"))) == 12
    assert len(list((root / "Darks").glob("Dark_60s_*.fit"))) == 8
    assert len(list((root / "Darks").glob("Dark_300s_*.fit"))) == 8
    assert len(list((root / "Flats" / "L").glob("Flat_L_*.fits"))) == 8
    assert len(list((root / "Flats" / "Ha").glob("Flat_Ha_*.fits"))) == 8
    assert len(_fits_files(root)) == 20 + 12 + 16 + 16
    assert _fits_files(root / "truth") == []
    every = truth.light_frames + truth.bias_frames + truth.dark_frames + truth.flat_frames
    assert sorted(root / f.path for f in every) == _fits_files(root)


def test_every_frame_is_uint16_with_bzero(truth: NightTruth) -> None:
    for path in _fits_files(truth.root):
        with fits.open(path) as hdul:
            header = hdul[0].header
            assert header["BITPIX"] == 16 and header["BZERO"] == 32768
            assert hdul[0].data.dtype == np.uint16
            assert hdul[0].data.shape == (480, 640)


COMMON = (
    "DATE-OBS",
    "XBINNING",
    "YBINNING",
    "GAIN",
    "OFFSET",
    "CCD-TEMP",
    "SET-TEMP",
    "INSTRUME",
    "TELESCOP",
    "FOCALLEN",
    "XPIXSZ",
)


@pytest.mark.parametrize(
    ("group", "imagetyp", "exposure_keys", "extra"),
    [
        ("L", "LIGHT", ("EXPOSURE", "EXPTIME"), ("FILTER", "OBJECT")),
        ("Ha", "Light Frame", ("EXPTIME",), ("FILTER", "OBJECT")),
        ("bias", "Bias Frame", ("EXPTIME",), ()),
        ("dark", "Dark Frame", ("EXPTIME",), ()),
        ("flat", "Flat Field", ("EXPTIME",), ("FILTER",)),
    ],
)
def test_headers_per_frame_type(
    truth: NightTruth, group: str, imagetyp: str, exposure_keys: tuple, extra: tuple
) -> None:
    frames = {
        "L": truth.lights("L"),
        "Ha": truth.lights("Ha"),
        "bias": truth.bias_frames,
        "dark": truth.dark_frames,
        "flat": truth.flat_frames,
    }[group]
    for frame in frames:
        header = fits.getheader(truth.path(frame.path))
        assert header["IMAGETYP"] == imagetyp
        for key in exposure_keys:
            assert header[key] == frame.exposure
        for key in COMMON + extra:
            assert key in header, key
        assert header["GAIN"] == 139 and header["OFFSET"] == 21 and header["SET-TEMP"] == -10
        assert abs(header["CCD-TEMP"] + 10.0) <= 0.3 + 1e-9
        assert header["INSTRUME"] == "ZWO ASI1600MM Pro"
        assert header["DATE-OBS"] == frame.date_obs
        if "FILTER" in extra:
            assert header["FILTER"] == frame.filter
        if "OBJECT" in extra:
            assert header["OBJECT"] == "NGC 7000"
    if group == "Ha":
        assert "EXPOSURE" not in fits.getheader(truth.path(frames[0].path))


def test_dates_follow_the_session(truth: NightTruth) -> None:
    lights = [lt.date_obs for lt in truth.light_frames]
    assert lights == sorted(lights) and len(set(lights)) == len(lights)
    assert max(f.date_obs for f in truth.flat_frames) < lights[0]
    assert lights[-1] < min(f.date_obs for f in truth.dark_frames + truth.bias_frames)
    assert truth.lights("L")[0].path.startswith("LIGHT/" + lights[0][:10])


def test_exposures_need_scaled_dark_for_ha(truth: NightTruth) -> None:
    assert {f.exposure for f in truth.dark_frames} == {60.0, 300.0}
    assert {f.exposure for f in truth.bias_frames} == {0.0}
    assert {lt.exposure for lt in truth.lights("Ha")} == {180.0}
    assert {lt.exposure for lt in truth.lights("L")} == {60.0}


def test_truth_round_trips_through_json(truth: NightTruth) -> None:
    loaded = load_truth(truth.root)
    assert loaded.light_frames == truth.light_frames
    assert loaded.flat_frames == truth.flat_frames and loaded.nebula == truth.nebula
    assert loaded.sensor == truth.sensor and loaded.filters == truth.filters
    for name in ("stars", "hot_pixels", "bias_pattern", "dark_current"):
        assert np.array_equal(getattr(loaded, name), getattr(truth, name))
    for name, response in truth.flat_responses.items():
        assert np.array_equal(loaded.flat_response(name), response)
    data = json.loads((truth.root / "truth" / "truth.json").read_text())
    assert data["seed"] == 20261126 and data["version"]


def test_special_subs(truth: NightTruth) -> None:
    lights = truth.lights("L")
    cloudy = [lt for lt in lights if lt.cloudy]
    blurred = [lt for lt in lights if lt.blurred]
    trailed = [lt for lt in lights if lt.trail is not None]
    assert len(cloudy) == len(blurred) == len(trailed) == 1
    assert len({cloudy[0].index, blurred[0].index, trailed[0].index, lights[0].index}) == 4
    assert not any(lt.cloudy or lt.blurred or lt.trail for lt in truth.lights("Ha"))
    clear = [np.median(_raw(truth, lt.path)) for lt in lights if not lt.cloudy]
    bias = truth.sensor.bias_level
    assert (np.median(_raw(truth, cloudy[0].path)) - bias) / (np.median(clear) - bias) > 1.2
    assert blurred[0].fwhm > 2.2 * np.median([lt.fwhm for lt in lights])


def test_meridian_flip_rotates_later_half(truth: NightTruth) -> None:
    for name in ("L", "Ha"):
        lights = truth.lights(name)
        assert [lt.flipped for lt in lights] == [False] * 5 + [True] * 5
        for lt in lights:
            m = lt.sky_to_sensor
            assert np.allclose(m[:2, :2] @ m[:2, :2].T, np.eye(2))
            expected = 180.0 if lt.flipped else 0.0
            assert abs(abs(lt.rotation_deg) - expected) <= 0.3 + 1e-9
        rel = truth.sub_to_sub_matrix(lights[0], lights[-1])
        assert rel[0, 0] < -0.99 and rel[1, 1] < -0.99


def test_sub_to_sub_matrix_maps_star_positions(truth: NightTruth) -> None:
    i, j = truth.lights("L")[0], truth.lights("Ha")[-1]
    stars_i, stars_j = truth.stars_in_sensor(i), truth.stars_in_sensor(j)
    common, ai, aj = np.intersect1d(stars_i["id"], stars_j["id"], return_indices=True)
    assert common.size > 150
    m = truth.sub_to_sub_matrix(i, j)
    xy = m @ np.vstack([stars_i["x"][ai], stars_i["y"][ai], np.ones(common.size)])
    assert np.allclose(xy[0], stars_j["x"][aj]) and np.allclose(xy[1], stars_j["y"][aj])


def test_star_counts_and_no_saturation(truth: NightTruth) -> None:
    for lt in truth.light_frames:
        stars = truth.stars_in_sensor(lt)
        assert 200 <= stars.size <= 300
        assert stars["peak_adu"].max() < 35000
        assert _raw(truth, lt.path).max() < 65535


def _bright_isolated(truth: NightTruth, light, min_peak: float, n: int = 5) -> np.ndarray:
    """Up to ``n`` brightest stars above ``min_peak`` with no neighbour, defect or edge nearby."""
    stars = truth.stars_in_sensor(light)
    defects = np.vstack([truth.hot_pixels[:, :2], np.array(light.cosmic_rays)[:, :2]])
    picked = []
    for star in stars[np.argsort(-stars["flux_adu"])]:
        if star["peak_adu"] < min_peak or len(picked) == n:
            break
        distance = np.hypot(stars["x"] - star["x"], stars["y"] - star["y"])
        ratio = stars["flux_adu"] / star["flux_adu"]
        crowded = (distance > 0) & (
            ((distance < 12) & (ratio > 0.02)) | (distance < 20) & (ratio > 0.5)
        )
        near_defect = np.hypot(defects[:, 0] - star["x"], defects[:, 1] - star["y"]).min() < 10
        inside = 25 < star["x"] < truth.width - 25 and 25 < star["y"] < truth.height - 25
        if inside and not crowded.any() and not near_defect:
            picked.append(star)
    return np.array(picked, dtype=stars.dtype)


@pytest.mark.parametrize("which", [("L", 0), ("Ha", 0), ("L", -1), ("Ha", -1)])
def test_bright_stars_sit_at_truth_positions(truth: NightTruth, which: tuple) -> None:
    clear = [lt for lt in truth.lights(which[0]) if not (lt.cloudy or lt.blurred or lt.trail)]
    light = clear[which[1]]
    assert light.flipped == (which[1] == -1)
    background = truth.clean_background(light)
    image = np.ascontiguousarray(_calibrated(truth, light) - background)
    gain, read_noise = truth.sensor.gain, truth.sensor.read_noise
    error = np.sqrt(background / gain + (read_noise / gain) ** 2)
    stars = _bright_isolated(truth, light, min_peak=60.0 * float(np.median(error)))
    assert stars.size >= 1
    sigma = np.full(stars.size, light.fwhm / 2.3548 * 2.0)
    x, y, flags = sep.winpos(image, stars["x"], stars["y"], sigma)
    assert not flags.any()
    assert np.hypot(x - stars["x"], y - stars["y"]).max() < 0.1
    radius = 3.0 * light.fwhm
    flux, flux_err, _ = sep.sum_circle(image, stars["x"], stars["y"], radius, err=error)
    alpha = light.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / truth.psf_beta) - 1.0))
    enclosed = 1.0 - (1.0 + radius**2 / alpha**2) ** (1.0 - truth.psf_beta)
    expected = stars["flux_adu"] * enclosed
    assert np.all(np.abs(flux - expected) < 5.0 * flux_err + 0.01 * expected)


def test_hot_pixels_are_where_truth_says(truth: NightTruth) -> None:
    gain = truth.sensor.gain
    strongest = truth.hot_pixels[:10]
    for light in truth.light_frames:
        raw = _raw(truth, light.path)
        sky = truth.clean_sky(light) * truth.flat_response(light.filter)
        cr = {(x, y) for x, y, _ in light.cosmic_rays}
        for x, y, rate in strongest:
            x, y = int(x), int(y)
            if (x, y) in cr:
                continue
            dark = raw[y, x] - truth.bias_pattern[y, x] - sky[y, x]
            expected = rate * light.exposure / gain
            noise = np.sqrt(rate * light.exposure + sky[y, x] * gain + 16.0) / gain
            assert abs(dark - expected) < 5 * noise + 1.0


def test_darks_scale_with_exposure(truth: NightTruth) -> None:
    hot = truth.hot_pixels[0]
    x, y = int(hot[0]), int(hot[1])
    for frame in truth.dark_frames + truth.bias_frames:
        raw = _raw(truth, frame.path)
        signal = raw[y, x] - truth.bias_pattern[y, x]
        expected = hot[2] * frame.exposure / truth.sensor.gain
        assert abs(signal - expected) < 5 * np.sqrt(expected * truth.sensor.gain + 16) + 1
        dark = truth.dark_current * (frame.exposure / truth.sensor.gain)
        assert abs(np.median(raw - truth.bias_pattern - dark)) < 1.0


def test_bias_has_fixed_column_pattern(truth: NightTruth) -> None:
    stack = np.mean([_raw(truth, f.path) for f in truth.bias_frames], axis=0)
    columns = stack.mean(axis=0) - truth.sensor.bias_level
    expected = truth.bias_pattern[0] - truth.sensor.bias_level
    assert np.std(expected) > 1.0
    assert np.corrcoef(columns, expected)[0, 1] > 0.99


def test_flats_follow_the_response(truth: NightTruth) -> None:
    for name in ("L", "Ha"):
        frames = [f for f in truth.flat_frames if f.filter == name]
        stack = np.mean([_raw(truth, f.path) for f in frames], axis=0) - truth.bias_pattern
        assert 20000 < stack.mean() < 30000
        ratio = stack / stack.mean() / truth.flat_response(name)
        assert abs(np.median(ratio) - 1.0) < 0.01 and np.std(ratio) < 0.01
        response = truth.flat_response(name)
        assert 0.65 < response.min() / response.max() < 0.8


def test_trail_sub_has_bright_line(truth: NightTruth) -> None:
    trailed = next(lt for lt in truth.lights("L") if lt.trail is not None)
    other = truth.lights("L")[0]
    x0, y0, x1, y1 = trailed.trail.endpoints
    for x, y in ((x0, y0), (x1, y1)):
        assert min(x, truth.width - 1 - x, y, truth.height - 1 - y) < 1e-6
    t = np.linspace(0.05, 0.95, 200)
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    length = np.hypot(x1 - x0, y1 - y0)
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length

    def contrast(light) -> float:
        raw = _raw(truth, light.path)

        def sample(offset: float) -> np.ndarray:
            cols = np.clip(np.rint(xs + offset * nx).astype(int), 0, truth.width - 1)
            rows = np.clip(np.rint(ys + offset * ny).astype(int), 0, truth.height - 1)
            return raw[rows, cols]

        return float(np.median(sample(0.0) - 0.5 * (sample(8.0) + sample(-8.0))))

    assert 0.6 * trailed.trail.amplitude < contrast(trailed) < 1.2 * trailed.trail.amplitude
    assert abs(contrast(other)) < 50


def test_cosmic_rays_are_in_every_light(truth: NightTruth) -> None:
    for light in truth.light_frames:
        assert 5 <= len(light.cosmic_rays) <= 80
        raw = _raw(truth, light.path)
        expected = truth.expected_raw(light)
        hits = np.array(light.cosmic_rays)
        rows, cols = hits[:, 1].astype(int), hits[:, 0].astype(int)
        excess = raw[rows, cols] - expected[rows, cols]
        assert np.median(excess / hits[:, 2]) > 0.9


def test_noise_model_matches_expected_raw(truth: NightTruth) -> None:
    light = truth.lights("Ha")[0]
    expected = truth.expected_raw(light)
    raw = _raw(truth, light.path)
    mask = np.ones(raw.shape, bool)
    for x, y, _ in light.cosmic_rays:
        mask[y, x] = False
    gain = truth.sensor.gain
    variance = (expected - truth.bias_pattern) / gain + (truth.sensor.read_noise / gain) ** 2
    z = ((raw - expected) / np.sqrt(variance))[mask]
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02


def test_default_gradient_is_the_fixed_golden_night(tmp_path: Path) -> None:
    """Values recorded before the ``gradient`` option existed: the fixed path is unchanged."""
    truth = generate_night(tmp_path, seed=7, **SMALL)
    golden = [
        (0.020015360844985067, 0.9938032306182052),
        (0.022445007680084644, 0.8121692992161789),
        (0.01780624970290666, 0.9932777257743994),
    ]
    got = [(lt.sky_gradient, lt.sky_gradient_angle) for lt in truth.light_frames[:3]]
    np.testing.assert_allclose(got, golden, rtol=1e-12)


def test_explicit_fixed_gradient_equals_default(tmp_path: Path) -> None:
    a = generate_night(tmp_path / "a", seed=3, **SMALL)
    b = generate_night(tmp_path / "b", seed=3, gradient="fixed", gradient_amplitude=0.02, **SMALL)
    assert a.light_frames == b.light_frames
    for light in a.light_frames:
        assert a.path(light.path).read_bytes() == b.path(light.path).read_bytes()


@pytest.fixture(scope="module")
def fixed_and_rotating(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[NightTruth, NightTruth]:
    """Two small nights from one seed that differ only by the gradient mode."""
    root = tmp_path_factory.mktemp("gradients")
    fixed = generate_night(root / "fixed", seed=5, **SMALL)
    rotating = generate_night(
        root / "rotating", seed=5, gradient="rotating", gradient_amplitude=0.05, **SMALL
    )
    return fixed, rotating


def test_rotating_gradient_turns_evenly_per_filter(
    fixed_and_rotating: tuple[NightTruth, NightTruth],
) -> None:
    rotating = fixed_and_rotating[1]
    for name in rotating.filters:
        lights = sorted(rotating.lights(name), key=lambda lt: lt.filter_index)
        n = len(lights)
        assert [lt.filter_index for lt in lights] == list(range(n))
        assert all(lt.sky_gradient == 0.05 for lt in lights)
        # on the sky: the sensor turns by 180 degrees at the meridian flip
        angles = np.array([lt.sky_gradient_angle - np.pi * lt.flipped for lt in lights])
        np.testing.assert_allclose(
            np.mod(angles, 2 * np.pi), 2 * np.pi * np.arange(n) / n, atol=1e-12
        )
        vectors = np.column_stack([np.cos(angles), np.sin(angles)])
        np.testing.assert_allclose(vectors.sum(axis=0), 0.0, atol=1e-12)


def test_rotating_gradient_changes_only_the_background(
    fixed_and_rotating: tuple[NightTruth, NightTruth],
) -> None:
    fixed, rotating = fixed_and_rotating
    np.testing.assert_array_equal(fixed.stars, rotating.stars)
    np.testing.assert_array_equal(fixed.hot_pixels, rotating.hot_pixels)
    for a, b in zip(fixed.light_frames, rotating.light_frames, strict=True):
        same_sky = dataclasses.replace(
            b, sky_gradient=a.sky_gradient, sky_gradient_angle=a.sky_gradient_angle
        )
        assert same_sky == a
    light_f, light_r = fixed.lights("L")[1], rotating.lights("L")[1]
    np.testing.assert_array_equal(fixed.star_image(light_f), rotating.star_image(light_r))
    assert not np.allclose(fixed.clean_background(light_f), rotating.clean_background(light_r))
    # The written files differ by the expected background tilt and by noise only.
    observed = _raw(rotating, light_r.path) - _raw(fixed, light_f.path)
    expected = rotating.expected_raw(light_r) - fixed.expected_raw(light_f)
    y, x = np.indices(observed.shape)
    design = np.column_stack([np.ones(x.size), x.ravel(), y.ravel()])
    fit_observed = np.linalg.lstsq(design, observed.ravel(), rcond=None)[0]
    fit_expected = np.linalg.lstsq(design, expected.ravel(), rcond=None)[0]
    span = np.array([1.0, observed.shape[1], observed.shape[0]])
    tilt = np.abs(fit_expected[1:] * span[1:]).max()
    assert tilt > 10.0
    np.testing.assert_allclose(fit_observed * span, fit_expected * span, atol=0.05 * tilt)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gradient": "spinning"}, r"gradient must be one of 'fixed', 'rotating', got 'spinning'"),
        ({"gradient_amplitude": -0.1}, r"gradient_amplitude must be .* in \[0, 1\).*-0.1"),
        ({"gradient_amplitude": float("nan")}, r"gradient_amplitude must be .*nan"),
    ],
)
def test_rejects_bad_gradient_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_night(tmp_path, **SMALL, **kwargs)


TWIN = {"width": 256, "height": 192, "n_lights_per_filter": 4}
TRAIL_REACH_SIGMA = 7.0
"""Trail photons further than this many trail sigmas from the axis have a negligible rate."""


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[NightTruth, NightTruth]:
    """A small night and its twin without transients (same seed)."""
    root = tmp_path_factory.mktemp("twins")
    night = generate_night(root / "night", seed=13, **TWIN)
    twin = generate_night(root / "twin", seed=13, transients=False, **TWIN)
    return night, twin


def _cosmic_ray_deposits(light, shape: tuple[int, int]) -> np.ndarray:
    """The light's cosmic-ray ADU summed per pixel."""
    deposits = np.zeros(shape)
    for x, y, adu in light.cosmic_rays:
        deposits[y, x] += adu
    return deposits


def test_twin_truth_differs_only_by_transients(twins: tuple[NightTruth, NightTruth]) -> None:
    night, twin = twins
    assert any(lt.trail is not None for lt in night.light_frames)
    assert all(lt.cosmic_rays for lt in night.light_frames)
    for light, other in zip(night.light_frames, twin.light_frames, strict=True):
        assert other.trail is None and other.cosmic_rays == ()
        assert dataclasses.replace(light, trail=None, cosmic_rays=()) == other
    assert twin.bias_frames == night.bias_frames and twin.dark_frames == night.dark_frames
    assert twin.flat_frames == night.flat_frames and twin.nebula == night.nebula
    for name in ("stars", "hot_pixels", "bias_pattern", "dark_current"):
        np.testing.assert_array_equal(getattr(twin, name), getattr(night, name))
    for name, response in night.flat_responses.items():
        np.testing.assert_array_equal(twin.flat_response(name), response)
    loaded = load_truth(twin.root)
    assert loaded.light_frames == twin.light_frames


def test_twin_calibration_frames_are_byte_identical(twins: tuple[NightTruth, NightTruth]) -> None:
    night, twin = twins
    for frame in night.bias_frames + night.dark_frames + night.flat_frames:
        assert night.path(frame.path).read_bytes() == twin.path(frame.path).read_bytes()


def test_twin_lights_differ_only_at_transients(twins: tuple[NightTruth, NightTruth]) -> None:
    """Same noise everywhere: only cosmic-ray pixels and the trail's surroundings differ.

    Off the transients the raw values are bit-identical; on a cosmic-ray pixel the
    difference is the deposit (up to rounding); the trail light also differs where trail
    photons fell: on every pixel within 1 px of the trail axis, and nowhere farther than
    ``TRAIL_REACH_SIGMA`` trail sigmas from it.
    """
    night, twin = twins
    y, x = np.indices(night.shape)
    for light, other in zip(night.light_frames, twin.light_frames, strict=True):
        assert fits.getheader(night.path(light.path)) == fits.getheader(twin.path(other.path))
        difference = _raw(night, light.path) - _raw(twin, other.path)
        deposits = _cosmic_ray_deposits(light, night.shape)
        near_trail = np.zeros(night.shape, dtype=bool)
        if light.trail is not None:
            x0, y0, x1, y1 = light.trail.endpoints
            length = np.hypot(x1 - x0, y1 - y0)
            distance = np.abs((x - x0) * -(y1 - y0) / length + (y - y0) * (x1 - x0) / length)
            near_trail = distance < TRAIL_REACH_SIGMA * light.trail.sigma
            on_axis = (distance < 1.0) & (deposits == 0)
            assert on_axis.sum() > 200
            assert np.all(difference[on_axis] > 0), light.path
        hit = (deposits > 0) & ~near_trail
        assert hit.sum() >= 5
        assert np.all(np.abs(difference[hit] - deposits[hit]) <= 1.0), light.path
        untouched = (deposits == 0) & ~near_trail
        assert not np.any(difference[untouched]), light.path


def test_twin_keeps_the_trail_photon_noise(twins: tuple[NightTruth, NightTruth]) -> None:
    """The trail's photons are Poisson: night minus twin scatters like sqrt(trail e-)."""
    night, twin = twins
    light = next(lt for lt in night.light_frames if lt.trail is not None)
    gain = night.sensor.gain
    trail = night.trail_image(light) * night.flat_response(light.filter)
    strong = (trail > 500.0) & (_cosmic_ray_deposits(light, night.shape) == 0)
    difference = _raw(night, light.path) - _raw(twin, light.path)
    z = (difference[strong] - trail[strong]) / np.sqrt(trail[strong] / gain)
    assert strong.sum() > 300
    assert abs(z.mean()) < 0.15 and abs(z.std() - 1.0) < 0.1


def test_trail_free_background_and_trail_image(truth: NightTruth) -> None:
    light = next(lt for lt in truth.lights("L") if lt.trail is not None)
    plain = truth.lights("L")[0]
    trail = truth.trail_image(light)
    assert trail.max() > 0.9 * light.trail.amplitude
    np.testing.assert_allclose(
        truth.clean_background(light), truth.clean_background(light, trail=False) + trail
    )
    np.testing.assert_allclose(truth.clean_sky(light), truth.clean_sky(light, trail=False) + trail)
    assert not truth.trail_image(plain).any()
    np.testing.assert_array_equal(truth.clean_sky(plain, trail=False), truth.clean_sky(plain))
