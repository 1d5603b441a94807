"""Frame selection: rules that exclude subs, each exclusion with the rule and the value.

Rules compare a sub's measurement with its group (FWHM and star count relative to the group
median) or with absolute bounds (eccentricity), and optionally its weight with the best sub's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.config.models import SelectionConfig

__all__ = ["exclusions"]

VERSION = "1"


def exclusions(
    metrics: Sequence[Mapping[str, Any]],
    config: SelectionConfig,
    *,
    weights: Sequence[float] | None = None,
) -> list[str | None]:
    """The exclusion reason of every sub (``None`` where it is kept).

    Parameters
    ----------
    metrics
        Per-sub measurements with ``fwhm``, ``eccentricity`` and ``star_count``.
    config
        The selection rules.
    weights
        Relative weights (best = 1); only needed for the ``min_weight`` rule.
    """
    fwhm = np.array([_number(m.get("fwhm")) for m in metrics])
    stars = np.array([_number(m.get("star_count")) for m in metrics])
    median_fwhm = float(np.nanmedian(fwhm)) if np.isfinite(fwhm).any() else np.nan
    median_stars = float(np.nanmedian(stars)) if np.isfinite(stars).any() else np.nan
    reasons: list[str | None] = []
    for index, sub in enumerate(metrics):
        found = _rule_failures(sub, config, median_fwhm, median_stars)
        if config.min_weight is not None and weights is not None and weights[index] < config.min_weight:
            found.append(f"weight {weights[index]:.3f} below selection.min_weight {config.min_weight:g}")
        reasons.append("; ".join(found) or None)
    return reasons


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
