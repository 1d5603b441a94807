"""Registration stage: find the transform of a sub onto the reference and resample it.

Star lists come from the measurement stage (no re-detection). Triangle matching by
``astroalign`` gives a first transform from the brightest stars; it is then refined by a
least-squares fit over every star pair matched within ``match_radius``.
"""

from __future__ import annotations

from dataclasses import dataclass

import astroalign
import numpy as np
from scipy.spatial import cKDTree
from skimage.transform import estimate_transform

from pipeline.config.models import RegistrationConfig
from pipeline.errors import RegistrationError
from pipeline.kernels.transform import warp_image

__all__ = ["RegistrationSolution", "reference_score", "solve_transform", "warp_to_reference"]

VERSION = "1"

_MIN_MATCHES = 4


@dataclass(frozen=True)
class RegistrationSolution:
    """A sub's transform onto the reference and how well it is supported.

    Attributes
    ----------
    matrix
        3x3 matrix mapping the sub's pixel coordinates (x, y, 1) to the reference's.
    matched
        Number of star pairs used in the final fit.
    rms
        Root-mean-square residual of the matched pairs (px).
    flux_ratio
        Median ratio of reference to sub flux over the matched stars: the sub's signal scale
        relative to the reference (transparency, exposure, airmass).
    """

    matrix: np.ndarray
    matched: int
    rms: float
    flux_ratio: float = 1.0


def solve_transform(
    stars: np.ndarray, reference_stars: np.ndarray, config: RegistrationConfig
) -> RegistrationSolution:
    """Find the transform mapping ``stars`` (x, y, flux rows) onto ``reference_stars``.

    Raises
    ------
    RegistrationError
        If too few stars, no asterism match, or too few pairs after refinement.
    """
    if len(stars) < 3 or len(reference_stars) < 3:
        raise RegistrationError(
            f"too few stars to register ({len(stars)} in the sub, {len(reference_stars)} in the "
            "reference); lower measurement.detection_sigma or check focus and clouds"
        )
    count = config.max_control_points
    try:
        initial, _ = astroalign.find_transform(
            stars[:count, :2], reference_stars[:count, :2], max_control_points=count
        )
    except (astroalign.MaxIterError, ValueError, TypeError) as exc:
        raise RegistrationError(f"no star pattern matched the reference ({exc})") from exc
    matrix = np.asarray(initial.params, dtype=np.float64)
    for radius in (config.match_radius * 2, config.match_radius, config.match_radius):
        sub_index, ref_index = _pairs(stars[:, :2], reference_stars[:, :2], matrix, radius)
        if len(sub_index) < _MIN_MATCHES:
            raise RegistrationError(
                f"only {len(sub_index)} stars matched within {radius:g} px after the first fit; "
                "raise registration.match_radius"
            )
        source, target = stars[sub_index, :2], reference_stars[ref_index, :2]
        matrix = estimate_transform(config.transform, source, target).params
    residual = _apply(matrix, source) - target
    rms = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))
    ratio = _flux_ratio(stars[sub_index, 2], reference_stars[ref_index, 2])
    return RegistrationSolution(matrix=matrix, matched=int(len(source)), rms=rms, flux_ratio=ratio)


def _flux_ratio(sub_flux: np.ndarray, reference_flux: np.ndarray) -> float:
    good = (sub_flux > 0) & (reference_flux > 0)
    if good.sum() < 3:
        return float("nan")
    return float(np.exp(np.median(np.log(reference_flux[good] / sub_flux[good]))))


def warp_to_reference(
    image: np.ndarray,
    matrix: np.ndarray,
    *,
    reference_shape: tuple[int, int],
    interpolation: str,
) -> np.ndarray:
    """Resample a sub onto the reference grid; pixels with no data become NaN."""
    to_input = np.linalg.inv(matrix)
    return warp_image(image, to_input, output_shape=reference_shape, interpolation=interpolation)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    homogeneous = np.column_stack([points, np.ones(len(points))]) @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _pairs(
    source: np.ndarray, target: np.ndarray, matrix: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of one-to-one star pairs (sub index, reference index) within ``radius``."""
    projected = _apply(matrix, source)
    distance, index = cKDTree(target).query(projected, distance_upper_bound=radius)
    found = np.isfinite(distance)
    # keep one-to-one pairs only
    index_found = index[found]
    unique, counts = np.unique(index_found, return_counts=True)
    single = np.isin(index_found, unique[counts == 1])
    keep = np.flatnonzero(found)[single]
    return keep, index[keep]


def reference_score(metrics: dict) -> float:
    """Quality score used to pick the reference sub: many bright, sharp, round stars.

    ``star_count × snr / fwhm²`` favours transparent, well-focused subs; a cloudy or blurred
    sub scores low.
    """
    fwhm = metrics.get("fwhm") or float("nan")
    if not np.isfinite(fwhm) or fwhm <= 0:
        return 0.0
    return float(metrics.get("star_count", 0) * max(metrics.get("snr", 0.0), 0.0) / fwhm**2)
