"""Quality benchmark: LinearLink vs Siril on one filter of a generated night, against its truth.

Both tools get the same raw files (the lights of one filter, all bias, the darks of the
lights' exposure, the filter's flats; symlinked into a one-filter copy of the night), each
as a fresh, measured process (wall, CPU, peak RSS of the process tree):

* LinearLink: ``linearlink run NIGHT -o OUT`` with the shipped defaults;
* Siril 1.0: the steps of its ``Mono_Preprocessing.ssf`` (see ``benchmarks/siril.py``):
  winsorized 3/3 stacks, additive + scale normalisation, noise weights, 32-bit output.

Both masters are then measured the same way against the truth:

* **grid**: sep detections in the master matched to the truth catalogue in the reference
  sub's sensor frame (astroalign, trying the image as is and with its rows flipped), then a
  least-squares affine fit on all matched pairs: ``sky -> master`` for every later step;
* **SNR**: truth stars that are isolated, unsaturated in every sub and inside every sub's
  footprint; aperture sums (radius 1.5 x the median true FWHM, local annulus); noise = the
  robust scatter of the same aperture sums at random star-free sky positions (the same sky
  positions in both masters); median over stars, and the median per-star ratio;
  ``ideal``: ``sqrt(sum of the per-sub SNR^2)`` from the truth (every sub, photon + read
  noise), a star-by-star upper bound;
* **FWHM**: Moffat fits (``pipeline.kernels.psf.fit_psf``) of the brighter selected stars;
* **outliers**: fraction of star-free sky pixels deviating > 5 sigma from a 7x7 median
  filter; the satellite trail's mean excess over the local sky (in pixel sigmas) along its
  line mapped into the master; the largest deviation at the cosmic-ray positions.

LinearLink's ``run.json`` and Siril's sequence file give per-sub diagnostics, compared with
the truth (FWHM ratio and correlation, weights vs FWHM on clear subs, the reference sub's
FWHM rank, rejected fractions vs planted outlier pixels).

Run::

    python benchmarks/quality.py NIGHT [--filter L] [--work DIR] [--json out.json] [--keep]
    python benchmarks/quality.py --generate small --seed 1 [--json out.json]

Generated nights are cached in ``benchmarks/.cache/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.proctree import ProcessStats, run_measured  # noqa: E402
from benchmarks.siril import SirilFrames, frames_for_filter, run_siril  # noqa: E402
from sample_data.truth import LightTruth, NightTruth, load_truth  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
SATURATION_ADU = 65535.0
Z_OUTLIER = 5.0

# --------------------------------------------------------------------------- nights


def generate(kind: str, seed: int, cache: Path = CACHE) -> Path:
    """A generated night of ``kind`` (small, large, elongated), cached in ``cache``."""
    import sample_data

    folder = cache / f"{kind}_s{seed}"
    if (folder / ".complete").exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    if kind == "small":
        sample_data.generate_night(
            folder, seed=seed, width=1024, height=768, n_lights_per_filter=20
        )
    else:
        name = f"generate_{kind}_night"
        maker = getattr(sample_data, name, None)
        if maker is None:
            raise SystemExit(f"sample_data has no {name} yet; use --generate small")
        maker(folder, seed=seed)
    (folder / ".complete").touch()
    return folder


def one_filter_night(night: Path, frames: SirilFrames, dest: Path) -> Path:
    """Symlink the frames (same relative paths) and the truth into ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    for path in (*frames.lights, *frames.biases, *frames.darks, *frames.flats):
        link = dest / Path(path).relative_to(night)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    (dest / "truth").symlink_to(night / "truth")
    return dest


# --------------------------------------------------------------------------- runs


def _relative(path: str | Path, night: Path) -> str:
    """``path`` relative to ``night``, both with symlinks resolved (the one-filter night's
    files are links into the generated night, and LinearLink records resolved paths)."""
    return Path(path).resolve().relative_to(night.resolve()).as_posix()


@dataclass(frozen=True)
class ToolResult:
    """A master produced by one tool and what it cost."""

    name: str
    master: Path | None
    stats: ProcessStats
    reference: str | None  # relative path of the reference sub, when known
    info: dict[str, Any]


def run_linearlink(
    night: Path, out: Path, filter: str, root: Path, *, source: Path | None = None
) -> ToolResult:
    """``linearlink run night -o out`` in a fresh process; the master of ``filter``.

    ``root`` is the generated night the truth paths are relative to; ``source``, a folder
    holding another ``pipeline/`` package (e.g. ``git archive HEAD pipeline | tar -x``)
    that is run instead of the installed one.
    """
    if out.exists():
        shutil.rmtree(out)
    exe = Path(sys.executable).with_name("linearlink")
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source.resolve()), env.get("PYTHONPATH", "")])
    stats = run_measured(
        [str(exe), "run", str(night), "-o", str(out)], log=out.with_suffix(".log"), env=env
    )
    manifest = out / "run.json"
    run = json.loads(manifest.read_text()) if manifest.exists() else {}
    entry = next((m for m in run.get("masters", []) if m["filter"] == filter), None)
    master = Path(entry["path"]) if entry else None
    reference = None
    if entry is not None:
        ref = run.get("integration", {}).get(entry["group"], {}).get("reference")
        if ref:
            reference = _relative(ref, root)
    return ToolResult("LinearLink", master, stats, reference, {"run": run})


