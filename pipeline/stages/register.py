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

from pipeline.config.models import RegistrationConfig
from pipeline.errors import RegistrationError
from pipeline.kernels.transform import warp_image

__all__ = ["RegistrationSolution", "fit_transform", "solve_transform", "warp_to_reference"]

VERSION = "4"

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
    stars: np.ndarray,
    reference_stars: np.ndarray,
    config: RegistrationConfig,
    *,
    saturated: tuple[np.ndarray, np.ndarray] | None = None,
) -> RegistrationSolution:
    """Find the transform mapping ``stars`` (x, y, flux rows) onto ``reference_stars``.

    ``saturated`` flags, per star of each table, the stars whose flux is clipped: they
    help the match (the brightest stars are the same in every sub, saturated or not) but
    not the photometric flux ratio.

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
    matrix = _initial_transform(stars, reference_stars, config.max_control_points)
    for radius in (config.match_radius * 2, config.match_radius, config.match_radius):
        sub_index, ref_index = _pairs(stars[:, :2], reference_stars[:, :2], matrix, radius)
        if len(sub_index) < _MIN_MATCHES:
            raise RegistrationError(
                f"only {len(sub_index)} stars matched within {radius:g} px after the first fit; "
                "raise registration.match_radius"
            )
        source, target = stars[sub_index, :2], reference_stars[ref_index, :2]
        weights = _centroid_weights(stars[sub_index, 2], reference_stars[ref_index, 2])
        matrix = fit_transform(config.transform, source, target, weights)
        keep = _inliers(_apply(matrix, source) - target)
        if keep.sum() >= _MIN_MATCHES and not keep.all():
            sub_index, ref_index = sub_index[keep], ref_index[keep]
            source, target, weights = source[keep], target[keep], weights[keep]
            matrix = fit_transform(config.transform, source, target, weights)
    residual = _apply(matrix, source) - target
    rms = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))
    photometric = np.ones(len(sub_index), dtype=bool)
    if saturated is not None:
        photometric = ~(np.asarray(saturated[0], bool)[sub_index])
        photometric &= ~(np.asarray(saturated[1], bool)[ref_index])
    ratio = _flux_ratio(
        stars[sub_index[photometric], 2], reference_stars[ref_index[photometric], 2]
    )
    return RegistrationSolution(matrix=matrix, matched=int(len(source)), rms=rms, flux_ratio=ratio)


def fit_transform(
    model: str, source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted least-squares transform mapping ``source`` points onto ``target`` points.

    Similarity (``x' = a x - b y + tx``, ``y' = b x + a y + ty``) and affine models are linear
    in their parameters, so one weighted linear solve gives the exact optimum. The homography
    is solved by the normalised direct linear transform (Hartley & Zisserman, 2003, 4.4), also
    weighted.

    Returns
    -------
    numpy.ndarray
        The 3x3 matrix.
    """
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64)
    if model == "homography":
        return _fit_homography(source, target, w)
    x, y = source[:, 0], source[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    if model == "similarity":
        design = np.vstack(
            [
                np.column_stack([x, -y, one, zero]),
                np.column_stack([y, x, zero, one]),
            ]
        )
    elif model == "affine":
        design = np.vstack(
            [
                np.column_stack([x, y, one, zero, zero, zero]),
                np.column_stack([zero, zero, zero, x, y, one]),
            ]
        )
    else:
        raise ValueError(
            f"transform model {model!r} is not supported; use similarity, affine or homography"
        )
    params = _weighted_lstsq(design, np.concatenate([target[:, 0], target[:, 1]]), w)
    if model == "similarity":
        a, b, tx, ty = params
        return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])
    return np.vstack([params.reshape(2, 3), [0.0, 0.0, 1.0]])


