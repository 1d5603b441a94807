"""Integration quality of the sample night's masters against the generator's truth.

Two acceptance points of the integration stage are checked on the default sample night
(the session fixture ``sample_run``) and its twin without transients (``twin_runs``):

* the satellite trail and the cosmic rays leave no residual above 3 sigma in the master;
* the master's noise is within 10 % of the ideal weighted-mean noise of the accepted subs.

Every comparison happens on the reference sub's pixel grid, which is the master's grid:
each sub's registration matrix in ``run.json`` maps its sensor pixels there. The noise-free
expectation of a registered sub is built from the truth (smooth sky and nebula warped
bilinearly, stars rendered at their registered positions with the sub's own PSF), so
residuals are pure noise plus whatever the pipeline leaves behind; the master's local noise
sigma is measured from them.

The 3-sigma tests look at thousands of pixels, where the master's own noise alone would
exceed 3 sigma a dozen times (pure Gaussian noise over 3000 pixels peaks near 3.6 sigma),
and where the rejection also clips ordinary good samples (a winsorized clip of 9 subs can
drop several good samples of a pixel next to a cosmic ray and move it by a sigma or more
for reasons that have nothing to do with the defect). Their residual is therefore the
master minus the master of the twin night: the very same night (stars, dithers, seeing,
sky, calibration frames and the noise of every pixel no transient touches) generated with
``transients=False`` and processed by the same pipeline on the same reference sub. The
difference is exactly what the trail and the cosmic rays left behind, plus their small
effect on the measurements, weights and normalization of the subs; it is zero where the
rejection treated the pixel as it treats the twin's, so a pass is not luck and a fail is a
real residual. The master's local sigma is the denominator. (Away from the transients
the two masters differ only where a tiny change of weights or normalization flips a
rejection decision: median |difference| about 0.05 sigma, maximum below 3 sigma over
some 200,000 pixels.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from sample_data import LightTruth, sky

BLOCK = 40
"""Side (px) of the square blocks in which local offsets and noise are estimated."""

CR_DILATION = 2
"""Half-size (px) of the square drawn around each registered cosmic-ray pixel.

Lanczos-3 resampling with clamping to the 2x2 nearest input pixels confines a single hot
input pixel to the output pixels within about 1.5 px of its registered position.
"""

TRAIL_LEVEL = 0.5
"""Trail pixels are those where the truth trail exceeds this fraction of the sub's noise."""

STAR_RADIUS_FWHM = 3.0
"""Pixels closer than this many FWHM (the widest PSF of the group) to a star are skipped."""

EDGE = 8
"""Margin (px) kept from the frame border."""


@dataclass(frozen=True)
class _Sub:
    """One integrated sub as the master saw it."""

    light: LightTruth
    registered: np.ndarray
    to_reference: np.ndarray
    weight: float
    factor: float
    offset: float
    noise: float

    def normalized(self) -> np.ndarray:
        """The registered sub after the integration's normalization."""
        return self.factor * self.registered + self.offset


@dataclass(frozen=True)
class _Group:
    """A master, its subs and the pixels every used sub covers."""

    master: np.ndarray
    covered: np.ndarray
    subs: tuple[_Sub, ...]
    reference: LightTruth
    rejected: np.ndarray
    """Samples rejected (low plus high) per pixel."""


