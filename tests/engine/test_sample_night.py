"""End-to-end physics on the synthetic sample night, against the generator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from pipeline.io.fits import read_image


def _noise(image: np.ndarray, mask: np.ndarray) -> float:
    """Pixel noise: MAD-sigma of the image minus its 9x9 median, over ``mask``."""
    filled = np.where(np.isfinite(image), image, np.nanmedian(image))
    residual = filled - ndimage.median_filter(filled, size=9)
    values = residual[mask & np.isfinite(image)]
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _star_mask(truth, light, shape, *, radius: float, min_peak: float) -> np.ndarray:
    stars = truth.stars_in_sensor(light)
    stars = stars[stars["peak_adu"] > min_peak]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for star in stars:
        x0, y0 = int(round(star["x"])), int(round(star["y"]))
        box = (slice(max(0, y0 - 12), y0 + 13), slice(max(0, x0 - 12), x0 + 13))
        mask[box] |= (xx[box] - star["x"]) ** 2 + (yy[box] - star["y"]) ** 2 <= radius**2
    return mask


def _group_report(run, filt):
    (master,) = [m for m in run.summary.manifest["masters"] if m["filter"] == filt]
    frames = [f for f in run.summary.manifest["frames"] if f["group"] == master["group"]]
    reference = next(f for f in frames if f.get("reference"))
    return master, frames, reference


def _truth_light(run, frame_path: str):
    relative = Path(frame_path).relative_to(run.night.resolve()).as_posix()
    return run.truth.light(relative)


def _apply(matrix, x, y):
    points = np.asarray(matrix) @ np.vstack([x, y, np.ones_like(x)])
    return points[0] / points[2], points[1] / points[2]


def test_one_master_and_linked_preview_per_light_group(sample_run):
    manifest = sample_run.summary.manifest
    assert sample_run.summary.exit_code == 0
    assert sorted(m["filter"] for m in manifest["masters"]) == ["Ha", "L"]
    for master in manifest["masters"]:
        header = fits.getheader(master["path"])
        assert header["IMAGETYP"] == "MASTER LIGHT"
        assert header["FILTER"] == master["filter"]
        assert header["NCOMBINE"] == master["ncombine"] >= 8
        assert header["BITPIX"] == -32
        assert Path(master["preview"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kinds = sorted(c["kind"] for c in manifest["calibration_masters"])
    assert kinds == ["bias", "dark", "dark", "defects", "defects", "flat", "flat"]


@pytest.mark.parametrize("filt", ["L", "Ha"])
def test_recovered_offsets_match_truth(sample_run, filt):
    _, frames, reference = _group_report(sample_run, filt)
    ref_truth = _truth_light(sample_run, reference["path"])
    height, width = sample_run.truth.shape
    grid_x, grid_y = np.meshgrid(np.linspace(0, width - 1, 9), np.linspace(0, height - 1, 9))
    gx, gy = grid_x.ravel(), grid_y.ravel()
    registered = [f for f in frames if "registration" in f]
    selected_out = [f for f in frames if (f["excluded"] or "").startswith("selection:")]
    assert len(registered) == len(frames) - len(selected_out)
    for frame in registered:
        truth_matrix = sample_run.truth.sub_to_sub_matrix(
            _truth_light(sample_run, frame["path"]), ref_truth
        )
        tx, ty = _apply(truth_matrix, gx, gy)
        rx, ry = _apply(frame["registration"]["matrix"], gx, gy)
        error = np.hypot(tx - rx, ty - ry)
        assert error.max() < 0.1, (frame["path"], error.max())


def test_meridian_flipped_subs_were_registered(sample_run):
    flipped = [light for light in sample_run.truth.light_frames if light.flipped]
    assert flipped
    reports = {Path(f["path"]).name: f for f in sample_run.summary.manifest["frames"]}
    for light in flipped:
        report = reports[Path(light.path).name]
        if light.blurred:  # left out by the FWHM rule before registration
            assert report["excluded"].startswith("selection: FWHM")
        else:
            assert report["excluded"] is None and report["registration"]["matched"] >= 10


@pytest.mark.parametrize("filt", ["L", "Ha"])
def test_master_noise_scales_as_inverse_sqrt_n(sample_run, filt):
    master_info, _, reference = _group_report(sample_run, filt)
    ref_truth = _truth_light(sample_run, reference["path"])
    master = read_image(master_info["path"])
    calibrated = read_image(_calibrated_path(sample_run, reference["path"]))
    background = ~_star_mask(sample_run.truth, ref_truth, master.shape, radius=8, min_peak=5.0)
    n_used = master_info["ncombine"]
    ratio = _noise(master, background) / _noise(calibrated, background)
    assert ratio <= 1.25 / np.sqrt(n_used), (ratio, n_used)


def _calibrated_path(run, frame_path: str) -> Path:
    name = Path(frame_path).stem
    (found,) = (run.outdir / "work" / "calibrate").glob(f"{name}.*.fits")
    return found


def _residual_sigma(run, filt):
    """Master, master minus truth sky, the noise, and a mask of usable (star-free) pixels."""
    master_info, _, reference = _group_report(run, filt)
    ref_truth = _truth_light(run, reference["path"])
    master = read_image(master_info["path"])
    background = ~_star_mask(run.truth, ref_truth, master.shape, radius=10, min_peak=3.0)
    sigma = _noise(master, background)
    residual = master - ndimage.median_filter(
        np.nan_to_num(master, nan=np.nanmedian(master)), size=11
    )
    usable = background & np.isfinite(master)
    usable[:12], usable[-12:], usable[:, :12], usable[:, -12:] = False, False, False, False
    return residual, sigma, usable, ref_truth


@pytest.mark.parametrize("filt", ["L", "Ha"])
def test_no_truth_hot_pixel_survives_above_5_sigma(sample_run, filt):
    residual, sigma, usable, ref_truth = _residual_sigma(sample_run, filt)
    _, frames, _ = _group_report(sample_run, filt)
    hot = sample_run.truth.hot_pixels
    checked = 0
    for frame in frames:
        matrix = sample_run.truth.sub_to_sub_matrix(
            _truth_light(sample_run, frame["path"]), ref_truth
        )
        x, y = _apply(matrix, hot[:, 0], hot[:, 1])
        for xi, yi in zip(np.rint(x).astype(int), np.rint(y).astype(int), strict=True):
            if 0 <= yi < residual.shape[0] and 0 <= xi < residual.shape[1] and usable[yi, xi]:
                checked += 1
                assert residual[yi, xi] < 5 * sigma, (
                    frame["path"],
                    xi,
                    yi,
                    residual[yi, xi] / sigma,
                )
    assert checked > 100 * len(frames) // 2


def test_satellite_trail_leaves_no_residual_above_5_sigma(sample_run):
    residual, sigma, usable, ref_truth = _residual_sigma(sample_run, "L")
    (trail_light,) = [light for light in sample_run.truth.lights("L") if light.trail is not None]
    x0, y0, x1, y1 = trail_light.trail.endpoints
    steps = np.linspace(0.0, 1.0, int(np.hypot(x1 - x0, y1 - y0) * 2))
    matrix = sample_run.truth.sub_to_sub_matrix(trail_light, ref_truth)
    x, y = _apply(matrix, x0 + steps * (x1 - x0), y0 + steps * (y1 - y0))
    xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
    inside = (xi >= 0) & (yi >= 0) & (xi < residual.shape[1]) & (yi < residual.shape[0])
    xi, yi = xi[inside], yi[inside]
    keep = usable[yi, xi]
    assert keep.sum() > 300
    assert residual[yi[keep], xi[keep]].max() < 5 * sigma
