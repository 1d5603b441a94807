"""Linear fit of one image to another (PixInsight's LinearFit).

``linear_fit(reference, target)`` finds ``a`` and ``b`` such that ``a + b * target``
matches ``reference``: the same sky background level and the same signal scale. Typical
uses are matching colour channels before combining them, or a frame to a reference
before a mosaic or an integration::

    fit = linear_fit(reference, target, mask=star_mask)
    matched = apply_linear_fit(target, fit)

The method, and why (measured on synthetic star fields with an independent noise in each
image, a gradient, a faint nebula, saturated stars and hot pixels):

1. **Pixel selection.** Pairs where both pixels are finite, not masked, and inside
   ``(reject_low, reject_high)`` of their own image's range ``[min, max]``: the upper
   limit removes saturated and near-saturated star cores, whose response is no longer
   linear (PixInsight's LinearFit rejection limits).
2. **Block medians and a first fit.** Median of each ``block x block`` block of the
   selected pixels (the same pixels in both images), then a robust line (step 4).
   Averaging over 64 pixels cuts the per-pixel noise by ~8x, which is what keeps the fit
   from the *regression dilution* a plain least-squares fit on raw pixels suffers
   (noise in the target flattens the slope; with the saturated cores and hot pixels,
   ``np.polyfit`` is off by -10 % to -19 % on the test scenes).
3. **Block means of the consistent pixels.** A block median is not exactly linear in
   the data: where a block holds a star, ``median(signal + noise)`` depends on the noise
   level, and the two images rarely have the same noise in reference units; that
   alone biased the slope by up to -1.5 %. So pixels whose residual from the first fit
   exceeds ``clip_sigma`` times the combined noise are dropped (hot pixels, cosmic rays,
   a satellite trail in one image), and each block is then reduced to the *mean* of the
   remaining pixel pairs, which is exactly linear. The final line is fitted to these.
4. **The line: least absolute deviation, errors in both variables, through the
   medians.** The intercept makes the line pass through the medians of the block
   values, ``a = median(ref) - b * median(target)``, so the matched background (the
   bulk of the pixels) is exact. The slope minimises the sum of absolute residuals
   ``|ref - a - b * target|`` divided by their noise ``sqrt(s_ref**2 + b**2 s_tgt**2)``
   (the robust L1 form of Deming regression); ``s_ref`` and ``s_tgt`` are each image's
   background noise (:func:`~pipeline.kernels.stats.background_noise`). The minimum
   lies on one of the pairwise slopes through the median point, so it is found exactly
   by a sort and cumulative sums, with no iteration and no starting guess.

Why not Theil-Sen or Siegel slopes (``scipy.stats``)? Both are O(n^2) (n = 187 500
blocks on a 12 Mpx frame), and, worse, most blocks of an astronomical frame are sky
within a few noise sigmas of each other: the slopes between such pairs are ratios of
noise terms, centred on zero, and they drag the median slope down (-4 % to -15 % on the
test scenes). Why not plain least absolute deviations (PixInsight's choice)? It is
robust in the reference but ignores the target's noise, so it keeps part of the
regression dilution (-0.5 % to -3.5 %); dividing by the combined noise removes it.
The result on the test scenes: slope within 0.05 %, matched background within 0.06 %.

Timings on a 4000 x 3000 float32 pair on the 2-core development machine: ~1.0 s for
:func:`linear_fit` (noise estimates ~0.2 s, block statistics ~0.6 s; ~10 s with
``block=1``), ~0.01 s for :func:`apply_linear_fit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.kernels._common import float_array, require_ndim, require_same_shape, result_dtype
from pipeline.kernels.stats import MAD_TO_SIGMA, background_noise

__all__ = ["LinearFitResult", "apply_linear_fit", "linear_fit"]

_MIN_BLOCKS = 3
_NOISE_PIXELS = 1 << 20


@dataclass(frozen=True)
class LinearFitResult:
    """The line ``reference ~= intercept + slope * target``.

    Attributes
    ----------
    intercept : float
        ``a``, in reference units.
    slope : float
        ``b``, reference units per target unit.
    pixels : int
        Number of blocks (pixels when ``block=1``) that entered the final fit.
    dispersion : float
        MAD-based sigma of the block residuals ``ref - (a + b * target)``, in reference
        units.
    """

    intercept: float
    slope: float
    pixels: int
    dispersion: float


def linear_fit(
    reference: ArrayLike,
    target: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    reject_low: float = 0.0,
    reject_high: float = 0.92,
    block: int = 8,
    min_block_fraction: float = 0.5,
    clip_sigma: float = 5.0,
) -> LinearFitResult:
    """Find ``a, b`` such that ``a + b * target`` matches ``reference``.

    Parameters
    ----------
    reference, target : array_like
        2-D images of the same shape on the same pixel grid (registered); NaN and
        infinite pixels are ignored.
    mask : array_like of bool, optional
        ``(H, W)``; True excludes a pixel pair (stars, a satellite trail, ...).
    reject_low, reject_high : float, optional
        A pixel pair is used only when each pixel lies strictly inside
        ``(min + reject_low * range, min + reject_high * range)`` of its own image's
        finite ``[min, max]``. Defaults 0 and 0.92: the image minimum (clipped black)
        and near-saturated star cores are left out.
    block : int, optional
        Side of the square pixel blocks the fit works on (default 8); 1 fits single
        pixels (slower, and noisier on faint frames).
    min_block_fraction : float, optional
        Minimum fraction (0..1] of a block's pixels that must be usable for the block to
        enter the fit (default 0.5).
    clip_sigma : float, optional
        Pixel pairs whose residual from the first fit exceeds ``clip_sigma`` times the
        combined noise are left out of the final block means (default 5).

    Returns
    -------
    LinearFitResult
        Intercept, slope, number of blocks fitted and residual dispersion.

    Raises
    ------
    ValueError
        If the images differ in shape or are not 2-D, the target is constant, an option
        is out of range, or fewer than 3 blocks are usable (the message says how many
        and which setting to relax).

    Notes
    -----
    See the module docstring for the method and the measurements behind it. The fit
    is exact for noiseless data on a line (it equals ``np.polyfit``).

    References
    ----------
    .. [1] PixInsight Class Library, ``pcl::LinearFit``: "robust straight line fitting
       by minimization of mean absolute deviation".
    .. [2] Deming, W. E. (1943), *Statistical Adjustment of Data*, Wiley.
    """
    ref = float_array(reference, "reference")
    tgt = float_array(target, "target")
    require_ndim(ref, "reference", (2,))
    require_same_shape(ref, tgt, "reference", "target")
    _check_options(reject_low, reject_high, block, min_block_fraction, clip_sigma)
    usable = _usable_pairs(ref, tgt, mask, reject_low, reject_high)
    noise_ref, noise_tgt = _noise(ref), _noise(tgt)
    min_count = max(1, math.ceil(min_block_fraction * block * block))

    ref_blocks, tgt_blocks = _block_stat(ref, tgt, usable, block, min_count, bn.nanmedian)
    _check_blocks(ref_blocks.size, block, min_block_fraction, tgt_blocks)
    intercept, slope = _median_line(ref_blocks, tgt_blocks, noise_ref, noise_tgt)

    combined = math.hypot(noise_ref, slope * noise_tgt)
    if combined > 0:  # noiseless data: the medians are exact already
        dtype = np.result_type(ref.dtype, tgt.dtype)
        with np.errstate(invalid="ignore"):  # inf - inf where both are infinite
            residual = ref - (dtype.type(intercept) + dtype.type(slope) * tgt)
        consistent = usable & (np.abs(residual) <= clip_sigma * combined)
        del residual
        means = _block_stat(ref, tgt, consistent, block, min_count, bn.nanmean)
        if means[0].size >= _MIN_BLOCKS and np.ptp(means[1]) > 0:
            ref_blocks, tgt_blocks = means
            intercept, slope = _median_line(ref_blocks, tgt_blocks, noise_ref, noise_tgt)

    residual = ref_blocks - (intercept + slope * tgt_blocks)
    dispersion = MAD_TO_SIGMA * float(np.median(np.abs(residual - np.median(residual))))
    return LinearFitResult(
        intercept=float(intercept),
        slope=float(slope),
        pixels=int(ref_blocks.size),
        dispersion=dispersion,
    )


def apply_linear_fit(target: ArrayLike, fit: LinearFitResult) -> NDArray[np.floating]:
    """Apply a linear fit: ``intercept + slope * target``.

    Parameters
    ----------
    target : array_like
        Image to transform (any shape); NaN stays NaN.
    fit : LinearFitResult
        From :func:`linear_fit`.

    Returns
    -------
    ndarray
        float32, or float64 for float64 input.
    """
    data = float_array(target, "target")
    dtype = result_dtype(data)
    out = data.astype(dtype, copy=True)
    out *= dtype.type(fit.slope)
    out += dtype.type(fit.intercept)
    return out


# --------------------------------------------------------------------------- helpers


def _check_options(
    reject_low: float, reject_high: float, block: int, min_block_fraction: float, clip: float
) -> None:
    """Reject options out of range."""
    if not (0.0 <= reject_low < reject_high <= 1.0):
        raise ValueError(
            f"reject_low={reject_low!r} and reject_high={reject_high!r} must satisfy "
            f"0 <= reject_low < reject_high <= 1 (fractions of each image's range)"
        )
    if isinstance(block, bool) or int(block) != block or block < 1:
        raise ValueError(f"block={block!r} must be a positive integer (1 fits single pixels)")
    if not (0.0 < min_block_fraction <= 1.0):
        raise ValueError(f"min_block_fraction={min_block_fraction!r} must be in (0, 1]")
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip_sigma={clip!r} must be a positive number of sigmas")


def _usable_pairs(
    ref: np.ndarray,
    tgt: np.ndarray,
    mask: ArrayLike | None,
    reject_low: float,
    reject_high: float,
) -> np.ndarray:
    """Pairs that are finite, unmasked and inside both images' rejection limits."""
    usable = np.isfinite(ref) & np.isfinite(tgt)
    if mask is not None:
        flags = np.asarray(mask)
        if flags.dtype != np.bool_:
            raise ValueError(f"mask has dtype {flags.dtype}; pass a boolean array")
        require_same_shape(ref, flags, "reference", "mask")
        usable &= ~flags
    for image, name in ((tgt, "target"), (ref, "reference")):
        finite = image[np.isfinite(image)]
        if finite.size == 0:
            raise ValueError(f"{name} has no finite pixel; pass an image with data")
        low, high = float(finite.min()), float(finite.max())
        if high == low:
            raise ValueError(
                f"{name} is constant ({low!r}) over its finite pixels; a linear fit needs "
                f"an image with a range of values"
            )
        span = high - low
        usable &= (image > low + reject_low * span) & (image < low + reject_high * span)
    return usable