def _apply(matrix: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a 3x3 affine or projective matrix to pixel coordinates."""
    points = np.asarray(matrix) @ np.vstack([np.ravel(x), np.ravel(y), np.ones(np.size(x))])
    return points[0] / points[2], points[1] / points[2]


def _load_group(run, filt: str) -> _Group:
    """Read the master of ``filt``, its coverage and every sub that went into it.

    Parameters
    ----------
    run : ProcessedNight
        The processed sample night.
    filt : str
        Filter name.

    Returns
    -------
    _Group
        ``covered`` is True where every used sub had data (contributing plus rejected
        samples equal the number of used subs) and the master is finite.
    """
    manifest = json.loads((run.outdir / "run.json").read_text(encoding="utf-8"))
    (info,) = [m for m in manifest["masters"] if m["filter"] == filt]
    frames = [
        f
        for f in manifest["frames"]
        if f["group"] == info["group"] and f["excluded"] is None and "registration" in f
    ]
    reference = next(f for f in frames if f["reference"])
    assert Path(reference["path"]) == Path(manifest["integration"][info["group"]]["reference"])

    def light(frame):
        return run.truth.light(Path(frame["path"]).relative_to(run.night.resolve()).as_posix())

    subs = []
    for frame in frames:
        stem = Path(frame["path"]).stem
        (registered,) = (run.outdir / "work" / "register").glob(f"{stem}.*.fits")
        subs.append(
            _Sub(
                light=light(frame),
                registered=fits.getdata(registered).astype(np.float64),
                to_reference=np.asarray(frame["registration"]["matrix"], dtype=np.float64),
                weight=float(frame["weight"]),
                factor=float(frame["normalization"]["factor"][0]),
                offset=float(frame["normalization"]["offset"][0]),
                noise=float(frame["metrics"]["noise"]),
            )
        )
    assert len(subs) == info["ncombine"]
    with fits.open(info["path"]) as hdul:
        master = hdul[0].data.astype(np.float64)
        rejected = sum(hdul[name].data.astype(np.int64) for name in ("REJLOW", "REJHIGH"))
        seen = hdul["COUNT"].data.astype(np.int64) + rejected
    covered = (seen == len(subs)) & np.isfinite(master)
    covered &= np.all([np.isfinite(s.registered) for s in subs], axis=0)
    return _Group(master, covered, tuple(subs), light(reference), rejected)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at ``(x, y)`` (edge pixels replicated outside)."""
    height, width = image.shape
    x = np.clip(x, 0.0, width - 1.0)
    y = np.clip(y, 0.0, height - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), width - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), height - 2)
    fx, fy = x - x0, y - y0
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _sub_model(truth, sub: _Sub, shape: tuple[int, int]) -> np.ndarray:
    """Noise-free registered sub without its trail, on the reference grid (ADU).

    The smooth sky and nebula are warped bilinearly (exact for the linear sky gradient);
    the stars are rendered at their registered positions with the sub's FWHM and flux.
    """
    background = truth.clean_background(sub.light, trail=False)
    yy, xx = np.indices(shape)
    sx, sy = _apply(np.linalg.inv(sub.to_reference), xx, yy)
    model = _bilinear(background, sx, sy).reshape(shape)
    to_reference = sub.to_reference @ sub.light.sky_to_sensor
    x, y = _apply(to_reference, truth.stars[:, 0], truth.stars[:, 1])
    flux = truth.star_flux_adu(sub.light)
    return model + sky.render_stars(shape, x, y, flux, sub.light.fwhm, truth.psf_beta)


def _star_mask(truth, group: _Group) -> np.ndarray:
    """Pixels near a star whose peak exceeds the master's expected noise.

    The noise is the reference sub's measured noise over the square root of the number of
    subs; the radius is ``STAR_RADIUS_FWHM`` times the widest FWHM of the group.
    """
    stars = truth.stars_in_sensor(group.reference)
    min_peak = group.subs[0].noise / np.sqrt(len(group.subs))
    stars = stars[stars["peak_adu"] > min_peak]
    radius = STAR_RADIUS_FWHM * max(s.light.fwhm for s in group.subs)
    yy, xx = np.indices(group.master.shape)
    mask = np.zeros(group.master.shape, dtype=bool)
    reach = int(np.ceil(radius))
    for star in stars:
        x0, y0 = int(round(star["x"])), int(round(star["y"]))
        box = (slice(max(0, y0 - reach), y0 + reach + 1), slice(max(0, x0 - reach), x0 + reach + 1))
        mask[box] |= (xx[box] - star["x"]) ** 2 + (yy[box] - star["y"]) ** 2 <= radius**2
    return mask


