"""Tests of the real-scale options of ``sample_data``: saturation, seeing spread, elongation.

The 4096x3072 night itself is ``slow``; the fast tests use the same presets at 1024x768
(the star and cosmic-ray counts scale with the area, so the density per pixel is the same).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from scipy import ndimage, optimize

from sample_data import (
    LightTruth,
    NightTruth,
    generate_elongated_night,
    generate_large_night,
    generate_night,
    load_truth,
    sky,
)
from sample_data.large import large_night_options

SMALL = {"width": 200, "height": 160, "n_lights_per_filter": 4}
FEW_CALIBRATIONS = {"n_bias": 2, "n_darks": 2, "n_flats": 2}
FULL_AREA = 4096 * 3072


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _raw(truth: NightTruth, light: LightTruth) -> np.ndarray:
    return fits.getdata(truth.path(light.path)).astype(np.float64)


def _stars_only(truth: NightTruth, light: LightTruth) -> np.ndarray:
    """Raw light minus bias, dark and the truth background, divided by the flat (ADU)."""
    dark = truth.dark_current * (light.exposure / truth.sensor.gain)
    calibrated = (_raw(truth, light) - truth.bias_pattern - dark) / truth.flat_response(
        light.filter
    )
    return calibrated - truth.clean_background(light)


def _detected(truth: NightTruth, light: LightTruth) -> int:
    """Sources sep finds at 5 sigma (default kernel and minarea) in the raw light."""
    data = _raw(truth, light) - truth.bias_pattern
    background = sep.Background(data)
    return len(sep.extract(data - background.back(), 5.0, err=background.globalrms))


# ----------------------------------------------------------------------------- defaults


def test_every_new_option_at_its_default_gives_the_same_bytes(tmp_path: Path) -> None:
    a = generate_night(tmp_path / "a", seed=11, **SMALL)
    b = generate_night(
        tmp_path / "b",
        seed=11,
        filters=("L", "Ha"),
        fwhm=2.8,
        fwhm_range=(0.9, 1.1),
        eccentricity=0.0,
        eccentricity_spread=0.0,
        star_peak_limit_adu=30000.0,
        star_dynamic_range=800.0,
        star_count_slope=0.7,
        n_bias=12,
        n_darks=8,
        n_flats=8,
        dark_exposures=(60.0, 300.0),
        cosmic_ray_count=15.0,
        **SMALL,
    )
    assert _files(a.root) == _files(b.root)
    assert a.saturation_adu is None and a.psf_wing_adu is None
    assert all(lt.eccentricity == 0.0 and lt.psf_angle == 0.0 for lt in a.light_frames)
    light = fits.getheader(a.path(a.light_frames[0].path))
    assert "SATURATE" not in light
    data = json.loads((a.root / "truth" / "truth.json").read_text())
    assert "saturation_adu" not in data and "eccentricity" not in data["light_frames"][0]


def test_bad_options_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"fwhm_range.*eccentricity must be in \[0, 0\.95\]"):
        generate_night(tmp_path, fwhm_range=(1.2, 1.0), eccentricity=0.97, **SMALL)
    with pytest.raises(ValueError, match=r"n_darks must be a whole number >= 0, got -1"):
        generate_night(tmp_path, n_darks=-1, **SMALL)
    with pytest.raises(ValueError, match=r"unknown filter 'OIII'.*'L', 'Ha'"):
        generate_night(tmp_path, filters=("L", "OIII"), **SMALL)


def test_single_filter_night_with_chosen_calibration_counts(tmp_path: Path) -> None:
    truth = generate_night(
        tmp_path, seed=4, filters=("L",), n_bias=3, n_darks=2, n_flats=5, **SMALL
    )
    assert {lt.filter for lt in truth.light_frames} == {"L"} and len(truth.light_frames) == 4
    assert set(truth.filters) == {"L"} and set(truth.flat_responses) == {"L"}
    assert len(truth.bias_frames) == 3 and len(truth.dark_frames) == 2 * 2
    assert [f.filter for f in truth.flat_frames] == ["L"] * 5
    assert sum(lt.cloudy for lt in truth.light_frames) == 1
    assert sum(lt.blurred for lt in truth.light_frames) == 1
    assert sum(lt.has_trail for lt in truth.light_frames) == 1


def test_fwhm_and_range_set_the_seeing(tmp_path: Path) -> None:
    truth = generate_night(tmp_path, seed=2, fwhm=3.0, fwhm_range=(0.5, 0.6), **SMALL)
    sharp = [lt.fwhm for lt in truth.light_frames if not lt.blurred]
    assert min(sharp) >= 1.5 and max(sharp) <= 1.8


# ----------------------------------------------------------------------------- rendering


def _moments(image: np.ndarray, x0: float, y0: float, *, iterations: int = 50) -> np.ndarray:
    """Adaptive (elliptical Gaussian-weighted) second moments, corrected for the pixel box.

    For a profile with elliptical isophotes the converged weight has the profile's own
    shape, so the moment matrix is proportional to the profile's shape matrix.
    """
    y, x = np.indices(image.shape, dtype=np.float64)
    weight_cov = np.eye(2) * 4.0
    for _ in range(iterations):
        dx, dy = x - x0, y - y0
        inv = np.linalg.inv(weight_cov)
        w = image * np.exp(-0.5 * (inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2))
        total = w.sum()
        x0, y0 = x0 + (w * dx).sum() / total, y0 + (w * dy).sum() / total
        dx, dy = x - x0, y - y0
        q = np.array(
            [[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]]
        )
        weight_cov = 2.0 * q / total
    return q / total - np.eye(2) / 12.0


def _eccentricity_and_angle(q: np.ndarray) -> tuple[float, float]:
    values, vectors = np.linalg.eigh(q)
    angle = float(np.arctan2(vectors[1, 1], vectors[0, 1]) % np.pi)
    return float(np.sqrt(1.0 - values[0] / values[1])), angle


def _angle_difference(a: float, b: float) -> float:
    """Smallest difference of two axis angles (mod pi)."""
    return abs((a - b + np.pi / 2) % np.pi - np.pi / 2)


@pytest.mark.parametrize("eccentricity, theta", [(0.3, 0.4), (0.65, 2.0), (0.85, 1.1)])
def test_render_stars_draws_the_eccentricity_and_keeps_unit_flux(
    eccentricity: float, theta: float
) -> None:
    image = sky.render_stars(
        (81, 81), np.array([40.3]), np.array([39.8]), np.array([1.0]), 3.0,
        eccentricity=eccentricity, theta=theta,
    )  # fmt: skip
    assert image.sum() == pytest.approx(1.0, abs=0.003)
    e, angle = _eccentricity_and_angle(_moments(image, 40.3, 39.8))
    assert e == pytest.approx(eccentricity, abs=0.01)
    assert _angle_difference(angle, theta) < np.radians(1.0)


def test_round_render_is_the_default_render() -> None:
    rng = np.random.default_rng(0)
    x, y, flux = rng.uniform(-20, 220, 300), rng.uniform(-20, 180, 300), rng.uniform(0, 9e4, 300)
    default = sky.render_stars((160, 200), x, y, flux, 2.7)
    explicit = sky.render_stars((160, 200), x, y, flux, 2.7, eccentricity=0.0, theta=1.0)
    assert np.array_equal(default, explicit)
    halves = sky.render_stars((160, 200), x[:150], y[:150], flux[:150], 2.7) + sky.render_stars(
        (160, 200), x[150:], y[150:], flux[150:], 2.7
    )
    np.testing.assert_allclose(default, halves, rtol=1e-12, atol=1e-9)


def test_wing_limit_keeps_the_wings_of_a_very_bright_star() -> None:
    fwhm, flux = 3.0, 4.0e7  # a peak of ~2e6
    args = ((121, 121), np.array([60.0]), np.array([60.0]), np.array([flux]), fwhm)
    cut = sky.render_stars(*args)
    full = sky.render_stars(*args, wing_limit=0.5)
    radius = 30  # well beyond the fixed stamp (4 * fwhm + 2 = 14)
    alpha = sky.fwhm_to_alpha(fwhm)
    expected = float(sky.moffat_peak(flux, fwhm)) * (1 + (radius / alpha) ** 2) ** -sky.MOFFAT_BETA
    assert cut[60, 60 + radius] == 0.0
    assert full[60, 60 + radius] == pytest.approx(expected, rel=0.01)
    assert full.sum() == pytest.approx(flux, rel=1e-4)
    with pytest.raises(ValueError, match="wing_limit must be positive"):
        sky.render_stars(*args, wing_limit=0.0)


def test_psf_axes_keep_the_geometric_mean() -> None:
    major, minor = sky.psf_axes(3.0, 0.6)
    assert np.sqrt(major * minor) == pytest.approx(3.0)
    assert np.sqrt(1 - (minor / major) ** 2) == pytest.approx(0.6)
    with pytest.raises(ValueError, match=r"eccentricity must be in \[0, 1\), got 1.0"):
        sky.psf_axes(3.0, 1.0)


# ----------------------------------------------------------------------------- saturation


@pytest.fixture(scope="module")
def saturated(tmp_path_factory: pytest.TempPathFactory) -> NightTruth:
    """A small single-filter night whose bright end saturates."""
    return generate_night(
        tmp_path_factory.mktemp("saturated"),
        seed=21,
        width=320,
        height=240,
        n_lights_per_filter=4,
        filters=("L",),
        stars_in_frame=400,
        star_peak_limit_adu=2.0e6,
        star_dynamic_range=2.0e4,
        star_count_slope=0.45,
        **FEW_CALIBRATIONS,
    )


def test_saturated_stars_clip_at_65535_where_the_truth_says(saturated: NightTruth) -> None:
    assert saturated.saturation_adu == 65535.0 and saturated.psf_wing_adu == 0.5
    for light in saturated.light_frames:
        raw = fits.getdata(saturated.path(light.path))
        assert raw.dtype == np.uint16
        assert fits.getheader(saturated.path(light.path))["SATURATE"] == 65535
        stars = saturated.stars_with_raw_peaks(light)
        ix, iy = np.rint(stars["x"]).astype(int), np.rint(stars["y"]).astype(int)
        core = ndimage.maximum_filter(raw, size=3)[iy, ix]
        assert stars["saturated"].sum() >= 2
        assert np.all(core[stars["saturated"] & (stars["raw_peak_adu"] > 70000)] == 65535)
        clear = stars["raw_peak_adu"] < 50000
        hits = np.zeros(raw.shape, bool)
        for x, y, _ in light.cosmic_rays:
            hits[y, x] = True
        near_hit = ndimage.binary_dilation(hits, iterations=2)[iy, ix]
        assert np.all(core[clear & ~near_hit] < 65535)
        # Every clipped patch belongs to a saturated star, a cosmic ray on a star, or (at
        # the border) a star centred just off the sensor.
        labels, n = ndimage.label(raw == 65535)
        owned = labels[iy[stars["saturated"]], ix[stars["saturated"]]]
        border = np.unique(np.concatenate([labels[[0, -1], :].ravel(), labels[:, [0, -1]].ravel()]))
        explained = set(owned.tolist()) | set(labels[hits].tolist()) | set(border.tolist())
        assert n > 0 and set(range(1, n + 1)) <= explained


def test_saturated_night_truth_round_trips(saturated: NightTruth) -> None:
    loaded = load_truth(saturated.root)
    assert loaded.saturation_adu == 65535.0 and loaded.psf_wing_adu == 0.5
    assert loaded.light_frames == saturated.light_frames
    np.testing.assert_array_equal(
        loaded.star_image(loaded.light_frames[0]), saturated.star_image(saturated.light_frames[0])
    )


def test_light_summary_counts_the_transients(saturated: NightTruth) -> None:
    for light in saturated.light_frames:
        summary = saturated.light_summary(light)
        assert summary["n_cosmic_ray_pixels"] == len({(x, y) for x, y, _ in light.cosmic_rays})
        assert summary["trail"] == (light.trail is not None)
        assert (summary["n_trail_pixels"] > 0) == summary["trail"]
        assert summary["saturation_adu"] == 65535.0
        assert summary["fwhm_major"] == summary["fwhm_minor"] == light.fwhm
        json.dumps(summary)
    trail = next(lt for lt in saturated.light_frames if lt.has_trail)
    assert saturated.light_summary(trail)["n_trail_pixels"] > saturated.width


# ----------------------------------------------------------------------------- elongated


@pytest.fixture(scope="module")
def elongated(tmp_path_factory: pytest.TempPathFactory) -> NightTruth:
    return generate_elongated_night(
        tmp_path_factory.mktemp("elongated"), n_lights=8, **FEW_CALIBRATIONS
    )


def _isolated_bright_stars(truth: NightTruth, light: LightTruth, n: int = 4) -> np.ndarray:
    """The brightest unsaturated stars with no neighbour above 0.5 % of them within 20 px."""
    stars = truth.stars_with_raw_peaks(light)
    margin = 25
    inside = (
        (stars["x"] > margin)
        & (stars["x"] < truth.width - margin)
        & (stars["y"] > margin)
        & (stars["y"] < truth.height - margin)
        & (stars["raw_peak_adu"] < 50000)
    )
    hits = np.array([(x, y) for x, y, _ in light.cosmic_rays]).reshape(-1, 2)
    chosen = []
    for star in stars[inside][np.argsort(-stars[inside]["peak_adu"])]:
        d = np.hypot(stars["x"] - star["x"], stars["y"] - star["y"])
        crowded = np.any((d > 0) & (d < 20) & (stars["peak_adu"] > 0.005 * star["peak_adu"]))
        hit = len(hits) and np.any(np.hypot(*(hits - [star["x"], star["y"]]).T) < 15)
        if not crowded and not hit:
            chosen.append(star)
        if len(chosen) == n:
            break
    return np.array(chosen, dtype=stars.dtype)


def _fit_moffat(cutout: np.ndarray, beta: float) -> np.ndarray:
    """Least-squares pixel-integrated elliptical Moffat: flux, x, y, fwhm, e, theta."""
    half = cutout.shape[0] // 2
    sub = (np.arange(5) + 0.5) / 5 - 0.5
    grid = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()

    def model(p: np.ndarray) -> np.ndarray:
        flux, x0, y0, fwhm, e, theta = p
        major, minor = sky.psf_axes(fwhm, min(max(e, 0.0), 0.99))
        a2, b2 = sky.fwhm_to_alpha(major, beta) ** 2, sky.fwhm_to_alpha(minor, beta) ** 2
        dx, dy = grid[None, :] - x0, grid[:, None] - y0
        u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
        profile = (1 + u**2 / a2 + v**2 / b2) ** -beta * (beta - 1) / (np.pi * np.sqrt(a2 * b2))
        n = cutout.shape[0]
        return flux * profile.reshape(n, 5, n, 5).mean(axis=(1, 3))

    start = np.array([cutout.sum(), 0.0, 0.0, 3.0, 0.5, 1.0])
    fit = optimize.least_squares(lambda p: (model(p) - cutout).ravel(), start)
    return fit.x


def test_elongated_stars_have_the_drawn_eccentricity_and_fwhm(elongated: NightTruth) -> None:
    checked = 0
    for light in elongated.light_frames:
        if light.cloudy or light.blurred:
            continue
        image = _stars_only(elongated, light)
        for star in _isolated_bright_stars(elongated, light):
            ix, iy = int(round(star["x"])), int(round(star["y"]))
            cutout = image[iy - 15 : iy + 16, ix - 15 : ix + 16]
            x0, y0 = star["x"] - ix + 15, star["y"] - iy + 15
            e, angle = _eccentricity_and_angle(_moments(cutout, x0, y0))
            assert e == pytest.approx(light.eccentricity, abs=0.03)
            assert _angle_difference(angle, light.psf_angle) < np.radians(3.0)
            fwhm = _fit_moffat(cutout, elongated.psf_beta)[3]
            assert fwhm == pytest.approx(light.fwhm, rel=0.05)
            checked += 1
    assert checked >= 15


def test_elongated_night_draws_eccentricity_per_sub_and_one_angle(elongated: NightTruth) -> None:
    e = np.array([lt.eccentricity for lt in elongated.light_frames])
    angles = np.array([lt.psf_angle for lt in elongated.light_frames])
    assert np.median(e) == pytest.approx(0.65, abs=0.08)
    assert 0.02 < e.std() < 0.2 and np.all((e >= 0) & (e <= 0.95))
    assert max(_angle_difference(a, angles[0]) for a in angles) < np.radians(15.0)
    assert sum(lt.blurred for lt in elongated.light_frames) == 1
    for light in elongated.light_frames:
        assert light.fwhm_major > light.fwhm > light.fwhm_minor
        again = LightTruth.from_dict(json.loads(json.dumps(dataclasses.asdict(light))))
        assert again == light
    assert load_truth(elongated.root).light_frames == elongated.light_frames


# ----------------------------------------------------------------------------- large night


@pytest.fixture(scope="module")
def reduced_large(tmp_path_factory: pytest.TempPathFactory) -> NightTruth:
    """The large night's preset at 1024x768: a sixteenth of the area, the same density."""
    return generate_large_night(
        tmp_path_factory.mktemp("large"), width=1024, height=768, n_lights=8, **FEW_CALIBRATIONS
    )


