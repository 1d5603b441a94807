"""One-shot-colour: a generated CFA night against truth, and the real Seestar / ASI120 frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from PIL import Image

from pipeline.cli import main
from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline
from pipeline.io.fits import read_image
from sample_data import generate_color_night


def _background_subtracted(plane: np.ndarray) -> np.ndarray:
    data = np.ascontiguousarray(
        np.nan_to_num(plane, nan=float(np.nanmedian(plane))), dtype=np.float32
    )
    return data - sep.Background(data, bw=32, bh=32).back()


@pytest.fixture(scope="module")
def color_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("color")
    truth = generate_color_night(folder / "night", rng=np.random.default_rng(11))
    summary = Pipeline(load_config(None), folder / "out").run(folder / "night")
    return folder, truth, summary


def test_color_night_gives_an_rgb_master_and_preview(color_run):
    _, _, summary = color_run
    assert summary.exit_code == 0
    (master,) = summary.manifest["masters"]
    image = read_image(master["path"])
    assert image.shape[0] == 3 and image.ndim == 3
    assert np.asarray(Image.open(master["preview"])).shape[-1] == 3
    kinds = {c["kind"] for c in summary.manifest["calibration_masters"]}
    assert {"bias", "dark", "flat"} <= kinds


def test_color_ratios_of_truth_stars_match_within_two_percent(color_run):
    folder, truth, summary = color_run
    (master,) = summary.manifest["masters"]
    reference = next(f for f in summary.manifest["frames"] if f.get("reference"))
    light = truth.light(
        Path(reference["path"]).relative_to((folder / "night").resolve()).as_posix()
    )
    image = read_image(master["path"])
    planes = [_background_subtracted(plane) for plane in image]
    stars = truth.stars_in_sensor(light)
    stars = stars[stars["reference"]]  # bright, isolated, red to blue
    assert len(stars) >= 5
    flux = np.array([sep.sum_circle(plane, stars["x"], stars["y"], 8.0)[0] for plane in planes])
    truth_flux = np.array([stars["flux_r"], stars["flux_g"], stars["flux_b"]])
    measured = np.median(flux[[0, 2]] / flux[1], axis=1)
    expected = np.median(truth_flux[[0, 2]] / truth_flux[1], axis=1)
    np.testing.assert_allclose(measured, expected, rtol=0.02)


def _channel_centroids(image: np.ndarray, count: int = 25):
    planes = [_background_subtracted(plane) for plane in image]
    luminance = np.mean(planes, axis=0)
    noise = 1.4826 * np.median(np.abs(luminance - np.median(luminance)))
    objects = sep.extract(luminance, 10.0, err=noise, minarea=9)
    objects = objects[(objects["flag"] == 0) & (objects["peak"] < 0.5 * np.nanmax(luminance))]
    objects = objects[np.argsort(objects["flux"])[::-1][:count]]
    centroids = []
    for plane in planes:
        x, y, _ = sep.winpos(plane, objects["x"], objects["y"], 1.5)
        centroids.append(np.column_stack([x, y]))
    return centroids, objects


@pytest.mark.slow
def test_real_seestar_osc_lights_to_rgb_master_without_colour_fringes(real_data, tmp_path):
    """Seestar S50 GRBG lights (tinystork/zeseestarstacker, GPL-3.0): RGB master, round stars."""
    night = real_data / "seestar_s50_m94_osc"
    assert main(["run", str(night), "-o", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    (master,) = manifest["masters"]
    assert master["ncombine"] == 8
    header = fits.getheader(master["path"])
    assert header["NAXIS"] == 3 and header["NAXIS3"] == 3
    image = read_image(master["path"])
    (red, green, blue), objects = _channel_centroids(image)
    assert len(objects) >= 10
    assert np.median(np.hypot(*(red - green).T)) < 0.2
    assert np.median(np.hypot(*(blue - green).T)) < 0.2
    # stacking must not elongate stars: the master is as round as the subs (field rotation of
    # the alt-az mount is registered away)
    eccentricity = np.median(np.sqrt(1 - (objects["b"] / objects["a"]) ** 2))
    subs = np.median([f["metrics"]["eccentricity"] for f in manifest["frames"]])
    assert eccentricity <= subs + 0.05
    assert np.asarray(Image.open(master["preview"])).shape == (1920, 1080, 3)


@pytest.mark.slow
def test_real_asi120mc_calibration_frames_build_masters(real_data, tmp_path):
    """ASI120MC-S calibration set (Julia-Favaro/Multi-Messenger-Lab, GPL-3.0): odd headers."""
    night = real_data / "asi120mc_lab_calib_osc"
    assert main(["run", str(night), "-o", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    groups = {g["type"]: g for g in manifest["groups"]}
    assert groups["bias"]["exposure"] == pytest.approx(6.4e-5)
    assert groups["dark"]["exposure"] == 10.0
    masters = {c["kind"]: c["path"] for c in manifest["calibration_masters"]}
    assert set(masters) >= {"bias", "dark", "flat"}
    flat = read_image(masters["flat"])
    # GRBG: per CFA channel medians are 1 (a global normalisation would leave R and B off 1)
    cells = {
        "G1": flat[0::2, 0::2],
        "R": flat[0::2, 1::2],
        "B": flat[1::2, 0::2],
        "G2": flat[1::2, 1::2],
    }
    for name, values in cells.items():
        assert np.median(values) == pytest.approx(1.0, abs=0.02), name
    assert fits.getheader(masters["flat"])["BAYERPAT"] == "GRBG"