def _cosmic_ray_mask(sub: _Sub, shape: tuple[int, int]) -> np.ndarray:
    """Reference-grid pixels within ``CR_DILATION`` px of a registered cosmic-ray pixel."""
    mask = np.zeros(shape, dtype=bool)
    if not sub.light.cosmic_rays:
        return mask
    table = np.asarray(sub.light.cosmic_rays, dtype=np.float64)
    x, y = _apply(sub.to_reference, table[:, 0], table[:, 1])
    xi, yi = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    for dy in range(-CR_DILATION, CR_DILATION + 1):
        for dx in range(-CR_DILATION, CR_DILATION + 1):
            px, py = xi + dx, yi + dy
            inside = (px >= 0) & (px < shape[1]) & (py >= 0) & (py < shape[0])
            mask[py[inside], px[inside]] = True
    return mask


def _trail_mask(sub: _Sub, shape: tuple[int, int]) -> np.ndarray:
    """Reference-grid pixels where the sub's trail exceeds ``TRAIL_LEVEL`` of its noise."""
    if sub.light.trail is None:
        return np.zeros(shape, dtype=bool)
    trail = sub.light.trail
    x, y = _apply(sub.to_reference, np.array([trail.x0, trail.x1]), np.array([trail.y0, trail.y1]))
    profile = sky.render_trail(shape, (x[0], y[0], x[1], y[1]), trail.amplitude, trail.sigma)
    return profile > TRAIL_LEVEL * sub.noise


def _robust_sigma(values: np.ndarray) -> float:
    """Gaussian-equivalent standard deviation from the median absolute deviation."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _local_offset_and_noise(
    residual: np.ndarray, quiet: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel local median and robust sigma of ``residual`` over the ``quiet`` pixels.

    Estimated in ``BLOCK`` x ``BLOCK`` tiles; tiles with fewer than a quarter of their
    pixels quiet take the median over the tiles that have enough.
    """
    offset = np.full(residual.shape, np.nan)
    sigma = np.full(residual.shape, np.nan)
    for top in range(0, residual.shape[0], BLOCK):
        for left in range(0, residual.shape[1], BLOCK):
            tile = (slice(top, top + BLOCK), slice(left, left + BLOCK))
            values = residual[tile][quiet[tile]]
            if values.size >= BLOCK * BLOCK // 4:
                offset[tile] = np.median(values)
                sigma[tile] = _robust_sigma(values)
    offset[np.isnan(offset)] = np.nanmedian(offset)
    sigma[np.isnan(sigma)] = np.nanmedian(sigma)
    return offset, sigma


def _edge_mask(shape: tuple[int, int]) -> np.ndarray:
    """True at least ``EDGE`` px from the frame border."""
    inner = np.zeros(shape, dtype=bool)
    inner[EDGE:-EDGE, EDGE:-EDGE] = True
    return inner


@dataclass(frozen=True)
class _Analysis:
    """Residual maps of a master on its reference grid."""

    group: _Group
    models: tuple[np.ndarray, ...]
    master_residual: np.ndarray
    sigma: np.ndarray
    usable: np.ndarray
    quiet: np.ndarray
    cosmic_rays: tuple[np.ndarray, ...]
    trails: tuple[np.ndarray, ...]


def _analyse(run, filt: str) -> _Analysis:
    """Truth models, residuals, local noise and the masks used by the tests.

    ``usable`` pixels are covered by every used sub, at least ``EDGE`` px from the border
    and away from stars (:func:`_star_mask`); ``quiet`` pixels are usable pixels that no
    cosmic ray or trail of any used sub touches.
    """
    group = _load_group(run, filt)
    shape = group.master.shape
    models = tuple(_sub_model(run.truth, sub, shape) for sub in group.subs)
    total = sum(sub.weight for sub in group.subs)
    expected = sum(
        sub.weight * (sub.factor * model + sub.offset)
        for sub, model in zip(group.subs, models, strict=True)
    )
    residual = group.master - expected / total
    usable = group.covered & _edge_mask(shape) & ~_star_mask(run.truth, group)
    cosmic_rays = tuple(_cosmic_ray_mask(sub, shape) for sub in group.subs)
    trails = tuple(_trail_mask(sub, shape) for sub in group.subs)
    quiet = usable & ~np.any(cosmic_rays + trails, axis=0)
    offset, sigma = _local_offset_and_noise(residual, quiet)
    return _Analysis(group, models, residual - offset, sigma, usable, quiet, cosmic_rays, trails)


