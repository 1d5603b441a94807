"""Pixel-wise combination of registered, normalised frame stacks.

Stacks are (N, ...) arrays with the frame axis first. NaN samples and samples flagged
in ``rejected`` do not contribute. Each function returns ``(image, count)`` where
``count`` is the number of contributing frames per pixel (uint16) and pixels without
any contribution are NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from pipeline.kernels._common import float_array, result_dtype

__all__ = ["MAX_FRAMES", "median_combine", "weighted_mean"]

#: Largest stack depth the uint16 ``count`` output can represent.
MAX_FRAMES = int(np.iinfo(np.uint16).max)

_CHUNK_ELEMENTS = 1 << 23  # samples per chunk for the sort-based median


def _validate(stack: ArrayLike, rejected: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    array = float_array(stack, "stack")
    if array.ndim < 1 or not 1 <= array.shape[0] <= MAX_FRAMES:
        raise ValueError(
            f"stack has shape {array.shape}; pass an (N, ...) array with 1 <= N <= {MAX_FRAMES}"
        )
    if rejected is None:
        return array, np.zeros(array.shape[:1] + (1,) * (array.ndim - 1), dtype=bool)
    mask = np.asarray(rejected)
    if mask.dtype != bool:
        raise ValueError(f"rejected has dtype {mask.dtype}; pass a boolean mask")
    if mask.shape != array.shape:
        raise ValueError(
            f"rejected has shape {mask.shape} but stack has shape {array.shape}; "
            "pass a mask of the stack's shape"
        )
    return array, mask


def _validate_weights(weights: ArrayLike, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights has shape {w.shape}; pass one weight per frame, shape ({n},)")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights {w.tolist()} must be finite and >= 0")
    if not np.any(w > 0):
        raise ValueError("weights are all zero; give at least one frame a positive weight")
    return w


def weighted_mean(
    stack: ArrayLike, *, weights: ArrayLike, rejected: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean over frames, ignoring NaN and rejected samples.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first.
    weights : array_like
        One non-negative weight per frame, shape (N,). Only ratios matter: the result
        is invariant to scaling all weights by a constant.
    rejected : array_like of bool, optional
        Mask of rejected samples, same shape as ``stack`` (e.g. ``low | high`` from
        :mod:`pipeline.kernels.rejection`).

    Returns
    -------
    image : ndarray
        ``sum(w_i x_i) / sum(w_i)`` over contributing samples; float32 (float64 for a
        float64 stack); NaN where nothing contributes.
    count : ndarray of uint16
        Number of contributing frames per pixel (frames with weight 0 do not count).

    Notes
    -----
    Accumulates frame by frame in float64, so memory stays O(pixels) beyond the
    stack itself and the result does not depend on float32 summation order.
    """
    array, mask = _validate(stack, rejected)
    w = _validate_weights(weights, array.shape[0])
    total = np.zeros(array.shape[1:], dtype=np.float64)
    norm = np.zeros(array.shape[1:], dtype=np.float64)
    count = np.zeros(array.shape[1:], dtype=np.uint16)
    for frame, frame_rejected, weight in zip(array, mask, w, strict=True):
        if weight == 0:
            continue
        use = np.isfinite(frame) & ~frame_rejected
        total += np.where(use, frame, 0.0) * weight
        norm += use * weight
        count += use
    with np.errstate(invalid="ignore", divide="ignore"):
        image = total / norm
    image[count == 0] = np.nan
    return image.astype(result_dtype(array), copy=False), count


def _median_chunk(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring median along axis 0 of a (N, P) chunk, via one sort."""
    ordered = np.sort(chunk, axis=0)  # NaN sorts last
    n_valid = np.count_nonzero(~np.isnan(ordered), axis=0)
    lower = np.take_along_axis(ordered, np.maximum(n_valid - 1, 0)[None] // 2, axis=0)[0]
    upper = np.take_along_axis(ordered, (n_valid // 2)[None], axis=0)[0]
    median = 0.5 * (lower.astype(np.float64) + upper)
    median[n_valid == 0] = np.nan
    return median, n_valid


def median_combine(
    stack: ArrayLike, *, rejected: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Median over frames, ignoring NaN and rejected samples.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first.
    rejected : array_like of bool, optional
        Mask of rejected samples, same shape as ``stack``.

    Returns
    -------
    image : ndarray
        Per-pixel median of the contributing samples (mean of the two central values
        for an even count, computed in float64); float32 (float64 for a float64
        stack); NaN where nothing contributes.
    count : ndarray of uint16
        Number of contributing frames per pixel.

    Notes
    -----
    Implemented with one sort per chunk of pixels (NaN sorts last), which is several
    times faster than ``np.nanmedian``/``bottleneck.nanmedian`` along the frame axis.
    ``+-inf`` samples are treated as missing data.
    """
    array, mask = _validate(stack, rejected)
    n = array.shape[0]
    flat = array.reshape(n, -1)
    flat_mask = np.broadcast_to(mask, array.shape).reshape(n, -1)
    image = np.empty(flat.shape[1], dtype=result_dtype(array))
    count = np.empty(flat.shape[1], dtype=np.uint16)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, flat.shape[1], step):
        part = flat[:, start : start + step]
        use = np.isfinite(part) & ~flat_mask[:, start : start + step]
        median, n_valid = _median_chunk(np.where(use, part, np.nan))
        image[start : start + step] = median
        count[start : start + step] = n_valid
    return image.reshape(array.shape[1:]), count.reshape(array.shape[1:])
