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
from pipeline.kernels.localnorm import background_grid

__all__ = ["LocalNormalization", "Normalization", "local_normalization", "normalize_subs"]

VERSION = "2"


@dataclass(frozen=True)
class Normalization:
    """The linear map of one sub, per channel: ``v'_c = v_c * factor[c] + offset[c]``."""

    factor: tuple[float, ...]
    offset: tuple[float, ...]


def _dispersion_factors(dispersions, shape: tuple[int, int], reference_index: int) -> np.ndarray:
    if dispersions is None or any(d is None for d in dispersions):
        raise ValueError(
            "normalization.scale: dispersion needs the dispersion of every registered sub; "
            "re-run registration (clear work/register) or use scale: photometric"
        )
    spread = np.asarray(dispersions, dtype=np.float64).reshape(shape)
    valid = np.isfinite(spread) & (spread > 0)
    factors = np.where(valid, spread[reference_index] / np.where(valid, spread, 1.0), 1.0)
    return factors


@dataclass(frozen=True)
class LocalNormalization:
    """PixInsight-style local normalization of one sub: ``v'_c = factor[c] * v_c + A0_c(x, y)``.

    Attributes
    ----------
    factor
        Global scale per channel (from matched-star photometry).
    grids
        Per channel, the node grid of the smooth background model ``A0`` (see
        :mod:`pipeline.kernels.localnorm`).
    shape
        (rows, cols) of the full image the grids describe.
    """

    factor: tuple[float, ...]
    grids: tuple[np.ndarray, ...]
    shape: tuple[int, int]


def normalize_subs(
    locations: Sequence[Sequence[float] | float],
    signal_ratios: Sequence[float],
    reference_index: int,
    config: NormalizationConfig,
    *,
    dispersions: Sequence[Sequence[float] | float | None] | None = None,
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
    config
        The method (additive + scaling, additive, multiplicative, none) and the source of
        the scale (photometric, or dispersion).
    dispersions
        Robust dispersion (MAD-sigma) of each registered sub per channel; needed for
        ``scale: dispersion``, whose factor is the reference's dispersion over the sub's.
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
        if config.scale == "dispersion":
            factors = _dispersion_factors(dispersions, location.shape, reference_index)
        else:
            factors = np.repeat(
                (ratio / ratio[reference_index])[:, None], location.shape[1], axis=1
            )
        offsets = ref_location - location * factors
    return [
        Normalization(tuple(map(float, f)), tuple(map(float, o)))
        for f, o in zip(factors, offsets, strict=True)
    ]


def local_normalization(
    reference: np.ndarray, sub: np.ndarray, *, factor: Sequence[float], scale: int
) -> LocalNormalization:
    """Local normalization of a registered sub to the LN reference.

    The global scale ``factor`` (per channel, from matched-star photometry) matches the
    sub's signal to the reference; the smooth model of ``reference - factor * sub`` at
    ``scale`` pixels is the local offset ``A0(x, y)``, so ``factor * sub + A0`` has the
    reference's background, gradients included, and its brightness.

    Parameters
    ----------
    reference, sub
        (rows, cols) or (channels, rows, cols) images on the same grid; NaN is no data.
    factor
        Global scale per channel (one value applies to every channel).
    scale
        Smallest structure (px) the background model follows.
    """
    if reference.shape != sub.shape:
        raise ValueError(
            f"LN reference shape {reference.shape} differs from the sub's {sub.shape}; "
            "both must be registered to the same grid"
        )
    planes_ref = reference[None] if reference.ndim == 2 else reference
    planes_sub = sub[None] if sub.ndim == 2 else sub
    factors = tuple(float(factor[min(c, len(factor) - 1)]) for c in range(planes_sub.shape[0]))
    grids = tuple(
        background_grid(ref - np.float32(f) * plane, scale=scale)
        for ref, plane, f in zip(planes_ref, planes_sub, factors, strict=True)
    )
    return LocalNormalization(factors, grids, (int(sub.shape[-2]), int(sub.shape[-1])))