@dataclass(frozen=True)
class _TwinComparison:
    """The night's analysis and the twin's master and subs on the same reference grid."""

    analysis: _Analysis
    twin: _Group
    residual: np.ndarray
    """``master - twin master`` in units of the master's local noise sigma."""

    def defect(self, index: int) -> np.ndarray:
        """Sub ``index``'s registered pixels minus the twin's, in units of its noise."""
        sub, twin_sub = self.analysis.group.subs[index], self.twin.subs[index]
        return (sub.registered - twin_sub.registered) / sub.noise

    def worst(self, tested: np.ndarray) -> tuple[float, str]:
        """Largest ``|residual|`` over ``tested`` and a message that locates and explains it."""
        worst, message = _worst(self.residual, tested)
        y, x = np.unravel_index(
            int(np.argmax(np.where(tested, np.abs(self.residual), -1))), tested.shape
        )
        defects = [float(self.defect(i)[y, x]) for i in range(len(self.twin.subs))]
        return worst, (
            f"{message}; samples rejected there: {self.analysis.group.rejected[y, x]} "
            f"(twin {self.twin.rejected[y, x]}); per-sub defect in sub sigmas: "
            + ", ".join(f"{d:.1f}" for d in defects)
        )


def _compare_with_twin(run, twin_run, filt: str) -> _TwinComparison:
    """Analyse ``filt`` in both runs and check they integrated the same subs the same way.

    Both masters must be built on the same reference sub from the same used subs (same
    order), so that they share the reference grid pixel for pixel; the comparison is
    restricted to pixels the twin's used subs all cover too. On the ``quiet`` pixels (no
    transient nearby) the twin must match the master closely, which a twin with another
    noise realisation would not (its median |z| would be near 1).
    """
    analysis = _analyse(run, filt)
    twin = _load_group(twin_run, filt)
    group = analysis.group
    assert twin.reference.path == group.reference.path
    assert [s.light.path for s in twin.subs] == [s.light.path for s in group.subs]
    assert twin.master.shape == group.master.shape
    for sub, twin_sub in zip(group.subs, twin.subs, strict=True):
        assert twin_sub.light.trail is None and twin_sub.light.cosmic_rays == ()
        np.testing.assert_allclose(twin_sub.to_reference, sub.to_reference, atol=0.05)
    with np.errstate(invalid="ignore"):
        residual = np.where(twin.covered, group.master - twin.master, np.nan) / analysis.sigma
    quiet = analysis.quiet & twin.covered
    assert np.median(np.abs(residual[quiet])) < 0.2
    return _TwinComparison(analysis, twin, residual)


def _worst(z: np.ndarray, tested: np.ndarray) -> tuple[float, str]:
    """Largest ``|z|`` over the ``tested`` pixels and a message locating it."""
    assert np.all(np.isfinite(z[tested]))
    magnitude = np.where(tested, np.abs(np.nan_to_num(z)), -1.0)
    y, x = np.unravel_index(int(np.argmax(magnitude)), z.shape)
    worst = float(magnitude[y, x])
    return worst, f"max |z| = {worst:.2f} at (x={x}, y={y}) over {int(tested.sum())} pixels"