def test_large_night_preset() -> None:
    options = large_night_options(4096, 3072)
    assert (options["n_bias"], options["n_darks"], options["n_flats"]) == (20, 15, 15)
    assert options["dark_exposures"] == (120.0,)
    (luminance,) = options["filters"]
    assert (luminance.name, luminance.exposure) == ("L", 120.0)
    lo, hi = options["fwhm_range"]
    assert options["fwhm"] * lo == pytest.approx(2.0) and options["fwhm"] * hi == pytest.approx(4.5)


def test_reduced_large_night_saturates_like_the_full_one(reduced_large: NightTruth) -> None:
    scale = reduced_large.width * reduced_large.height / FULL_AREA
    normal = [lt for lt in reduced_large.light_frames if not (lt.cloudy or lt.blurred)]
    counts, detected = [], []
    for light in normal:
        stars = reduced_large.stars_with_raw_peaks(light)
        counts.append(int(stars["saturated"].sum()))
        brightest = stars[np.argsort(-stars["flux_adu"])][: round(60 * scale)]
        assert brightest["saturated"].all()
        detected.append(_detected(reduced_large, light))
    # About 200 saturated and 4000 detected stars per full-size sub.
    assert 120 < np.mean(counts) / scale < 300, counts
    assert 3000 < np.mean(detected) / scale < 5000, detected