def run_siril_tool(night: Path, work: Path, filter: str, root: Path) -> ToolResult:
    """Siril on the same night.

    The reference read from the registered sequence is the image Siril marks as reference
    after registration (its best, used for normalisation); it registers onto the first
    image unless told otherwise, which the star fit of the master finds (``grid_sub``).
    """
    run = run_siril(night, work, filter=filter)
    reference, fwhm = None, []
    seq = work / "process" / "r_pp_light_.seq"
    if seq.exists():
        for line in seq.read_text().splitlines():
            if line.startswith("S "):
                index = int(line.split()[6])  # reference_image, 0-based
                reference = _relative(run.frames.lights[index], root)
    pp = work / "process" / "pp_light_.seq"
    if pp.exists():
        fwhm = [float(line.split()[3]) for line in pp.read_text().splitlines() if line[:2] == "R0"]
    rejection = _siril_rejection(run.log)
    info = {"script": run.script, "fwhm": fwhm, "rejection_pct": rejection, "log": str(run.log)}
    return ToolResult("Siril", run.master, run.stats, reference, info)


def _siril_rejection(log: Path) -> list[float] | None:
    """The last ``Pixel rejection in channel #0: low% - high%`` of the Siril log."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        if "Pixel rejection in channel #0:" in line:
            parts = line.split(":")[-1].replace("%", "").split("-")
            found = [float(p) for p in parts]
    return found


# --------------------------------------------------------------------------- geometry


def _affine_apply(m: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


def _fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 3x3 affine ``dst ~ A @ src`` from (n, 2) point lists."""
    design = np.column_stack([src, np.ones(len(src))])
    coef, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return np.vstack([coef.T, [0.0, 0.0, 1.0]])


def _detect(image: np.ndarray) -> np.ndarray:
    """sep detections of ``image`` (x, y, flux), brightest first."""
    import sep

    finite = np.isfinite(image) & (image != 0)
    data = np.ascontiguousarray(np.where(finite, image, 0.0), dtype=np.float64)
    bkg = sep.Background(data, mask=~finite)
    sep.set_extract_pixstack(2_000_000)
    objs = sep.extract(data - bkg.back(), 5.0, err=bkg.globalrms, mask=~finite, minarea=5)
    order = np.argsort(objs["flux"])[::-1]
    return np.column_stack([objs["x"], objs["y"], objs["flux"]])[order]


def fit_grid(image: np.ndarray, truth: NightTruth, ref: LightTruth) -> dict[str, Any]:
    """The ``sky -> master pixel`` affine of ``image``, with the row-flip test.

    Returns a dict with ``matrix`` (3x3, sky -> master), ``to_ref`` (ref sensor -> master),
    ``flipped`` (rows reversed relative to the reference sub), ``matched``, ``rms`` (px).
    """
    import astroalign

    stars = truth.stars_in_sensor(ref)
    stars = stars[np.argsort(stars["flux_adu"])[::-1]]
    src_all = np.column_stack([stars["x"], stars["y"]])
    det = _detect(image)
    dst_all = det[:, :2]
    h = image.shape[0]
    best: tuple[int, np.ndarray, bool] | None = None
    for flipped in (False, True):
        dst = dst_all.copy()
        if flipped:
            dst[:, 1] = (h - 1) - dst[:, 1]
        try:
            tf, (s, _) = astroalign.find_transform(src_all[:80], dst[:80], max_control_points=60)
        except Exception:  # astroalign raises MaxIterError / ValueError when nothing matches
            continue
        if best is None or len(s) > best[0]:
            m = np.asarray(tf.params, dtype=np.float64)
            if flipped:
                m = np.array([[1, 0, 0], [0, -1, h - 1], [0, 0, 1.0]]) @ m
            best = (len(s), m, flipped)
    if best is None:
        raise RuntimeError("no star pattern of the truth found in the master")
    _, m, flipped = best
    # Refine on every truth star with a detection within 1.5 px.
    from scipy.spatial import cKDTree

    tree = cKDTree(dst_all)
    for radius in (2.0, 1.0):
        px, py = _affine_apply(m, src_all[:, 0], src_all[:, 1])
        dist, idx = tree.query(np.column_stack([px, py]), distance_upper_bound=radius)
        ok = np.isfinite(dist)
        m = _fit_affine(src_all[ok], dst_all[idx[ok]])
    px, py = _affine_apply(m, src_all[ok, 0], src_all[ok, 1])
    rms = float(np.sqrt(np.mean((px - dst_all[idx[ok], 0]) ** 2 + (py - dst_all[idx[ok], 1]) ** 2)))
    sky_to_master = m @ ref.sky_to_sensor
    grid_sub, offset = _closest_sub(sky_to_master, truth)
    return {
        "grid_sub": grid_sub,
        "grid_offset": offset,
        "matrix": sky_to_master,
        "to_ref": m,
        "flipped": flipped,
        "matched": int(ok.sum()),
        "rms": rms,
    }


def _closest_sub(sky_to_master: np.ndarray, truth: NightTruth) -> tuple[str, float]:
    """The light whose sensor grid the master is on: the smallest largest-corner offset."""
    h, w = truth.shape
    cx = np.array([0.0, w - 1, 0.0, w - 1])
    cy = np.array([0.0, 0.0, h - 1, h - 1])
    best = ("", math.inf)
    for lt in truth.light_frames:
        sx, sy = _affine_apply(lt.sensor_to_sky, cx, cy)
        mx, my = _affine_apply(sky_to_master, sx, sy)
        offset = float(np.max(np.hypot(mx - cx, my - cy)))
        if offset < best[1]:
            best = (lt.path, offset)
    return best


