"""Measurement stage: detect stars and measure background, noise, star shape and weights.

Star detection uses ``sep`` (Source Extractor as a library); FWHM and eccentricity come from
elliptical Moffat fits of the brightest unsaturated stars; the noise is the multiresolution
support (MRS) estimate; PSF Signal Weight and PSF SNR follow PixInsight's definitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sep

from pipeline.config.models import MeasurementConfig
from pipeline.kernels import weights as kweights
from pipeline.kernels.noise import mrs_noise
from pipeline.kernels.psf import PSFFits, fit_psf

__all__ = ["FrameMeasurement", "StarDetection", "central_noise", "detect_stars", "measure_frame"]

VERSION = "4"

_SEP_PIXSTACK = 3_000_000
_SHARPNESS_CUT = 0.3


@dataclass(frozen=True)
class FrameMeasurement:
    """What was measured on one calibrated sub.

    Attributes
    ----------
    stars
        (N, 3) array of x, y, flux of the brightest isolated stars, brightest first.
    background
        Global background level (ADU).
    noise
        Pixel-to-pixel Gaussian noise of the background (ADU).
    fwhm, eccentricity
        Medians over the PSF fits of the brightest stars (px, dimensionless).
    snr
        SubframeSelector's SNR weight, (average deviation / noise)².
    psf_signal_weight, psf_snr
        PixInsight's PSF Signal Weight and PSF SNR.
    psf_stars
        Number of stars whose PSF fit succeeded.
    """

    stars: np.ndarray
    star_count: int
    background: float
    noise: float
    fwhm: float
    eccentricity: float
    snr: float
    psf_signal_weight: float
    psf_snr: float
    psf_stars: int

    def metrics(self) -> dict[str, Any]:
        """The scalar metrics as a JSON-ready dict."""
        values = asdict(self)
        values.pop("stars")
        return {
            key: float(value) if isinstance(value, float) else value
            for key, value in values.items()
        }


def central_noise(image: np.ndarray, *, side: int = 1024) -> float:
    """MRS noise of the central ``side`` x ``side`` crop of a mono image (NaN = no data).

    Used on registered subs, whose per-pixel noise resampling has lowered (by about 15 %
    for Lanczos-3); the centre is covered by every sub and a crop keeps it cheap.
    """
    rows, cols = image.shape
    top, left = max(0, (rows - side) // 2), max(0, (cols - side) // 2)
    return float(mrs_noise(image[top : top + side, left : left + side]))


@dataclass(frozen=True)
class StarDetection:
    """Stars found on one mono image.

    Attributes
    ----------
    stars
        (N, 3) array of x, y, flux of the brightest isolated stars, brightest first.
    count
        Number of detections (cosmic rays excluded) before the cut to the brightest.
    background, rms
        sep's global background level and background RMS (ADU).
    mask
        True where the image has no data (NaN).
    """

    stars: np.ndarray
    count: int
    background: float
    rms: float
    mask: np.ndarray


def detect_stars(image: np.ndarray, config: MeasurementConfig) -> StarDetection:
    """Detect the stars of a mono image (NaN = no data) with windowed centroids and fluxes."""
    data, mask = _prepared(image)
    background = sep.Background(data, mask=mask, bw=64, bh=64, fw=3, fh=3)
    subtracted = data - background.back()
    rms = float(background.globalrms)
    sep.set_extract_pixstack(_SEP_PIXSTACK)
    objects = sep.extract(
        subtracted, config.detection_sigma, err=rms, mask=mask, minarea=config.min_area
    )
    objects = _without_cosmic_rays(objects)
    stars = _star_table(subtracted, objects, config.max_stars, mask)
    return StarDetection(
        stars=stars,
        count=int(len(objects)),
        background=float(background.globalback),
        rms=rms,
        mask=mask,
    )


def measure_frame(image: np.ndarray, config: MeasurementConfig) -> FrameMeasurement:
    """Detect stars and measure one calibrated mono image (NaN = no data)."""
    detection = detect_stars(image, config)
    stars, mask, rms = detection.stars, detection.mask, detection.rms
    noise = float(mrs_noise(image))
    fits = _psf_fits(image, stars, config)
    good = fits.ok & np.isfinite(fits.signal) & (fits.signal > 0)
    m_star, _ = kweights.background_residual_estimates(np.where(mask, np.nan, image))
    weight_noise = noise if np.isfinite(noise) and noise > 0 else rms
    return FrameMeasurement(
        stars=stars,
        star_count=detection.count,
        background=detection.background,
        noise=noise,
        fwhm=_median(fits.fwhm[good]),
        eccentricity=_median(fits.eccentricity[good]),
        snr=float(kweights.snr_weight(np.where(mask, np.nan, image), noise=weight_noise)),
        psf_signal_weight=_psf_signal_weight(fits, good, weight_noise, m_star),
        psf_snr=float(kweights.psf_snr(fits.signal[good], noise=weight_noise)),
        psf_stars=int(good.sum()),
    )


def _psf_fits(image: np.ndarray, stars: np.ndarray, config: MeasurementConfig) -> PSFFits:
    """Moffat fits of the brightest stars (up to ``config.psf_stars``)."""
    chosen = stars[: config.psf_stars]
    return fit_psf(image, chosen[:, 0], chosen[:, 1], model="moffat")


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
    subtracted: np.ndarray, objects: np.ndarray, max_stars: int, mask: np.ndarray
) -> np.ndarray:
    """Windowed centroids and fluxes of the brightest clean detections, brightest first."""
    if len(objects) == 0:
        return np.zeros((0, 3))
    clean = objects[(objects["flag"] & (sep.OBJ_MERGED | sep.OBJ_TRUNC | sep.APER_TRUNC)) == 0]
    clean = clean if len(clean) >= 3 else objects
    clean = clean[np.argsort(clean["flux"])[::-1][:max_stars]]
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
    stars = stars[np.all(np.isfinite(stars), axis=1) & (stars[:, 2] > 0)]
    return stars[np.argsort(stars[:, 2])[::-1]]


def _aperture_flux(
    subtracted: np.ndarray, x: np.ndarray, y: np.ndarray, radius: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Fluxes in one circular aperture (3x the median half-light radius) with a local annulus.

    A fixed aperture measures the same fraction of every star's light whatever its SNR, so
    flux ratios between subs (transparency) are unbiased; isophotal fluxes are not.
    """
    aperture = max(3.0, 3.0 * float(np.median(radius[np.isfinite(radius)])))
    flux, _, _ = sep.sum_circle(
        subtracted, x, y, aperture, mask=mask, bkgann=(aperture + 2.0, aperture + 6.0), subpix=5
    )
    return flux
