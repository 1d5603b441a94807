"""Normalization stage: per-sub linear maps that put every sub on the reference's scale.

Each sub i gets ``v' = (v - location_i) * factor_i + location_ref`` (additive + scaling),
or the additive / multiplicative special cases. The scale factor is the sub's signal scale
relative to the reference, measured by photometry of the stars matched during registration
(a cloudy sub's stars are fainter, so its factor is larger); dispersion-based scale estimates
would mistake noise for signal. Weights follow from the normalized noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.config.models import NormalizationConfig

__all__ = ["Normalization", "normalize_subs"]

VERSION = "1"


@dataclass(frozen=True)
class Normalization:
    """The linear map of one sub, per channel: ``v'_c = v_c * factor[c] + offset[c]``."""

    factor: tuple[float, ...]
    offset: tuple[float, ...]


def normalize_subs(
    locations: Sequence[Sequence[float] | float],
    signal_ratios: Sequence[float],
    reference_index: int,
    config: NormalizationConfig,
) -> list[Normalization]:
    """Normalization of every sub relative to the reference sub.

    Parameters
    ----------
    locations
        Robust location (median) of each registered sub, one value per channel.
    signal_ratios
        Reference signal over sub signal (e.g. matched-star flux ratio); 1 for the reference.
        One ratio for all channels keeps each sub's colour balance.
    reference_index
        Index of the reference sub.
    """
    location = np.asarray(locations, dtype=np.float64).reshape(len(signal_ratios), -1)
    ratio = np.asarray(signal_ratios, dtype=np.float64)
    ratio = np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0)
    ref_location = location[reference_index]
    if config.method == "none":
        factors, offsets = np.ones_like(location), np.zeros_like(location)
    elif config.method == "additive":
        factors, offsets = np.ones_like(location), ref_location - location
    elif config.method == "multiplicative":
        factors = ref_location / np.where(location == 0, np.nan, location)
        offsets = np.zeros_like(location)
    else:
        factors = np.repeat((ratio / ratio[reference_index])[:, None], location.shape[1], axis=1)
        offsets = ref_location - location * factors
    return [
        Normalization(tuple(map(float, f)), tuple(map(float, o)))
        for f, o in zip(factors, offsets, strict=True)
    ]