# --------------------------------------------------------------------------- truth helpers


def _moffat_alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _enclosed(radius: float, fwhm: float, beta: float) -> float:
    """Fraction of a Moffat's flux inside ``radius``."""
    alpha = _moffat_alpha(fwhm, beta)
    return 1.0 - (1.0 + (radius / alpha) ** 2) ** (1.0 - beta)


def _sub_sky_noise(truth: NightTruth, lt: LightTruth) -> float:
    """Per-pixel sky noise of a calibrated sub (ADU): sky + dark photons and read noise."""
    s = truth.sensor
    electrons = lt.sky_adu * s.gain + s.dark_current * lt.exposure + s.read_noise**2
    return math.sqrt(electrons) / s.gain


def _in_all(truth: NightTruth, lights: tuple[LightTruth, ...], sx, sy, margin: float):
    """Sky points ``(sx, sy)`` inside every light's sensor with ``margin`` px to spare."""
    inside = np.ones(np.shape(sx), dtype=bool)
    for lt in lights:
        x, y = _affine_apply(lt.sky_to_sensor, sx, sy)
        inside &= (x >= margin) & (x <= truth.width - 1 - margin)
        inside &= (y >= margin) & (y <= truth.height - 1 - margin)
    return inside


@dataclass(frozen=True)
class Apertures:
    """The photometry design shared by both masters (sky coordinates)."""

    radius: float
    annulus: tuple[float, float]
    star_ids: np.ndarray
    star_sky: np.ndarray  # (n, 2)
    star_flux: np.ndarray  # ADU in a median clear sub
    ideal_snr: np.ndarray
    sky_points: np.ndarray  # (m, 2)
    fwhm: float
    pix_noise_sub: float  # per-pixel noise of a median sub (ADU)