def _noise(image: np.ndarray) -> float:
    """Background noise sigma of an image (from about 1 Mpx of rows), 0 if unmeasurable.

    Only the ratio of the two images' noise matters to the fit; a million pixels pin it
    down to ~0.1 %, so every k-th row (k odd) is enough and 4x faster than the 4 Mpx
    :func:`~pipeline.kernels.stats.background_noise` would use.
    """
    stride = max(1, math.ceil(image.size / _NOISE_PIXELS))
    stride += 1 - stride % 2
    rows = image[::stride]
    if np.isinf(rows).any():
        rows = np.where(np.isinf(rows), np.nan, rows)  # no data, and no inf - inf warning
    sigma = background_noise(rows)
    return sigma if math.isfinite(sigma) and sigma > 0 else 0.0


def _block_stat(
    ref: np.ndarray,
    tgt: np.ndarray,
    usable: np.ndarray,
    block: int,
    min_count: int,
    reduce: Callable[..., np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """``reduce`` (NaN-aware) of each block's usable pixels, for blocks with enough."""
    if block == 1:
        return ref[usable].astype(np.float64), tgt[usable].astype(np.float64)
    height, width = ref.shape
    rows, cols = -(-height // block), -(-width // block)
    count = np.zeros((rows * block, cols * block), dtype=np.int32)
    count[:height, :width] = usable
    count = count.reshape(rows, block, cols, block).sum(axis=(1, 3)).ravel()
    full = count >= min_count
    out = []
    for image in (ref, tgt):
        padded = np.full((rows * block, cols * block), np.nan, dtype=image.dtype)
        padded[:height, :width] = np.where(usable, image, np.nan)
        blocks = padded.reshape(rows, block, cols, block).transpose(0, 2, 1, 3)
        blocks = blocks.reshape(rows * cols, block * block)[full]
        out.append(np.asarray(reduce(blocks, axis=1), dtype=np.float64))
    return out[0], out[1]


def _check_blocks(
    n_blocks: int, block: int, min_block_fraction: float, tgt_blocks: np.ndarray
) -> None:
    """Raise when too few blocks remain or the target does not vary across them."""
    unit = "pixels" if block == 1 else f"blocks of {block}x{block} pixels"
    if n_blocks < _MIN_BLOCKS:
        raise ValueError(
            f"linear_fit found only {n_blocks} usable {unit} (needs at least {_MIN_BLOCKS}); "
            f"lower block, lower min_block_fraction (now {min_block_fraction}), widen "
            f"reject_low/reject_high, or shrink the mask"
        )
    if np.ptp(tgt_blocks) == 0:
        raise ValueError(
            f"target is constant ({tgt_blocks[0]!r}) over the {n_blocks} usable {unit}; "
            f"a slope cannot be determined: widen reject_low/reject_high or shrink the mask"
        )


def _median_line(
    ref: np.ndarray, tgt: np.ndarray, noise_ref: float, noise_tgt: float
) -> tuple[float, float]:
    """L1 errors-in-variables line through the medians (see the module docstring).

    The slope minimises ``sum|dy - b dx| / sqrt(noise_ref**2 + b**2 noise_tgt**2)``
    with ``dx, dy`` the deviations from the medians. The numerator is convex and
    piecewise linear with kinks at the point slopes ``dy / dx``; between kinks the
    ratio has no interior minimum for positive slopes, so the minimum is at a kink.
    The numerator at every kink comes from cumulative sums over the sorted slopes.
    """
    x0, y0 = float(np.median(tgt)), float(np.median(ref))
    dx, dy = tgt - x0, ref - y0
    moving = dx != 0
    slopes = dy[moving] / dx[moving]
    weights = np.abs(dx[moving])
    order = np.argsort(slopes, kind="stable")
    slopes, weights = slopes[order], weights[order]
    cum_w = np.cumsum(weights)
    cum_ws = np.cumsum(weights * slopes)
    # sum_i w_i |s_k - s_i| = s_k (W_le - W_gt) - (WS_le - WS_gt)
    numerator = slopes * (2 * cum_w - cum_w[-1]) - (2 * cum_ws - cum_ws[-1])
    numerator += float(np.sum(np.abs(dy[~moving])))
    if noise_ref == 0 and noise_tgt == 0:
        noise_ref = 1.0  # no noise measured: plain least absolute deviations in y
    with np.errstate(divide="ignore", invalid="ignore"):
        objective = numerator / np.sqrt(noise_ref**2 + (slopes * noise_tgt) ** 2)
    objective = np.where(np.isnan(objective), np.inf, objective)
    slope = float(slopes[int(np.argmin(objective))])
    return y0 - slope * x0, slope