def test_reduced_large_night_seeing_and_specials(reduced_large: NightTruth) -> None:
    lights = reduced_large.light_frames
    assert len(lights) == 8 and {lt.filter for lt in lights} == {"L"}
    assert all(lt.exposure == 120.0 for lt in lights)
    sharp = [lt.fwhm for lt in lights if not lt.blurred]
    assert min(sharp) >= 2.0 and max(sharp) <= 4.5 and max(sharp) - min(sharp) > 1.0
    assert [sum(getattr(lt, k) for lt in lights) for k in ("cloudy", "blurred", "has_trail")] == [
        1,
        1,
        1,
    ]
    rays = [lt.n_cosmic_ray_pixels for lt in lights]
    assert 100 < np.mean(rays) < 400  # ~77 hits of 1-4 pixels per 120-s sub of 1024x768
    assert [f.exposure for f in reduced_large.dark_frames] == [120.0, 120.0]


@pytest.mark.slow
def test_full_size_large_night(tmp_path: Path) -> None:
    start = time.perf_counter()
    truth = generate_large_night(tmp_path, n_lights=4, n_bias=1, n_darks=1, n_flats=1)
    seconds = time.perf_counter() - start
    assert seconds / 7 < 10.0  # 4 lights and 3 calibration frames, truth included
    light = next(lt for lt in truth.light_frames if not (lt.cloudy or lt.blurred or lt.trail))
    with fits.open(truth.path(light.path)) as hdul:
        assert hdul[0].data.shape == (3072, 4096)
        assert hdul[0].header["SATURATE"] == 65535
        clipped = int(ndimage.label(hdul[0].data == 65535)[1])
    stars = truth.stars_with_raw_peaks(light)
    assert 100 < stars["saturated"].sum() < 400
    assert abs(clipped - stars["saturated"].sum()) < 0.1 * stars["saturated"].sum()
    assert 3000 < _detected(truth, light) < 5500