def test_satellite_trail_leaves_no_residual_above_3_sigma(sample_run, twin_runs):
    """No pixel the trail crossed differs from the twin's master by 3 sigma.

    Tested pixels: reference-grid pixels where the trail sub's truth trail, carried through
    its registration, exceeds half the sub's noise; restricted to pixels every used sub of
    both runs covers, at least ``EDGE`` px from the border, and farther than
    ``STAR_RADIUS_FWHM`` times the widest FWHM from any star brighter than the master's
    expected noise. The residual is the master minus the master of the twin night without
    transients (same reference sub); sigma is the master's local noise (robust sigma of
    master minus the truth model in 40 px tiles). The trail must be there: on the tested
    pixels the trail sub's registered image exceeds the twin's by more than 10 of its sigmas
    at a third of them.
    """
    comparison = _compare_with_twin(sample_run, twin_runs["L"], "L")
    analysis = comparison.analysis
    (index,) = [i for i, sub in enumerate(analysis.group.subs) if sub.light.trail is not None]
    tested = analysis.trails[index] & analysis.usable & comparison.twin.covered
    assert tested.sum() > 1000
    defect = comparison.defect(index)[tested]
    assert np.mean(defect > 10.0) > 1 / 3, f"median trail {np.median(defect):.1f} sigma"
    worst, message = comparison.worst(tested)
    print(f"trail (L): {message}")  # the measured figure, shown with pytest -s
    assert worst < 3.0, message


@pytest.mark.parametrize("filt", ["L", "Ha"])
def test_cosmic_rays_leave_no_residual_above_3_sigma(sample_run, twin_runs, filt):
    """No pixel near a registered cosmic ray of any used sub differs from the twin by 3 sigma.

    Tested pixels: each used sub's cosmic-ray pixels mapped through its registration into
    the reference grid and dilated by ``CR_DILATION`` px, with the same coverage, border
    and star restrictions as the trail test. The residual is the master minus the twin's
    master; sigma is the master's local noise. The cosmic rays must be there: well over a
    hundred tested pixels where a sub's registered image exceeds the twin's by 10 sigma.
    """
    comparison = _compare_with_twin(sample_run, twin_runs[filt], filt)
    analysis = comparison.analysis
    tested = np.any(analysis.cosmic_rays, axis=0) & analysis.usable & comparison.twin.covered
    hits = sum(len(sub.light.cosmic_rays) for sub in analysis.group.subs)
    assert hits > 100 and tested.sum() > 10 * len(analysis.group.subs)
    strong = sum(
        int(np.sum((comparison.defect(i) > 10.0) & crs & tested))
        for i, crs in enumerate(analysis.cosmic_rays)
    )
    assert strong > 100
    worst, message = comparison.worst(tested)
    print(f"cosmic rays ({filt}): {message}")
    assert worst < 3.0, message


@pytest.mark.parametrize("filt", ["L", "Ha"])
def test_master_noise_within_10_percent_of_ideal_weighted_mean(sample_run, filt):
    """The master's noise is within 10 % of ``sqrt(sum w_i^2 s_i^2) / sum w_i``.

    ``w_i`` are the integration weights of ``run.json``; ``s_i`` is the noise of the
    registered sub (Lanczos resampling lowers and correlates the per-pixel noise, so the
    registered sub is measured rather than the calibrated one) times its normalization
    factor. Master and subs are measured with the same estimator on the same ``quiet``
    pixels (covered by every sub, off the border, star-free, no cosmic ray or trail):
    robust sigma of the image minus its truth model, after removing 40 px tile medians.
    """
    analysis = _analyse(sample_run, filt)
    quiet = analysis.quiet
    assert quiet.sum() > 0.3 * quiet.size
    master_noise = _robust_sigma(analysis.master_residual[quiet])
    sub_noise = []
    for sub, model in zip(analysis.group.subs, analysis.models, strict=True):
        residual = sub.factor * (sub.registered - model)
        offset, _ = _local_offset_and_noise(residual, quiet)
        sub_noise.append(_robust_sigma((residual - offset)[quiet]))
    weights = np.array([sub.weight for sub in analysis.group.subs])
    ideal = float(np.sqrt(np.sum(weights**2 * np.square(sub_noise))) / weights.sum())
    ratio = master_noise / ideal
    print(f"noise ({filt}): master {master_noise:.3f} / ideal {ideal:.3f} = {ratio:.4f}")
    assert abs(ratio - 1.0) < 0.10, f"master {master_noise:.3f} / ideal {ideal:.3f} = {ratio:.4f}"
