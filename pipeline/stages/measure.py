"""Measurement stage: detect stars and measure background, noise and star shape of a sub.

Star detection and photometry use ``sep`` (Source Extractor as a library).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sep

from pipeline.config.models import MeasurementConfig
from pipeline.kernels.stats import background_noise

__all__ = ["FrameMeasurement", "measure_frame"]

VERSION = "1"

_FWHM_PER_HALF_LIGHT_RADIUS = 2.0  # exact for a Gaussian profile
_SEP_PIXSTACK = 3_000_000
_MIN_SHARPNESS_CUT = 0.35


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
        Medians over the measured stars (px, dimensionless).
    snr
        Median star flux over its noise, a quick quality indicator.
    """

    stars: np.ndarray
    star_count: int
    background: float
    noise: float
    fwhm: float
    eccentricity: float
    snr: float

    def metrics(self) -> dict[str, Any]:
        """The scalar metrics as a JSON-ready dict."""
        values = asdict(self)
        values.pop("stars")
        return {
            key: float(value) if isinstance(value, float) else value
            for key, value in values.items()
        }


def measure_frame(image: np.ndarray, config: MeasurementConfig) -> FrameMeasurement:
    """Detect stars and measure one calibrated mono image (NaN = no data)."""
    data, mask = _prepared(image)
    background = sep.Background(data, mask=mask, bw=64, bh=64, fw=3, fh=3)
    subtracted = data - background.back()
    rms = float(background.globalrms)
    sep.set_extract_pixstack(_SEP_PIXSTACK)
    objects = sep.extract(
        subtracted, config.detection_sigma, err=rms, mask=mask, minarea=config.min_area
    )
    stars, fwhm, eccentricity = _star_table(subtracted, objects, config.max_stars, mask)
    noise = float(background_noise(np.where(mask, np.nan, image)))
    snr = (
        float(np.median(stars[:, 2]) / (noise * np.sqrt(np.pi) * max(fwhm, 1.0)))
        if len(stars)
        else 0.0
    )
    return FrameMeasurement(
        stars=stars,
        star_count=int(len(objects)),
        background=float(background.globalback),
        noise=noise,
        fwhm=fwhm,
        eccentricity=eccentricity,
        snr=snr,
    )


def _prepared(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data = np.ascontiguousarray(image, dtype=np.float32)
    mask = ~np.isfinite(data)
    if mask.any():
        data = data.copy()
        data[mask] = np.nanmedian(data) if not mask.all() else 0.0
    return data, mask


def _without_cosmic_rays(objects: np.ndarray) -> np.ndarray:
    """Drop detections far sharper than stars (cosmic rays, hot-pixel residuals).

    A detection's sharpness is its peak over its total flux. Stars share one PSF, so their
    sharpness clusters at low values; a hit of one to a few pixels is several times sharper.
    The cut is at twice the first quartile (never below 0.35, which keeps well-sampled stars
    of FWHM down to about 1.3 px).
    """
    if len(objects) < 3:
        return objects
    sharpness = objects["peak"] / np.maximum(objects["flux"], 1e-12)
    limit = max(_MIN_SHARPNESS_CUT, 2.0 * float(np.percentile(sharpness, 25)))
    return objects[sharpness <= limit]


def _star_table(
    subtracted: np.ndarray, objects: np.ndarray, max_stars: int, mask: np.ndarray
) -> tuple[np.ndarray, float, float]:
    if len(objects) == 0:
        return np.zeros((0, 3)), float("nan"), float("nan")
    clean = objects[(objects["flag"] & (sep.OBJ_MERGED | sep.OBJ_TRUNC | sep.APER_TRUNC)) == 0]
    clean = clean if len(clean) >= 3 else objects
    clean = _without_cosmic_rays(clean)
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
    ratio = np.clip(clean["b"] / np.maximum(clean["a"], 1e-6), 0, 1)
    stars = np.column_stack([x, y, clean["flux"]]).astype(np.float64)
    good = np.all(np.isfinite(stars), axis=1)
    fwhm = (
        float(np.median(_FWHM_PER_HALF_LIGHT_RADIUS * radius[good])) if good.any() else float("nan")
    )
    eccentricity = float(np.median(np.sqrt(1.0 - ratio**2)))
    return stars[good], fwhm, eccentricity
