"""Frame selection and weights: rules that exclude subs, each exclusion with the rule and the
value, and the relative weight of every sub of a group.

Rules compare a sub's measurement with its own group (FWHM and star count relative to the
group median, eccentricity above the group median by a number of robust sigmas: a night whose
optics elongate every star loses only its outliers), optionally with absolute bounds
(``max_eccentricity``), and optionally its weight with the best sub's.

PSF Signal Weight and PSF SNR compare subs on common terms. PixInsight's estimators sum over
a sub's stars, so they depend on *which* stars each sub measured: a sharp sub saturates more
bright stars and is left with fainter ones, which would make it look worse. Here the group's
weights use the same stars for every sub, through their photometric flux ratio ``k`` to a
common reference sub (matched-star aperture photometry, saturated stars excluded) and each
sub's PSF area ``A`` (the median FWTM area of its chosen stars): with ``T = 1 / k`` the
transparency relative to the reference, the sums of PixInsight's formulas over one common
star list give ``PSFSW ~ T^2 / (A sigma M*)`` and ``PSF SNR ~ T^2 / sigma^2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config.models import (
    ApertureSNRWeighting,
    FormulaWeighting,
    NoiseWeighting,
    PSFSignalWeighting,
    PSFSNRWeighting,
    RegistrationConfig,
    SelectionConfig,
    Weighting,
)
from pipeline.errors import RegistrationError
from pipeline.kernels.weights import wbpp_formula_weight
from pipeline.stages.register import solve_transform

__all__ = ["exclusions", "provisional_flux_ratios", "sub_weights", "weight_exclusions"]

_METRIC_OF = {
    "psf_signal": "psf_signal_weight",
    "psf_snr": "psf_snr",
    "snr": "snr",
    "star_count": "star_count",
}

VERSION = "2"


def exclusions(metrics: Sequence[Mapping[str, Any]], config: SelectionConfig) -> list[str | None]:
    """The exclusion reason of every sub by the measurement rules (``None`` where it is kept).

    Parameters
    ----------
    metrics
        Per-sub measurements with ``fwhm``, ``eccentricity`` and ``star_count``.
    config
        The selection rules (``min_weight`` is applied by :func:`weight_exclusions`).
    """
    fwhm = np.array([_number(m.get("fwhm")) for m in metrics])
    stars = np.array([_number(m.get("star_count")) for m in metrics])
    group = _GroupStatistics(
        median_fwhm=_nanmedian(fwhm),
        median_stars=_nanmedian(stars),
        eccentricity=_robust_centre_and_sigma(
            np.array([_number(m.get("eccentricity")) for m in metrics])
        ),
    )
    reasons: list[str | None] = []
    for sub in metrics:
        found = _rule_failures(sub, config, group)
        reasons.append("; ".join(found) or None)
    return reasons


_MIN_ECCENTRICITY_SIGMA = 0.05


@dataclass(frozen=True)
class _GroupStatistics:
    """What the relative selection rules compare a sub with."""

    median_fwhm: float
    median_stars: float
    eccentricity: tuple[float, float]  # median, robust sigma


def _nanmedian(values: np.ndarray) -> float:
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def _robust_centre_and_sigma(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 MAD (at least 0.05) of the finite values."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    centre = float(np.median(finite))
    spread = 1.482602218505602 * float(np.median(np.abs(finite - centre)))
    return centre, max(spread, _MIN_ECCENTRICITY_SIGMA)


def weight_exclusions(weights: Sequence[float], config: SelectionConfig) -> list[str | None]:
    """Exclusion reasons by the ``min_weight`` rule (weights relative to the best sub)."""
    if config.min_weight is None:
        return [None] * len(weights)
    return [
        f"weight {w:.3f} below selection.min_weight {config.min_weight:g}"
        if w < config.min_weight
        else None
        for w in weights
    ]


def _rule_failures(
    sub: Mapping[str, Any], config: SelectionConfig, group: _GroupStatistics
) -> list[str]:
    found = []
    median_fwhm, median_stars = group.median_fwhm, group.median_stars
    fwhm = _number(sub.get("fwhm"))
    if config.max_fwhm_ratio is not None and fwhm > config.max_fwhm_ratio * median_fwhm:
        found.append(
            f"FWHM {fwhm:.2f} px above selection.max_fwhm_ratio {config.max_fwhm_ratio:g} x "
            f"the group median {median_fwhm:.2f} px"
        )
    eccentricity = _number(sub.get("eccentricity"))
    if config.max_eccentricity is not None and eccentricity > config.max_eccentricity:
        found.append(
            f"eccentricity {eccentricity:.2f} above selection.max_eccentricity "
            f"{config.max_eccentricity:g}"
        )
    centre, sigma = group.eccentricity
    if config.eccentricity_sigma is not None and eccentricity > centre + (
        config.eccentricity_sigma * sigma
    ):
        found.append(
            f"eccentricity {eccentricity:.2f} above the group median {centre:.2f} + "
            f"selection.eccentricity_sigma {config.eccentricity_sigma:g} x {sigma:.3f} "
            f"(robust sigma) = {centre + config.eccentricity_sigma * sigma:.2f}"
        )
    stars = _number(sub.get("star_count"))
    if config.min_star_ratio is not None and stars < config.min_star_ratio * median_stars:
        found.append(
            f"{stars:.0f} stars, fewer than selection.min_star_ratio {config.min_star_ratio:g} x "
            f"the group median {median_stars:.0f}"
        )
    return found


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def provisional_flux_ratios(
    star_tables: Sequence[np.ndarray],
    reference: int,
    config: RegistrationConfig,
    *,
    saturated: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Flux ratio (reference / sub, matched-star photometry) of every sub to one sub.

    Used to weigh a group's subs before registration (when the reference is yet to be
    chosen): the stars of each sub are matched to those of sub ``reference`` as registration
    does; ``saturated`` flags each table's saturated stars, left out of the photometry. A
    sub that cannot be matched gets NaN.
    """
    ratios = np.full(len(star_tables), np.nan)
    for index, stars in enumerate(star_tables):
        if index == reference:
            ratios[index] = 1.0
            continue
        flags = None if saturated is None else (saturated[index], saturated[reference])
        try:
            solution = solve_transform(stars, star_tables[reference], config, saturated=flags)
        except RegistrationError:
            continue
        ratios[index] = solution.flux_ratio
    return ratios