def design_apertures(
    truth: NightTruth, lights: tuple[LightTruth, ...], rng: np.random.Generator
) -> Apertures:
    """Choose the stars and the star-free sky positions measured in both masters."""
    fwhm = float(np.median([lt.fwhm for lt in lights if not lt.blurred]))
    beta = truth.psf_beta
    radius = 1.5 * fwhm
    annulus = (radius + 3.0 * fwhm, radius + 6.0 * fwhm)
    margin = annulus[1] + 3.0
    sky_xy = truth.stars[:, :2]
    n = len(sky_xy)
    clear = [lt for lt in lights if not lt.cloudy and not lt.blurred] or list(lights)
    typical = clear[len(clear) // 2]
    flux = truth.star_flux_adu(typical)
    noise_pix = float(np.median([_sub_sky_noise(truth, lt) for lt in clear]))

    inside = _in_all(truth, lights, sky_xy[:, 0], sky_xy[:, 1], margin)
    unsaturated = np.ones(n, dtype=bool)
    for lt in lights:
        peak = np.zeros(n)
        rows = truth.stars_in_sensor(lt)
        peak[rows["id"]] = rows["peak_adu"]
        level = peak * 1.1 + lt.sky_adu * (1.0 + abs(lt.sky_gradient)) + truth.sensor.bias_level
        unsaturated &= level + 0.0 < 0.9 * SATURATION_ADU
    from scipy.spatial import cKDTree

    tree = cKDTree(sky_xy)
    isolated = np.ones(n, dtype=bool)
    for i, near in enumerate(tree.query_ball_point(sky_xy, annulus[1] + 2.0 * fwhm)):
        others = [j for j in near if j != i]
        if others and np.any(flux[others] > 0.05 * flux[i]):
            isolated[i] = False
    keep = inside & unsaturated & isolated
    ids = np.flatnonzero(keep)

    # Ideal SNR: per-sub aperture SNR from the truth, summed in quadrature over every sub.
    area = math.pi * radius**2
    ideal2 = np.zeros(len(ids))
    s = truth.sensor
    for lt in lights:
        f_e = truth.star_flux_adu(lt)[ids] * s.gain * _enclosed(radius, lt.fwhm, beta)
        var = f_e + area * (_sub_sky_noise(truth, lt) * s.gain) ** 2
        ideal2 += f_e**2 / var

    # Star-free sky positions: no star that matters in the aperture or the annulus.
    ap_noise_master = noise_pix * math.sqrt(area) / math.sqrt(len(clear))
    f_cut = 0.1 * ap_noise_master
    cand = np.column_stack(
        [rng.uniform(0, truth.width, 20000), rng.uniform(0, truth.height, 20000)]
    )
    cx, cy = _affine_apply(typical.sensor_to_sky, cand[:, 0], cand[:, 1])
    cand = np.column_stack([cx, cy])
    ok = _in_all(truth, lights, cx, cy, margin)
    for pt_i in np.flatnonzero(ok):
        near = tree.query_ball_point(cand[pt_i], annulus[1] + 2.5 * fwhm)
        if not near:
            continue
        d = np.hypot(*(sky_xy[near] - cand[pt_i]).T)
        f = flux[near]
        if np.any((d < radius + 3.0 * fwhm) & (f > f_cut)) or np.any(f > 30 * f_cut):
            ok[pt_i] = False
    points = cand[ok][:1500]
    return Apertures(
        radius=radius,
        annulus=annulus,
        star_ids=ids,
        star_sky=sky_xy[ids],
        star_flux=flux[ids],
        ideal_snr=np.sqrt(ideal2),
        sky_points=points,
        fwhm=fwhm,
        pix_noise_sub=noise_pix,
    )


# --------------------------------------------------------------------------- measurements


def _sum_circle(data: np.ndarray, mask: np.ndarray, x, y, ap: Apertures):
    import sep

    flux, _, flag = sep.sum_circle(data, x, y, ap.radius, bkgann=ap.annulus, mask=mask, subpix=5)
    return flux, flag


def measure_master(image: np.ndarray, grid: dict[str, Any], ap: Apertures) -> dict[str, Any]:
    """Photometry, FWHM and outliers of one master on the shared design."""
    finite = np.isfinite(image)
    data = np.ascontiguousarray(np.where(finite, image, 0.0), dtype=np.float64)
    mask = ~finite | (data == 0)
    m = grid["matrix"]
    sx, sy = _affine_apply(m, ap.star_sky[:, 0], ap.star_sky[:, 1])
    flux, flag = _sum_circle(data, mask, sx, sy, ap)
    px, py = _affine_apply(m, ap.sky_points[:, 0], ap.sky_points[:, 1])
    sky_flux, sky_flag = _sum_circle(data, mask, px, py, ap)
    sky_ok = sky_flag == 0
    sky_flux = sky_flux[sky_ok]
    noise = float(1.4826 * np.median(np.abs(sky_flux - np.median(sky_flux))))
    return {
        "x": sx,
        "y": sy,
        "flux": flux,
        "flux_ok": flag == 0,
        "aperture_noise": noise,
        "aperture_noise_std": float(np.std(sky_flux)),
        "sky_positions": int(sky_ok.sum()),
        "sky_offset": float(np.median(sky_flux)),
    }


def measure_fwhm(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Median Moffat FWHM and eccentricity of the stars at ``(x, y)``."""
    from pipeline.kernels.psf import fit_psf

    fits = fit_psf(np.asarray(image, dtype=np.float32), x, y, model="moffat")
    ok = fits.ok & np.isfinite(fits.fwhm)
    return {
        "fwhm": float(np.median(fits.fwhm[ok])) if ok.any() else float("nan"),
        "eccentricity": float(np.median(fits.eccentricity[ok])) if ok.any() else float("nan"),
        "fitted": int(ok.sum()),
    }


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` convolved with a Gaussian of ``sigma`` px (NaN = no data stays NaN)."""
    from scipy import ndimage

    if sigma <= 0:
        return image
    valid = np.isfinite(image)
    filled = np.where(valid, image, np.nanmedian(image)).astype(np.float32)
    out = ndimage.gaussian_filter(filled, sigma).astype(np.float32)
    out[~valid] = np.nan
    return out


def matched_resolution(
    measured: dict[str, dict[str, Any]],
    results: dict[str, Any],
    truth: NightTruth,
    lights,
    ap: Apertures,
    ok: np.ndarray,
) -> dict[str, Any]:
    """SNR of both masters at the same resolution: the sharper one blurred to the other's FWHM.

    A smoother master (a softer interpolation, blurrier subs weighed more) has less noise per
    aperture for the price of resolution; blurring the sharper master with a Gaussian until
    its measured FWHM equals the other's (bisection on the kernel's sigma) compares the two
    at equal resolution.
    """
    names = list(measured)
    fwhm = {n: results[n]["psf"]["fwhm"] for n in names}
    sharp, soft = sorted(names, key=lambda n: fwhm[n])
    target = fwhm[soft]
    m = measured[sharp]
    sel = np.flatnonzero(ok & (ap.ideal_snr > 30))
    sel = sel[np.argsort(ap.ideal_snr[sel])[::-1][:100]]
    x, y = m["phot"]["x"][sel], m["phot"]["y"][sel]
    lo, hi = 0.0, max(target, 1.0)
    image = m["image"]
    for _ in range(8):
        sigma = 0.5 * (lo + hi)
        image = blurred(m["image"], sigma)
        width = measure_fwhm(image, x, y)["fwhm"]
        lo, hi = (sigma, hi) if width < target else (lo, sigma)
    sigma = 0.5 * (lo + hi)
    image = blurred(m["image"], sigma)
    phot = measure_master(image, m["grid"], ap)
    snr = phot["flux"] / phot["aperture_noise"]
    soft_snr = measured[soft]["phot"]["flux"] / measured[soft]["phot"]["aperture_noise"]
    return {
        "blurred": sharp,
        "sigma_px": float(sigma),
        "fwhm": measure_fwhm(image, x, y)["fwhm"],
        "target_fwhm": float(target),
        "snr_median": float(np.median(snr[ok])),
        "other_snr_median": float(np.median(soft_snr[ok])),
        "median_over_ideal": float(np.median(snr[ok] / ap.ideal_snr[ok])),
        "ratio_over_other": float(np.median(snr[ok] / soft_snr[ok])),
    }


def sky_mask(
    shape: tuple[int, int], truth: NightTruth, lights, grid: dict[str, Any], ap: Apertures
) -> np.ndarray:
    """Master pixels inside every sub (8 px margin) and far from every catalogue star."""
    h, w = shape
    step = 4
    gy, gx = np.mgrid[0:h:step, 0:w:step].astype(np.float64)
    inv = np.linalg.inv(grid["matrix"])
    sx, sy = _affine_apply(inv, gx, gy)
    coarse = _in_all(truth, lights, sx, sy, 8.0)
    mask = np.repeat(np.repeat(coarse, step, 0), step, 1)[:h, :w]
    # Discs where a star's light exceeds 0.2 sigma of a master pixel, + 2 px.
    beta = truth.psf_beta
    alpha = _moffat_alpha(ap.fwhm, beta)
    n_sub = max(1, len(lights))
    sigma = ap.pix_noise_sub / math.sqrt(n_sub)
    peak = truth.star_flux_adu(lights[len(lights) // 2]) * (beta - 1) / (math.pi * alpha**2)
    rad = alpha * np.sqrt(np.maximum((peak / (0.2 * sigma)) ** (1.0 / beta) - 1.0, 0.0)) + 2.0
    x, y = _affine_apply(grid["matrix"], truth.stars[:, 0], truth.stars[:, 1])
    for xi, yi, ri in zip(x, y, rad, strict=True):
        if -ri <= xi < w + ri and -ri <= yi < h + ri:
            x0, x1 = max(0, int(xi - ri)), min(w, int(xi + ri) + 2)
            y0, y1 = max(0, int(yi - ri)), min(h, int(yi + ri) + 2)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            mask[y0:y1, x0:x1] &= (xx - xi) ** 2 + (yy - yi) ** 2 > ri**2
    return mask


def measure_outliers(
    image: np.ndarray, truth: NightTruth, lights, grid: dict[str, Any], ap: Apertures
) -> dict[str, Any]:
    """5-sigma outlier fraction on the star-free sky, trail excess, cosmic-ray residuals."""
    from scipy.ndimage import median_filter

    data = np.where(np.isfinite(image), image, np.nan).astype(np.float32)
    smooth = median_filter(np.nan_to_num(data), size=7)
    resid = data - smooth
    mask = sky_mask(image.shape, truth, lights, grid, ap) & np.isfinite(resid) & (data != 0)
    r = resid[mask]
    sigma = float(1.4826 * np.median(np.abs(r - np.median(r))))
    z = resid / sigma
    out = {
        "pixel_sigma": sigma,
        "sky_pixels": int(mask.sum()),
        "outlier_fraction": float(np.mean(np.abs(z[mask]) > Z_OUTLIER)),
        "outlier_fraction_high": float(np.mean(z[mask] > Z_OUTLIER)),
    }
    # The trail: mean on the line minus the local sky (6-12 px away) in pixel sigmas.
    h, w = image.shape
    m = grid["matrix"]
    trails = []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for lt in lights:
        if lt.trail is None:
            continue
        ex, ey = _affine_apply(
            lt.sensor_to_sky, np.array(lt.trail.endpoints[0::2]), np.array(lt.trail.endpoints[1::2])
        )
        mx, my = _affine_apply(m, ex, ey)
        dx, dy = mx[1] - mx[0], my[1] - my[0]
        norm = math.hypot(dx, dy)
        dist = np.abs((xx - mx[0]) * dy - (yy - my[0]) * dx) / norm
        on = mask & (dist <= max(1.0, lt.trail.sigma))
        off_in = 5.0 * lt.trail.sigma + 3.0
        off = mask & (dist >= off_in) & (dist <= off_in + 7.0)
        if on.sum() < 20 or off.sum() < 20:
            continue
        excess = float(np.mean(data[on]) - np.median(data[off]))
        trails.append(
            {
                "sub": lt.path,
                "excess_sigma": excess / sigma,
                "z_of_mean": excess / (sigma / math.sqrt(on.sum())),
                "pixels": int(on.sum()),
            }
        )
    out["trail"] = trails
    # Cosmic rays: the largest |z| in the 3x3 around each CR position on the sky mask.
    zs = []
    for lt in lights:
        if not lt.cosmic_rays:
            continue
        cr = np.array(lt.cosmic_rays, dtype=np.float64)
        sx, sy = _affine_apply(lt.sensor_to_sky, cr[:, 0], cr[:, 1])
        mx, my = _affine_apply(m, sx, sy)
        ix, iy = np.rint(mx).astype(int), np.rint(my).astype(int)
        good = (ix >= 1) & (ix < w - 1) & (iy >= 1) & (iy < h - 1)
        for xi, yi in zip(ix[good], iy[good], strict=True):
            if mask[yi, xi]:
                zs.append(float(np.nanmax(z[yi - 1 : yi + 2, xi - 1 : xi + 2])))
    zs_arr = np.array(zs)
    out["cosmic_rays"] = {
        "positions": int(zs_arr.size),
        "max_z": float(zs_arr.max()) if zs_arr.size else float("nan"),
        "fraction_above_5": float(np.mean(zs_arr > Z_OUTLIER)) if zs_arr.size else float("nan"),
    }
    return out


def read_master(path: Path) -> np.ndarray:
    """The primary image of a master as float64 (native byte order)."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float64)


# --------------------------------------------------------------------------- per-sub diagnostics


def _pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _fwhm_stats(measured, true, blurred) -> dict[str, float]:
    measured, true = np.asarray(measured, float), np.asarray(true, float)
    ratio = measured / true
    worst = ratio[np.argmax(np.abs(np.log(ratio)))]
    sharp = ~np.asarray(blurred, bool)
    return {
        "ratio_median": float(np.median(ratio)),
        "ratio_worst": float(worst),
        "pearson": _pearson(measured, true),
        "pearson_unblurred": _pearson(measured[sharp], true[sharp]),
    }


def planted_outliers(truth: NightTruth, lt: LightTruth) -> float:
    """Fraction of a sub's pixels hit by a cosmic ray or by the trail above 1 noise sigma."""
    pixels = {(int(x), int(y)) for x, y, _ in lt.cosmic_rays}
    count = len(pixels)
    if lt.trail is not None:
        count += int(np.sum(truth.trail_image(lt) > _sub_sky_noise(truth, lt)))
    return count / (truth.width * truth.height)


def sub_diagnostics(
    truth: NightTruth,
    lights: tuple[LightTruth, ...],
    ll: ToolResult,
    siril: ToolResult,
    night: Path,
) -> dict[str, dict[str, Any]]:
    """Per-sub diagnostics of both tools against the truth."""
    true_fwhm = {lt.path: lt.fwhm for lt in lights}
    order = sorted(true_fwhm, key=true_fwhm.get)  # best first
    thirds = ("best third", "middle third", "worst third")

    def rank(ref: str | None) -> str:
        if ref not in true_fwhm:
            return "n/a"
        pos = order.index(ref)
        return f"{pos + 1}/{len(order)} ({thirds[min(2, 3 * pos // len(order))]})"

    out: dict[str, dict[str, Any]] = {"LinearLink": {}, "Siril": {}}
    frames = {}
    for f in ll.info.get("run", {}).get("frames", []):
        frames[_relative(f["path"], night)] = f
    measured = [(p, frames[p]) for p in true_fwhm if p in frames and frames[p].get("metrics")]
    d = out["LinearLink"]
    if measured:
        by_path = {lt.path: lt for lt in lights}
        d["fwhm"] = _fwhm_stats(
            [f["metrics"]["fwhm"] for _, f in measured],
            [true_fwhm[p] for p, _ in measured],
            [by_path[p].blurred for p, _ in measured],
        )
        weighted = [
            (p, f)
            for p, f in measured
            if f.get("weight") is not None and not by_path[p].cloudy and not f.get("excluded")
        ]
        d["weight_vs_true_fwhm_clear"] = _pearson(
            [f["weight"] for _, f in weighted], [true_fwhm[p] for p, _ in weighted]
        )
        high = [
            (f["rejected_fraction"][-1], planted_outliers(truth, by_path[p]))
            for p, f in measured
            if f.get("rejected_fraction")
        ]
        if high:
            rej, planted = np.array(high).T
            d["high_rejection"] = {
                "median": float(np.median(rej)),
                "max": float(np.max(rej)),
                "planted_median": float(np.median(planted)),
                "planted_max": float(np.max(planted)),
                "pearson": _pearson(rej, planted),
            }
            d["low_rejection_median"] = float(
                np.median(
                    [f["rejected_fraction"][0] for _, f in measured if f.get("rejected_fraction")]
                )
            )
        d["excluded"] = sorted(Path(p).name for p, f in measured if f.get("excluded"))
    d["reference"] = ll.reference
    d["reference_rank"] = rank(ll.reference)
    s = out["Siril"]
    fw = siril.info.get("fwhm") or []
    if len(fw) == len(lights):
        s["fwhm"] = _fwhm_stats(fw, [lt.fwhm for lt in lights], [lt.blurred for lt in lights])
    s["reference"] = siril.reference
    s["reference_rank"] = rank(siril.reference)
    if siril.info.get("rejection_pct"):
        low, high = siril.info["rejection_pct"]
        s["rejection_total"] = {"low": low / 100.0, "high": high / 100.0}
    return out


# --------------------------------------------------------------------------- report


def evaluate(
    night: Path, filter: str, work: Path, *, linearlink_source: Path | None = None
) -> dict[str, Any]:
    """Run both tools on ``filter`` of ``night`` and measure both masters."""
    night = night.resolve()
    truth = load_truth(night)
    lights = truth.lights(filter)
    frames = frames_for_filter(night, filter)
    subset = one_filter_night(night, frames, work / "night")
    print(
        f"night {night} filter {filter}: {len(lights)} lights, "
        f"{len(frames.biases)} bias, {len(frames.darks)} darks "
        f"({frames.dark_exposure:g} s), {len(frames.flats)} flats",
        flush=True,
    )
    ll = run_linearlink(subset, work / "linearlink", filter, night, source=linearlink_source)
    print(f"LinearLink: {ll.stats.wall_s:.1f} s, master {ll.master}", flush=True)
    si = run_siril_tool(subset, work / "siril", filter, night)
    print(f"Siril:      {si.stats.wall_s:.1f} s, master {si.master}", flush=True)

    rng = np.random.default_rng(12345)
    ap = design_apertures(truth, lights, rng)
    results: dict[str, Any] = {}
    measured: dict[str, dict[str, Any]] = {}
    for tool in (ll, si):
        entry: dict[str, Any] = {"process": tool.stats.as_dict(), "master": str(tool.master)}
        results[tool.name] = entry
        if tool.master is None:
            continue
        image = read_master(tool.master)
        ref = truth.light(tool.reference) if tool.reference else lights[0]
        grid = fit_grid(image, truth, ref)
        entry["grid"] = {
            "reference": tool.reference,
            "grid_sub": grid["grid_sub"],
            "grid_sub_offset_px": grid["grid_offset"],
            "flipped_rows": grid["flipped"],
            "matched": grid["matched"],
            "rms_px": grid["rms"],
            "ref_to_master": np.round(grid["to_ref"], 4).tolist(),
        }
        phot = measure_master(image, grid, ap)
        measured[tool.name] = {"image": image, "grid": grid, "phot": phot}
        entry["outliers"] = measure_outliers(image, truth, lights, grid, ap)

    # The same stars in both masters: every aperture clean in each.
    ok = np.ones(len(ap.star_ids), dtype=bool)
    for m in measured.values():
        ok &= m["phot"]["flux_ok"]
    snrs = {}
    for name, m in measured.items():
        snr = m["phot"]["flux"] / m["phot"]["aperture_noise"]
        snrs[name] = snr
        bright = ok & (ap.ideal_snr > 20)
        results[name]["snr"] = {
            "stars": int(ok.sum()),
            "median": float(np.median(snr[ok])),
            "median_bright": float(np.median(snr[bright])) if bright.any() else float("nan"),
            "median_over_ideal": float(np.median(snr[ok] / ap.ideal_snr[ok])),
            "aperture_noise": m["phot"]["aperture_noise"],
            "aperture_noise_std": m["phot"]["aperture_noise_std"],
            "sky_positions": m["phot"]["sky_positions"],
        }
        # Linearity: flux / truth of bright stars over that of faint ones (1 = linear). A
        # stack that rejects the low samples of bright star cores (blurrier subs) more
        # than the high ones inflates its bright stars, and with them its SNR figure.
        truth_flux = truth.star_flux_adu(lights[0])[ap.star_ids]
        per_truth = m["phot"]["flux"] / truth_flux
        faint = ok & (ap.ideal_snr < 15)
        results[name]["linearity_bright_over_faint"] = (
            float(np.median(per_truth[bright]) / np.median(per_truth[faint]))
            if bright.any() and faint.any()
            else float("nan")
        )
        results[name]["snr"]["median_over_ideal_faint"] = (
            float(np.median(snr[faint] / ap.ideal_snr[faint])) if faint.any() else float("nan")
        )
        # FWHM: the brighter half of the selected stars (ideal SNR > 30), up to 100.
        sel = np.flatnonzero(ok & (ap.ideal_snr > 30))
        sel = sel[np.argsort(ap.ideal_snr[sel])[::-1][:100]]
        results[name]["psf"] = measure_fwhm(m["image"], m["phot"]["x"][sel], m["phot"]["y"][sel])
    if len(snrs) == 2:
        ratio = snrs["LinearLink"][ok] / snrs["Siril"][ok]
        results["snr_ratio_linearlink_over_siril"] = float(np.median(ratio))
        results["matched_resolution"] = matched_resolution(measured, results, truth, lights, ap, ok)
    results["ideal_snr_median"] = float(np.median(ap.ideal_snr[ok])) if ok.any() else None
    results["design"] = {
        "aperture_radius": ap.radius,
        "annulus": list(ap.annulus),
        "true_fwhm_median": ap.fwhm,
        "candidate_stars": len(ap.star_ids),
    }
    results["subs"] = sub_diagnostics(truth, lights, ll, si, night)
    results["siril_script"] = si.info.get("script")
    results["night"] = str(night)
    results["filter"] = filter
    results["n_lights"] = len(lights)
    return results


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, spec)
    return str(value)


def _short(path: str | None) -> str:
    """A sub's file name, its tail only when long."""
    if not path:
        return "-"
    name = Path(path).name
    return name if len(name) <= 24 else "..." + name[-21:]


def _get(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def print_table(res: dict[str, Any]) -> None:
    """The side-by-side table."""
    ll, si = res.get("LinearLink", {}), res.get("Siril", {})
    sl, ss = res["subs"]["LinearLink"], res["subs"]["Siril"]

    def trail(entry):
        t = _get(entry, "outliers", "trail")
        return ", ".join(f"{x['excess_sigma']:.2f}" for x in t) if t else "-"

    def rej(d):
        h = d.get("high_rejection")
        if h:
            return f"{h['median']:.2e} / {h['max']:.2e}"
        t = d.get("rejection_total")
        return f"(all subs) {t['high']:.2e}" if t else "-"

    def grid_sub(entry):
        offset = _fmt(_get(entry, "grid", "grid_sub_offset_px"))
        return f"{_short(_get(entry, 'grid', 'grid_sub'))} / {offset}"

    def fw(d, k):
        return _fmt(_get(d, "fwhm", k))

    rows = [
        (
            "wall time (s)",
            _fmt(_get(ll, "process", "wall_s"), ".1f"),
            _fmt(_get(si, "process", "wall_s"), ".1f"),
        ),
        (
            "CPU time (s)",
            _fmt(_get(ll, "process", "cpu_s"), ".1f"),
            _fmt(_get(si, "process", "cpu_s"), ".1f"),
        ),
        (
            "peak RSS of the tree (MB)",
            _fmt(_get(ll, "process", "peak_rss_mb"), ".0f"),
            _fmt(_get(si, "process", "peak_rss_mb"), ".0f"),
        ),
        (
            "reference sub (the tool's)",
            _short(_get(ll, "grid", "reference")),
            _short(_get(si, "grid", "reference")),
        ),
        (
            "grid = sub (from the stars) / px",
            grid_sub(ll),
            grid_sub(si),
        ),
        (
            "grid: matched stars / rms px",
            f"{_get(ll, 'grid', 'matched')} / {_fmt(_get(ll, 'grid', 'rms_px'))}",
            f"{_get(si, 'grid', 'matched')} / {_fmt(_get(si, 'grid', 'rms_px'))}",
        ),
        (
            "grid: rows flipped",
            _fmt(_get(ll, "grid", "flipped_rows")),
            _fmt(_get(si, "grid", "flipped_rows")),
        ),
        (
            "SNR median (same stars)",
            _fmt(_get(ll, "snr", "median")),
            _fmt(_get(si, "snr", "median")),
        ),
        (
            "SNR median, ideal SNR > 20",
            _fmt(_get(ll, "snr", "median_bright")),
            _fmt(_get(si, "snr", "median_bright")),
        ),
        (
            "SNR / ideal (median)",
            _fmt(_get(ll, "snr", "median_over_ideal")),
            _fmt(_get(si, "snr", "median_over_ideal")),
        ),
        (
            "SNR / ideal, faint stars (ideal < 15)",
            _fmt(_get(ll, "snr", "median_over_ideal_faint")),
            _fmt(_get(si, "snr", "median_over_ideal_faint")),
        ),
        (
            "flux linearity (bright / faint vs truth)",
            _fmt(_get(ll, "linearity_bright_over_faint"), ".4f"),
            _fmt(_get(si, "linearity_bright_over_faint"), ".4f"),
        ),
        (
            "stars / sky positions",
            f"{_get(ll, 'snr', 'stars')} / {_get(ll, 'snr', 'sky_positions')}",
            f"{_get(si, 'snr', 'stars')} / {_get(si, 'snr', 'sky_positions')}",
        ),
        ("FWHM median (px)", _fmt(_get(ll, "psf", "fwhm")), _fmt(_get(si, "psf", "fwhm"))),
        (
            "eccentricity median",
            _fmt(_get(ll, "psf", "eccentricity")),
            _fmt(_get(si, "psf", "eccentricity")),
        ),
        (
            "sky pixels > 5 sigma",
            _fmt(_get(ll, "outliers", "outlier_fraction")),
            _fmt(_get(si, "outliers", "outlier_fraction")),
        ),
        ("trail excess (pixel sigma)", trail(ll), trail(si)),
        (
            "cosmic rays: max z / frac > 5",
            f"{_fmt(_get(ll, 'outliers', 'cosmic_rays', 'max_z'))} / "
            f"{_fmt(_get(ll, 'outliers', 'cosmic_rays', 'fraction_above_5'))}",
            f"{_fmt(_get(si, 'outliers', 'cosmic_rays', 'max_z'))} / "
            f"{_fmt(_get(si, 'outliers', 'cosmic_rays', 'fraction_above_5'))}",
        ),
        ("subs: FWHM ratio median", fw(sl, "ratio_median"), fw(ss, "ratio_median")),
        ("subs: FWHM ratio worst", fw(sl, "ratio_worst"), fw(ss, "ratio_worst")),
        (
            "subs: FWHM Pearson r (all / unblurred)",
            f"{fw(sl, 'pearson')} / {fw(sl, 'pearson_unblurred')}",
            f"{fw(ss, 'pearson')} / {fw(ss, 'pearson_unblurred')}",
        ),
        ("subs: r(weight, true FWHM), clear", _fmt(sl.get("weight_vs_true_fwhm_clear")), "-"),
        (
            "subs: reference true-FWHM rank",
            sl.get("reference_rank", "-"),
            ss.get("reference_rank", "-"),
        ),
        ("subs: high rejection median / max", rej(sl), rej(ss)),
        (
            "subs: planted outliers median / max",
            (
                f"{sl['high_rejection']['planted_median']:.2e} / "
                f"{sl['high_rejection']['planted_max']:.2e}"
            )
            if sl.get("high_rejection")
            else "-",
            "",
        ),
        ("subs: r(high rejection, planted)", _fmt(_get(sl, "high_rejection", "pearson")), "-"),
        ("subs excluded", ", ".join(sl.get("excluded", [])) or "none", "none"),
    ]
    width = max(len(r[0]) for r in rows)
    col = max(12, *(len(r[1]) for r in rows))
    print(f"\n{res['night']}  filter {res['filter']}  ({res['n_lights']} lights)")
    print(f"{'':{width}}  {'LinearLink':{col}}  Siril")
    for name, a, b in rows:
        print(f"{name:{width}}  {a:{col}}  {b}")
    matched = res.get("matched_resolution")
    if matched:
        print(
            f"at equal resolution ({matched['blurred']} blurred by a {matched['sigma_px']:.2f} px "
            f"Gaussian to FWHM {matched['fwhm']:.2f} px, the other's {matched['target_fwhm']:.2f}):"
            f" median SNR {matched['snr_median']:.3g} vs {matched['other_snr_median']:.3g}, "
            f"per-star ratio {matched['ratio_over_other']:.3f}"
        )
    ideal = res.get("ideal_snr_median")
    ratio = res.get("snr_ratio_linearlink_over_siril")
    print(
        f"ideal SNR median (sqrt of the per-sub SNR^2 sum, all subs): {_fmt(ideal)}; "
        f"median per-star SNR ratio LinearLink/Siril: {_fmt(ratio)}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("night", nargs="?", type=Path, help="night folder with truth/")
    parser.add_argument("--filter", default="L")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--generate", choices=("small", "large", "elongated"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--linearlink-src",
        type=Path,
        help="folder with another pipeline/ package to run instead of the installed one",
    )
    args = parser.parse_args(argv)
    if args.generate:
        night = generate(args.generate, args.seed)
    elif args.night is not None:
        night = args.night
    else:
        parser.error("give a NIGHT folder or --generate")
    work = args.work or Path(tempfile.mkdtemp(prefix="quality_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        res = evaluate(night, args.filter, work.resolve(), linearlink_source=args.linearlink_src)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(_jsonable(res), indent=1) + "\n")
        print(f"results: {args.json}")
    if args.keep or args.work:
        print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