def _weighted_lstsq(design: np.ndarray, rhs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    root = np.sqrt(np.concatenate([weights, weights]))
    params, *_ = np.linalg.lstsq(design * root[:, None], rhs * root, rcond=None)
    return params


def _normalising(points: np.ndarray) -> np.ndarray:
    centre = points.mean(axis=0)
    scale = np.sqrt(2.0) / max(float(np.mean(np.hypot(*(points - centre).T))), 1e-12)
    return np.array(
        [[scale, 0.0, -scale * centre[0]], [0.0, scale, -scale * centre[1]], [0.0, 0.0, 1.0]]
    )


def _fit_homography(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    if len(source) < 4:
        raise RegistrationError(f"a homography needs at least 4 matched stars, got {len(source)}")
    norm_source, norm_target = _normalising(source), _normalising(target)
    s, t = _apply(norm_source, source), _apply(norm_target, target)
    x, y, u, v = s[:, 0], s[:, 1], t[:, 0], t[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    design = np.vstack(
        [
            np.column_stack([x, y, one, zero, zero, zero, -x * u, -y * u]),
            np.column_stack([zero, zero, zero, x, y, one, -x * v, -y * v]),
        ]
    )
    params = _weighted_lstsq(design, np.concatenate([u, v]), weights)
    normalised = np.append(params, 1.0).reshape(3, 3)
    matrix = np.linalg.inv(norm_target) @ normalised @ norm_source
    return matrix / matrix[2, 2]


def _centroid_weights(sub_flux: np.ndarray, reference_flux: np.ndarray) -> np.ndarray:
    """Inverse centroid variance, up to a constant: SNR² of the fainter of the two stars.

    With F the flux and F0 the median flux standing in for the background term,
    SNR² ∝ F² / (F + F0): bright stars weigh by flux, faint ones by flux squared.
    """
    flux = np.clip(
        np.minimum(sub_flux / np.median(sub_flux), reference_flux / np.median(reference_flux)),
        1e-6,
        None,
    )
    return flux**2 / (flux + 1.0)


def _inliers(residual: np.ndarray) -> np.ndarray:
    """Pairs whose residual is within 3 robust sigmas (at least 0.05 px)."""
    distance = np.hypot(residual[:, 0], residual[:, 1])
    limit = max(3.0 * 1.4826 * float(np.median(distance)), 0.05)
    return distance <= limit


def _initial_transform(stars: np.ndarray, reference_stars: np.ndarray, limit: int) -> np.ndarray:
    """Triangle matching on the brightest stars of both lists.

    When one list is much shorter (a blurred or cloudy sub detects only its brightest stars),
    the other is cut to a similar brightness range first, so the triangles can agree.
    """
    errors = []
    for n_sub, n_ref in _control_point_counts(len(stars), len(reference_stars), limit):
        try:
            transform, _ = astroalign.find_transform(
                stars[:n_sub, :2], reference_stars[:n_ref, :2], max_control_points=limit
            )
        except (astroalign.MaxIterError, ValueError, TypeError) as exc:
            errors.append(f"{n_sub}/{n_ref} stars: {exc}")
            continue
        return np.asarray(transform.params, dtype=np.float64)
    raise RegistrationError("no star pattern matched the reference (" + "; ".join(errors) + ")")


def _control_point_counts(n_sub: int, n_ref: int, limit: int) -> list[tuple[int, int]]:
    n_sub, n_ref = min(n_sub, limit), min(n_ref, limit)
    fewest = min(n_sub, n_ref)
    attempts = [(n_sub, n_ref)]
    for factor in (1.5, 1.0, 2.0):
        cut = max(3, int(round(fewest * factor)))
        attempts.append((min(n_sub, cut), min(n_ref, cut)))
    unique: list[tuple[int, int]] = []
    for attempt in attempts:
        if attempt not in unique:
            unique.append(attempt)
    return unique


_PHOTOMETRY_STARS = 100


def _flux_ratio(sub_flux: np.ndarray, reference_flux: np.ndarray) -> float:
    """Median flux ratio (reference / sub) of the brightest 100 matched pairs.

    Bright stars only: a faint star's flux carries the background's error, which grows with
    the PSF's width (more of the wings are taken for background), so fainter pairs would
    bias a blurry sub's ratio.
    """
    good = np.flatnonzero((sub_flux > 0) & (reference_flux > 0))
    if good.size < 3:
        return float("nan")
    brightest = good[np.argsort(reference_flux[good])[::-1][:_PHOTOMETRY_STARS]]
    return float(np.exp(np.median(np.log(reference_flux[brightest] / sub_flux[brightest]))))


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