def sub_weights(
    metrics: Sequence[Mapping[str, Any]],
    weighting: Weighting,
    *,
    normalization_factors: Sequence[float] | None = None,
    flux_ratios: Sequence[float] | None = None,
) -> np.ndarray:
    """Relative integration weights of a group's subs (best = 1).

    Parameters
    ----------
    metrics
        Per-sub measurements.
    weighting
        The configured method. ``noise`` needs ``normalization_factors`` (the factor that puts
        each sub on the reference's signal scale): its weight is 1 / (noise x factor)^2.
    normalization_factors
        Per-sub signal normalization factors; without them ``noise`` falls back to PSF signal.
    flux_ratios
        Per-sub flux ratio to a common reference sub (reference / sub). With them PSF Signal
        Weight and PSF SNR compare the subs over one common star list (module notes); a sub
        whose ratio is unknown (NaN) is given the group's median transparency. Without them
        each sub's own PSF values are used.
    """
    if weighting.method == "none":
        return np.ones(len(metrics))
    common = _common_star_weights(metrics, weighting, flux_ratios)
    if common is not None:
        raw = common
    elif isinstance(weighting, NoiseWeighting) and normalization_factors is not None:
        noise = np.array([_number(m.get("noise")) for m in metrics])
        raw = 1.0 / np.square(noise * np.abs(np.asarray(normalization_factors, dtype=float)))
    elif isinstance(weighting, FormulaWeighting):
        raw = wbpp_formula_weight(
            np.array([_number(m.get("fwhm")) for m in metrics]),
            np.array([_number(m.get("eccentricity")) for m in metrics]),
            np.array([_number(m.get("snr")) for m in metrics]),
            fwhm_weight=weighting.fwhm,
            eccentricity_weight=weighting.eccentricity,
            snr_weight=weighting.snr,
            pedestal=weighting.pedestal,
        )
    else:
        key = _METRIC_OF.get(weighting.method, "psf_signal_weight")
        raw = np.array([_number(m.get(key)) for m in metrics])
    raw = np.where(np.isfinite(raw) & (raw > 0), raw, 0.0)
    return raw / raw.max() if raw.max() > 0 else np.ones(len(metrics))


def _common_star_weights(
    metrics: Sequence[Mapping[str, Any]], weighting: Weighting, flux_ratios: Sequence[float] | None
) -> np.ndarray | None:
    """PSF Signal Weight / PSF SNR / aperture SNR over a common star list (None: not one)."""
    common = PSFSignalWeighting | PSFSNRWeighting | ApertureSNRWeighting
    if flux_ratios is None or not isinstance(weighting, common):
        return None
    ratio = np.array([_number(r) for r in flux_ratios])
    noise = np.array([_number(m.get("noise")) for m in metrics])
    transparency = np.where(ratio > 0, 1.0 / ratio, np.nan)
    # a sub whose photometry failed (too few unsaturated matched stars) is taken as typical,
    # not dropped: its noise and PSF still weigh it
    known = np.isfinite(transparency)
    transparency[~known] = float(np.median(transparency[known])) if known.any() else 1.0
    if isinstance(weighting, PSFSNRWeighting):
        return transparency**2 / noise**2
    if isinstance(weighting, ApertureSNRWeighting):
        fwhm = np.array([_number(m.get("fwhm")) for m in metrics])
        beta = np.array([_number(m.get("psf_beta", MOFFAT_BETA)) for m in metrics])
        radius = weighting.aperture * _nanmedian(fwhm)
        return transparency**2 * moffat_enclosed(radius, fwhm, beta) / noise**2
    area = np.array([_number(m.get("psf_area")) for m in metrics])
    m_star = np.array([_number(m.get("m_star")) for m in metrics])
    if not np.isfinite(area).any() or not np.isfinite(m_star).any():
        return None  # measured by an older version: no PSF areas
    return transparency**2 / (area * noise * m_star)


MOFFAT_BETA = 3.5
"""Moffat exponent assumed for subs measured without one."""


def moffat_enclosed(radius: float, fwhm: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Fraction of a round Moffat PSF's light inside a circle of ``radius`` px.

    ``1 - (1 + (r / alpha)^2)^(1 - beta)`` with ``alpha = FWHM / (2 sqrt(2^(1/beta) - 1))``.
    """
    beta = np.where(np.isfinite(beta) & (beta > 1.0), beta, MOFFAT_BETA)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return 1.0 - (1.0 + (radius / alpha) ** 2) ** (1.0 - beta)
