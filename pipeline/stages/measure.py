"""Measurement stage: detect stars and measure background, noise, star shape and weights.

Star detection uses ``sep`` (Source Extractor as a library). FWHM and eccentricity come from
elliptical Moffat fits of *chosen* stars: well exposed (peak at least
``measurement.psf_min_peak_sigma`` noise sigmas) but below saturation, isolated, away from the
edges and from pixels without data, spread over the field; saturated stars never enter the
PSF measurement nor the registration/photometry star table (a saturated core is clipped, so its
fitted width and its flux depend on the seeing). The noise is the multiresolution support (MRS)
estimate; PSF Signal Weight and PSF SNR follow PixInsight's definitions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sep
from scipy.spatial import cKDTree

from pipeline.config.models import MeasurementConfig
from pipeline.kernels import weights as kweights
from pipeline.kernels.noise import mrs_noise, pixel_noise
from pipeline.kernels.psf import PSFFits, fit_psf

__all__ = [
    "FrameMeasurement",
    "PSFStarChoice",
    "StarDetection",
    "registered_noise",
    "choose_psf_stars",
    "detect_stars",
    "measure_frame",
]

VERSION = "6"

_SEP_PIXSTACK = 3_000_000
_SHARPNESS_CUT = 0.3
_PLATEAU_FRACTION = 0.98  # core pixels this close to the peak form a saturation plateau
_PLATEAU_PIXELS = 3  # ... and this many of them (peak included) mark a clipped star
_NEIGHBOUR_FLUX = 0.02  # a neighbour brighter than this fraction of a star spoils its fit
_GRID_CELLS = 4  # PSF stars are spread over a 4 x 4 grid of the frame
_PHOTOMETRY_APERTURE_FWHM = 2.0  # star-table fluxes: 97 % of a Moffat (beta 3.5) star


@dataclass(frozen=True)
class FrameMeasurement:
    """What was measured on one calibrated sub.

    Attributes
    ----------
    stars
        (N, 3) array of x, y, flux of the brightest isolated stars, brightest first.
    stars_saturated
        (N,) bool: which of ``stars`` are saturated (no photometry from them).
    background
        Global background level (ADU).
    noise
        Pixel-to-pixel Gaussian noise of the background (ADU).
    fwhm, eccentricity
        Medians over the PSF fits of the brightest stars (px, dimensionless).
    snr
        SubframeSelector's SNR weight, (average deviation / noise)².
    psf_signal_weight, psf_snr
        PixInsight's PSF Signal Weight and PSF SNR of this sub's own PSF stars (the group's
        weights compare subs on common terms: :mod:`pipeline.stages.select`).
    psf_stars
        Number of stars whose PSF fit succeeded (and were used for FWHM and weights).
    psf_area
        Median area (px^2) of the fitted stars' FWTM ellipses: how widely the sub spreads a
        star's light, the same for every star of the sub whatever its flux.
    psf_beta
        Median Moffat exponent of the fitted stars.
    m_star
        PixInsight's ``M*`` background residual estimate (the PSF Signal Weight's
        denominator, with the noise).
    saturation
        Saturation level of the calibrated sub (ADU; NaN when unknown).
    psf_choice
        How many detections were candidates for the PSF fits and why the others were not
        used (``saturated``, ``blended``, ``edge``, ``faint``), and how many were fitted.
    """

    stars: np.ndarray
    stars_saturated: np.ndarray
    star_count: int
    background: float
    noise: float
    fwhm: float
    eccentricity: float
    snr: float
    psf_signal_weight: float
    psf_snr: float
    psf_stars: int
    psf_area: float
    psf_beta: float
    m_star: float
    saturation: float
    psf_choice: dict[str, int]

    def metrics(self) -> dict[str, Any]:
        """The scalar metrics as a JSON-ready dict."""
        values = asdict(self)
        values.pop("stars")
        values.pop("stars_saturated")
        return {
            key: float(value) if isinstance(value, float) else value
            for key, value in values.items()
        }


def registered_noise(image: np.ndarray) -> float:
    """Per-pixel noise of a registered mono image (NaN = no data), over the whole frame.

    Resampling lowers (by about 15-25 % for Lanczos-3) and correlates the per-pixel noise
    of a registered sub: :func:`pipeline.kernels.noise.pixel_noise` measures the spread of
    single pixels, which the rejection compares against. How much it is lowered depends on
    the fractional shift, which a rotation makes vary across the frame in broad stripes, so
    the median is taken over the tiles of the whole frame: a central crop can fall on one
    stripe and read 10 % low, and rejection would then test that sub 10 % too tightly.
    """
    return float(pixel_noise(image))


@dataclass(frozen=True)
class StarDetection:
    """Stars found on one mono image.

    Attributes
    ----------
    stars
        (N, 3) array of x, y, flux of the brightest isolated stars, brightest first.
    stars_saturated
        (N,) bool: which of ``stars`` are saturated (their centroids serve registration,
        their clipped fluxes no photometry).
    count
        Number of detections (cosmic rays excluded) before the cut to the brightest.
    background, rms
        sep's global background level and background RMS (ADU).
    mask
        True where the image has no data (NaN).
    objects
        sep's catalogue of every detection (cosmic rays excluded).
    saturated
        Per detection of ``objects``: its core reaches the saturation level (or, with the
        level unknown, is a flat-topped plateau).
    subtracted
        The image minus sep's background map (NaN replaced), which the fluxes are
        measured on.
    """

    stars: np.ndarray
    stars_saturated: np.ndarray
    count: int
    background: float
    rms: float
    mask: np.ndarray
    objects: np.ndarray
    saturated: np.ndarray
    subtracted: np.ndarray

    def with_aperture(self, radius: float) -> StarDetection:
        """The same stars with fluxes in a circular aperture of ``radius`` px, re-sorted.

        Given a radius proportional to the sub's measured FWHM, every sub's fluxes are the
        same fraction of its stars' light, so flux ratios between a sharp and a blurry sub
        are unbiased (the detection's own aperture comes from isophotal half-light radii,
        which the isophote cuts shorter on a blurry sub).
        """
        if not np.isfinite(radius) or radius <= 0 or len(self.stars) == 0:
            return self
        x, y = self.stars[:, 0], self.stars[:, 1]
        flux, _, _ = sep.sum_circle(self.subtracted, x, y, radius, mask=self.mask, subpix=5)
        stars = np.column_stack([x, y, flux]).astype(np.float64)
        good = np.isfinite(flux) & (flux > 0)
        stars, flags = stars[good], self.stars_saturated[good]
        order = np.argsort(stars[:, 2])[::-1]
        return dataclasses.replace(self, stars=stars[order], stars_saturated=flags[order])


@dataclass(frozen=True)
class PSFStarChoice:
    """The stars chosen for PSF fits and why the other detections were not.

    Attributes
    ----------
    x, y
        Positions of the chosen stars (best exposed first within each cell of the grid).
    counts
        ``candidates`` (detections), ``saturated``, ``blended`` (deblended by sep or with
        a neighbour brighter than 2 % of the star inside three FWHM), ``edge`` (too near
        the frame edge or pixels without data), ``faint`` (peak below
        ``psf_min_peak_sigma``), ``chosen``.
    """

    x: np.ndarray
    y: np.ndarray
    counts: dict[str, int]


def detect_stars(
    image: np.ndarray, config: MeasurementConfig, *, saturation: float | None = None
) -> StarDetection:
    """Detect the stars of a mono image (NaN = no data) with windowed centroids and fluxes.

    Parameters
    ----------
    image
        Calibrated mono image.
    config
        Detection settings.
    saturation
        Saturation level of ``image`` (ADU after calibration), or None when unknown: then
        flat-topped cores alone mark saturated stars.
    """
    data, mask = _prepared(image)
    background = sep.Background(data, mask=mask, bw=64, bh=64, fw=3, fh=3)
    subtracted = data - background.back()
    rms = float(background.globalrms)
    sep.set_extract_pixstack(_SEP_PIXSTACK)
    objects = sep.extract(
        subtracted, config.detection_sigma, err=rms, mask=mask, minarea=config.min_area
    )
    objects = _without_cosmic_rays(objects)
    saturated = saturated_detections(data, objects, saturation, config.max_peak_fraction)
    stars, stars_saturated = _star_table(subtracted, objects, saturated, config.max_stars, mask)
    return StarDetection(
        stars=stars,
        stars_saturated=stars_saturated,
        count=int(len(objects)),
        background=float(background.globalback),
        rms=rms,
        mask=mask,
        objects=objects,
        saturated=saturated,
        subtracted=subtracted,
    )


def saturated_detections(
    data: np.ndarray, objects: np.ndarray, saturation: float | None, fraction: float
) -> np.ndarray:
    """Which detections have a saturated (or nearly saturated) core.

    A star is saturated when its brightest core pixel (3 x 3 around sep's peak pixel)
    reaches ``fraction`` of the ``saturation`` level, or when its core is a plateau: at
    least three of those nine pixels within 2 % of the brightest (an unsaturated star's
    neighbours of the peak are at most about 80 % of it), which also catches stars clipped
    at a level nobody recorded.
    """
    n = len(objects)
    if n == 0:
        return np.zeros(0, dtype=bool)
    rows, cols = data.shape
    yc = np.clip(objects["ycpeak"].astype(np.int64), 1, rows - 2)
    xc = np.clip(objects["xcpeak"].astype(np.int64), 1, cols - 2)
    offsets = np.arange(-1, 2)
    core = data[
        yc[:, None, None] + offsets[None, :, None], xc[:, None, None] + offsets[None, None, :]
    ]
    core = core.reshape(n, 9)
    peak = core.max(axis=1)
    level = np.median(data[:: max(1, rows // 64), :: max(1, cols // 64)])
    above = core - level
    plateau = np.count_nonzero(above >= _PLATEAU_FRACTION * (peak - level)[:, None], axis=1)
    saturated = plateau >= _PLATEAU_PIXELS
    if saturation is not None and np.isfinite(saturation):
        saturated |= peak >= fraction * saturation
    return saturated


def choose_psf_stars(
    detection: StarDetection, shape: tuple[int, int], config: MeasurementConfig
) -> PSFStarChoice:
    """Well-exposed, unsaturated, isolated stars away from edges, spread over the field.

    The candidates are every detection of ``detection.objects``; the chosen ones (at most
    ``config.psf_stars``) are taken round-robin from a 4 x 4 grid of the frame, best
    exposed (highest peak) first in each cell, so that the PSF measurement samples the
    whole field and no corner's optics dominate.
    """
    objects = detection.objects
    counts = {"candidates": int(len(objects))}
    if len(objects) == 0:
        return PSFStarChoice(np.zeros(0), np.zeros(0), {**counts, "chosen": 0})
    x, y = objects["x"], objects["y"]
    width = 2.35 * np.sqrt(np.maximum(objects["a"] * objects["b"], 0.0))
    typical = float(np.median(width[~detection.saturated])) if (~detection.saturated).any() else 3
    half = max(4.0, 2.0 * max(typical, 1.0)) + 1.0
    saturated = detection.saturated
    blended = _blended(objects, radius=max(6.0, 3.0 * typical))
    edge = _near_edge_or_no_data(x, y, half, shape, detection.mask)
    faint = objects["peak"] < config.psf_min_peak_sigma * detection.rms
    reasons = (("saturated", saturated), ("blended", blended), ("edge", edge), ("faint", faint))
    usable = np.ones(len(objects), dtype=bool)
    for name, flagged in reasons:
        counts[name] = int(np.count_nonzero(flagged & usable))
        usable &= ~flagged
    index = _spread_over_grid(np.flatnonzero(usable), objects, shape, config.psf_stars)
    counts["chosen"] = int(index.size)
    return PSFStarChoice(x[index].astype(np.float64), y[index].astype(np.float64), counts)


def _blended(objects: np.ndarray, *, radius: float) -> np.ndarray:
    """Detections deblended by sep, or with a neighbour above 2 % of their flux nearby."""
    merged = (objects["flag"] & sep.OBJ_MERGED) != 0
    points = np.column_stack([objects["x"], objects["y"]])
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    crowded = np.zeros(len(objects), dtype=bool)
    if len(pairs):
        flux = np.maximum(objects["flux"], 0.0)
        i, j = pairs[:, 0], pairs[:, 1]
        crowded[i[flux[j] > _NEIGHBOUR_FLUX * flux[i]]] = True
        crowded[j[flux[i] > _NEIGHBOUR_FLUX * flux[j]]] = True
    return merged | crowded


def _near_edge_or_no_data(
    x: np.ndarray, y: np.ndarray, half: float, shape: tuple[int, int], mask: np.ndarray
) -> np.ndarray:
    """Stars whose fitting stamp would leave the frame or touch a pixel without data."""
    rows, cols = shape
    near = (x < half) | (y < half) | (x > cols - 1 - half) | (y > rows - 1 - half)
    if mask.any():
        radius = int(np.ceil(half))
        for k in np.flatnonzero(~near):
            r, c = int(round(y[k])), int(round(x[k]))
            if mask[r - radius : r + radius + 1, c - radius : c + radius + 1].any():
                near[k] = True
    return near


def _spread_over_grid(
    usable: np.ndarray, objects: np.ndarray, shape: tuple[int, int], limit: int
) -> np.ndarray:
    """Up to ``limit`` of ``usable`` taken in turns from the cells of a 4 x 4 grid."""
    if usable.size == 0:
        return usable
    rows, cols = shape
    cell_x = np.minimum((objects["x"][usable] * _GRID_CELLS / cols).astype(int), _GRID_CELLS - 1)
    cell_y = np.minimum((objects["y"][usable] * _GRID_CELLS / rows).astype(int), _GRID_CELLS - 1)
    cell = cell_y * _GRID_CELLS + cell_x
    order = np.lexsort((-objects["peak"][usable], cell))  # by cell, brightest first
    ranked, cells = usable[order], cell[order]
    starts = np.searchsorted(cells, cells, side="left")
    turn = np.arange(cells.size) - starts  # rank of each star inside its cell
    picked = ranked[np.lexsort((cells, turn))]
    return picked[:limit]


def measure_frame(
    image: np.ndarray, config: MeasurementConfig, *, saturation: float | None = None
) -> FrameMeasurement:
    """Detect stars and measure one calibrated mono image (NaN = no data).

    ``saturation`` is the sub's saturation level after calibration (ADU), None if unknown.
    """
    detection = detect_stars(image, config, saturation=saturation)
    stars, mask, rms = detection.stars, detection.mask, detection.rms
    noise = float(mrs_noise(image))
    choice = choose_psf_stars(detection, image.shape, config)
    fits = fit_psf(image, choice.x, choice.y, model="moffat")
    good = fits.ok & np.isfinite(fits.signal) & (fits.signal > 0)
    detection = detection.with_aperture(_PHOTOMETRY_APERTURE_FWHM * _median(fits.fwhm[good]))
    stars = detection.stars
    m_star, _ = kweights.background_residual_estimates(np.where(mask, np.nan, image))
    weight_noise = noise if np.isfinite(noise) and noise > 0 else rms
    return FrameMeasurement(
        stars=stars,
        stars_saturated=detection.stars_saturated,
        star_count=detection.count,
        background=detection.background,
        noise=noise,
        fwhm=_median(fits.fwhm[good]),
        eccentricity=_median(fits.eccentricity[good]),
        snr=float(kweights.snr_weight(np.where(mask, np.nan, image), noise=weight_noise)),
        psf_signal_weight=_psf_signal_weight(fits, good, weight_noise, m_star),
        psf_snr=float(kweights.psf_snr(fits.signal[good], noise=weight_noise)),
        psf_stars=int(good.sum()),
        psf_area=_median(fits.signal_area[good]),
        psf_beta=_median(fits.beta[good]),
        m_star=float(m_star),
        saturation=float(saturation) if saturation is not None else float("nan"),
        psf_choice={**choice.counts, "fitted": int(good.sum())},
    )


def _psf_signal_weight(fits: PSFFits, good: np.ndarray, noise: float, m_star: float) -> float:
    if not good.any() or not np.isfinite(m_star) or m_star <= 0:
        return 0.0
    return float(
        kweights.psf_signal_weight(
            fits.signal[good], fits.signal_area[good], noise=noise, m_star=m_star
        )
    )


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def _prepared(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data = np.ascontiguousarray(image, dtype=np.float32)
    mask = ~np.isfinite(data)
    if mask.any():
        data = data.copy()
        data[mask] = np.nanmedian(data) if not mask.all() else 0.0
    return data, mask


def _without_cosmic_rays(objects: np.ndarray) -> np.ndarray:
    """Drop detections far sharper than stars (cosmic rays, hot-pixel residuals).

    A detection's sharpness is its peak over its total flux: about 0.1 for a star of FWHM
    2.5 px, 0.4 to 1 for a hit of one to a few pixels. Detections sharper than 0.3 are dropped
    when at least three detections are below that (a normally sampled field, where cosmic rays
    may outnumber the stars of a sparse field); otherwise (undersampled stars) the cut is at
    twice the first quartile of the sharpness.
    """
    if len(objects) < 3:
        return objects
    sharpness = objects["peak"] / np.maximum(objects["flux"], 1e-12)
    if np.count_nonzero(sharpness <= _SHARPNESS_CUT) >= 3:
        limit = _SHARPNESS_CUT
    else:
        limit = 2.0 * float(np.percentile(sharpness, 25))
    return objects[sharpness <= limit]


def _star_table(
    subtracted: np.ndarray,
    objects: np.ndarray,
    saturated: np.ndarray,
    max_stars: int,
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Windowed centroids and fluxes of the brightest clean detections, brightest first,
    and which of them are saturated."""
    if len(objects) == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=bool)
    clean_rows = (objects["flag"] & (sep.OBJ_MERGED | sep.OBJ_TRUNC | sep.APER_TRUNC)) == 0
    if np.count_nonzero(clean_rows) < 3:
        clean_rows = np.ones(len(objects), dtype=bool)
    clean, clipped = objects[clean_rows], saturated[clean_rows]
    order = np.argsort(clean["flux"])[::-1][:max_stars]
    clean, clipped = clean[order], clipped[order]
    radius, _ = sep.flux_radius(
        subtracted,
        clean["x"],
        clean["y"],
        6.0 * clean["a"],
        0.5,
        normflux=clean["flux"],
        subpix=5,
        mask=mask,
    )
    sigma = np.clip(2.0 / 2.35 * radius, 0.5, None)
    x, y, _ = sep.winpos(subtracted, clean["x"], clean["y"], sigma, mask=mask)
    flux = _aperture_flux(subtracted, x, y, radius, mask)
    stars = np.column_stack([x, y, flux]).astype(np.float64)
    good = np.all(np.isfinite(stars), axis=1) & (stars[:, 2] > 0)
    stars, clipped = stars[good], clipped[good]
    order = np.argsort(stars[:, 2])[::-1]
    return stars[order], clipped[order]


def _aperture_flux(
    subtracted: np.ndarray, x: np.ndarray, y: np.ndarray, radius: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Fluxes in one circular aperture (3x the median half-light radius).

    A fixed aperture measures the same fraction of every star's light whatever its SNR, so
    flux ratios between subs (transparency) are unbiased; isophotal fluxes are not. The
    background is sep's sigma-clipped background map (already subtracted), not a local
    annulus: an annulus mean picks up neighbouring stars, more of them the wider the PSF,
    which biased a blurry sub's fluxes low by 2-3 % against a sharp one in a dense field.
    """
    aperture = max(3.0, 3.0 * float(np.median(radius[np.isfinite(radius)])))
    flux, _, _ = sep.sum_circle(subtracted, x, y, aperture, mask=mask, subpix=5)
    return flux
