"""Integration stage: normalize, reject and average a band of registered subs.

The engine feeds bands of rows with the sub axis whole; this module never sees files.
Sigma and winsorized sigma clipping (and no rejection) run as one compiled pass per pixel
that rejects and averages without building masks; the other methods build the rejection
masks with their kernels and then average what survives. Either way every pixel depends
only on its own samples, so any banding of the image gives bit-identical masters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.config.models import (
    NoRejection,
    Rejection,
    SigmaClipRejection,
    WinsorizedSigmaRejection,
)
from pipeline.kernels import _clip_numba as clip
from pipeline.kernels.combine import MAX_FRAMES
from pipeline.kernels.localnorm import evaluate_background
from pipeline.stages.normalize import LocalNormalization, Normalization
from pipeline.stages.rejection import rejection_masks, resolve_rejection

__all__ = [
    "IntegratedBand",
    "autocrop_box",
    "integrate_band",
    "is_compiled",
    "resolve_rejection",
]

VERSION = "2"


@dataclass(frozen=True)
class IntegratedBand:
    """A band of the master and its diagnostics.

    Attributes
    ----------
    image
        Weighted mean of the surviving pixels (NaN where no sub has data), float32.
    count
        Number of subs contributing to each pixel.
    low, high
        Number of pixels rejected low / high per pixel.
    noise
        Noise estimate of the master per pixel: ``sqrt(sum w_i^2 s_i^2) / sum w_i`` over
        the contributing subs, ``s_i`` the normalized noise of sub i.
    rejected_per_sub
        (N, 2) counts of low and high rejected pixels of each sub in this band.
    """

    image: np.ndarray
    count: np.ndarray
    low: np.ndarray
    high: np.ndarray
    noise: np.ndarray
    rejected_per_sub: np.ndarray


_COMPILED = {
    NoRejection: clip.METHOD_NONE,
    SigmaClipRejection: clip.METHOD_SIGMA,
    WinsorizedSigmaRejection: clip.METHOD_WINSORIZED,
}


def is_compiled(rejection: Rejection, frames: int) -> bool:
    """Whether ``rejection`` of ``frames`` subs runs as the fused compiled pass (no masks)."""
    return type(resolve_rejection(rejection, frames)) in _COMPILED


def integrate_band(
    stack: np.ndarray,
    *,
    normalizations: Sequence[Normalization | LocalNormalization],
    weights: np.ndarray,
    rejection: Rejection,
    sub_noise: Sequence[float] | None = None,
    rows: slice | None = None,
    overwrite: bool = False,
) -> IntegratedBand:
    """Normalize each sub of a band, reject outliers, and take the weighted mean.

    Parameters
    ----------
    stack
        (N, rows, cols) or (N, channels, rows, cols) float32 band of the registered subs;
        NaN is no data (outside a sub's footprint).
    normalizations
        Per sub: a global linear map, or a local normalization (whose background model
        is evaluated on this band's rows).
    weights
        One weight per sub (>= 0).
    rejection
        The configured rejection method (``auto`` resolved by the number of subs).
    sub_noise
        Noise sigma of each sub before normalization (for the noise map); default 1.
    rows
        Which rows of the full image the band holds (needed for local normalization);
        default: the band is the whole image.
    overwrite
        Normalize ``stack`` in place (saves one copy of the band) instead of a copy.
    """
    frames = stack.shape[0]
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"{frames} subs given; integrate between 1 and {MAX_FRAMES} at once")
    data = stack if overwrite else stack.copy()
    if data.ndim == 3:
        data = data[:, None]
    channels, height = data.shape[1], data.shape[2]
    rows = rows if rows is not None else slice(0, height)
    for index, normalization in enumerate(normalizations):
        _normalize_sub(data[index], normalization, rows)
    weights = _checked_weights(weights, frames)
    noise = np.ones(frames) if sub_noise is None else np.asarray(sub_noise, dtype=np.float64)
    rejection = resolve_rejection(rejection, frames)
    outputs = [_allocate(data.shape[2:], frames) for _ in range(channels)]
    for channel in range(channels):
        plane = data[:, channel].reshape(frames, -1)
        factor = np.array([_factor(n, channel) for n in normalizations])
        _combine(plane, weights, noise * np.abs(factor), rejection, outputs[channel])
    per_sub = sum(out[5] for out in outputs)
    image, count, low, high, noise_map = (
        np.stack([out[k].reshape(data.shape[2:]) for out in outputs]) for k in range(5)
    )
    if stack.ndim == 3:
        image, count, low, high, noise_map = (a[0] for a in (image, count, low, high, noise_map))
    return IntegratedBand(image, count, low, high, noise_map, per_sub)


def _checked_weights(weights, frames: int) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (frames,):
        raise ValueError(f"weights has shape {array.shape}; pass one weight per sub, ({frames},)")
    if not np.all(np.isfinite(array)) or np.any(array < 0) or not np.any(array > 0):
        raise ValueError(
            f"weights {array.tolist()} must be finite, >= 0 and not all zero; "
            "check the weighting settings"
        )
    return array


def _factor(normalization: Normalization | LocalNormalization, channel: int) -> float:
    factors = normalization.factor
    return float(factors[min(channel, len(factors) - 1)])


def _normalize_sub(
    sub: np.ndarray, normalization: Normalization | LocalNormalization, rows: slice
) -> None:
    """``v' = factor * v + offset`` in place, per channel; the offset may be a local model."""
    for channel in range(sub.shape[0]):
        plane = sub[channel]
        plane *= np.float32(_factor(normalization, channel))
        if isinstance(normalization, LocalNormalization):
            grid = normalization.grids[min(channel, len(normalization.grids) - 1)]
            plane += evaluate_background(grid, normalization.shape, rows=rows)
        else:
            plane += np.float32(normalization.offset[min(channel, len(normalization.offset) - 1)])


def _allocate(shape: tuple[int, int], frames: int) -> tuple[np.ndarray, ...]:
    pixels = shape[0] * shape[1]
    return (
        np.empty(pixels, dtype=np.float32),
        np.empty(pixels, dtype=np.uint16),
        np.empty(pixels, dtype=np.uint16),
        np.empty(pixels, dtype=np.uint16),
        np.empty(pixels, dtype=np.float32),
        np.zeros((frames, 2), dtype=np.int64),
    )


def _combine(plane, weights, noise, rejection: Rejection, out) -> None:
    """Reject and average one channel's (N, pixels) plane into ``out``."""
    method = _COMPILED.get(type(rejection))
    if method is not None and plane.shape[0] >= 3:
        clip.clip_combine(
            plane,
            weights,
            noise,
            clip.sorting_network(plane.shape[0]),
            method,
            float(getattr(rejection, "low", 0.0)),
            float(getattr(rejection, "high", 0.0)),
            int(getattr(rejection, "max_iterations", 1)),
            out,
        )
        return
    if plane.shape[0] < 3:
        low = high = np.zeros(plane.shape, dtype=bool)
    else:
        low, high = rejection_masks(plane, rejection)
    clip.masked_combine(plane, weights, noise, low, high, out)


def autocrop_box(count: np.ndarray, minimum: int) -> tuple[slice, slice]:
    """The largest-found rectangle whose every pixel has at least ``minimum`` contributing subs.

    Starting from the whole frame, the edge (top, bottom, left or right line) holding the most
    under-covered pixels is dropped until no edge holds any; with dithering, rotations and
    flips the under-covered area is a border, so this peels exactly that border.

    Parameters
    ----------
    count
        Contributing subs per pixel, (H, W) or (C, H, W) (the smallest channel count is used).
    minimum
        Required number of subs.

    Returns
    -------
    rows, cols
        Slices of the kept rectangle (empty slices if no pixel is covered well enough).
    """
    covered = (count.min(axis=0) if count.ndim == 3 else count) >= minimum
    top, bottom, left, right = 0, covered.shape[0], 0, covered.shape[1]
    while top < bottom and left < right:
        window = covered[top:bottom, left:right]
        bad = [
            (~window[0]).sum(),
            (~window[-1]).sum(),
            (~window[:, 0]).sum(),
            (~window[:, -1]).sum(),
        ]
        worst = int(np.argmax(bad))
        if bad[worst] == 0:
            break
        if worst == 0:
            top += 1
        elif worst == 1:
            bottom -= 1
        elif worst == 2:
            left += 1
        else:
            right -= 1
    return slice(top, bottom), slice(left, right)
