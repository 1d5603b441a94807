"""Frame selection: rules that exclude subs, each exclusion with the rule and the value.

Rules compare a sub's measurement with its group (FWHM and star count relative to the group
median) or with absolute bounds (eccentricity), and optionally its weight with the best sub's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.config.models import (
    FormulaWeighting,
    NoiseWeighting,
    SelectionConfig,
    Weighting,
)
from pipeline.kernels.weights import wbpp_formula_weight

__all__ = ["exclusions", "sub_weights", "weight_exclusions"]

_METRIC_OF = {
    "psf_signal": "psf_signal_weight",
    "psf_snr": "psf_snr",
    "snr": "snr",
    "star_count": "star_count",
}

VERSION = "1"


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
    median_fwhm = float(np.nanmedian(fwhm)) if np.isfinite(fwhm).any() else np.nan
    median_stars = float(np.nanmedian(stars)) if np.isfinite(stars).any() else np.nan
    reasons: list[str | None] = []
    for sub in metrics:
        found = _rule_failures(sub, config, median_fwhm, median_stars)
        reasons.append("; ".join(found) or None)
    return reasons


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
    sub: Mapping[str, Any], config: SelectionConfig, median_fwhm: float, median_stars: float
) -> list[str]:
    found = []
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


def sub_weights(
    metrics: Sequence[Mapping[str, Any]],
    weighting: Weighting,
    *,
    normalization_factors: Sequence[float] | None = None,
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
    """
    if weighting.method == "none":
        return np.ones(len(metrics))
    if isinstance(weighting, NoiseWeighting) and normalization_factors is not None:
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
