"""Compiled per-pixel sigma / winsorized-sigma clipping and weighted combination (numba).

Pixels are processed in blocks of ``_BLOCK``. A block's samples are copied into a small
(N, block) tile (missing samples become +inf) and sorted, every pixel at once, by a
Batcher odd-even merge sorting network whose compare-exchange steps run across the pixels
of the block (branch-free, vectorised by LLVM). Float64 prefix sums of the sorted samples
(relative to each pixel's median) then make every statistic of a contiguous range of
sorted samples O(1). The survivors of the iterative clipping are tracked as such a range
``[lo, hi)`` (a clipping pass only removes samples from the two ends); the result is the
pair of survivor bounds ``(first, last)``: a sample survives iff ``first <= x <= last``.

The same bounds drive the rejection masks (:mod:`pipeline.kernels.rejection`) and the
fused reject-and-combine used for integration, which reads the (N, pixels) stack
sequentially, row by row, and never materialises a mask or a sorted copy of it. Every
pixel's result depends only on its own samples: any tiling gives bit-identical results.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

__all__ = [
    "METHOD_NONE",
    "METHOD_SIGMA",
    "METHOD_WINSORIZED",
    "clip_bounds",
    "clip_combine",
    "clip_masks",
    "grow_mask",
    "masked_combine",
    "sorting_network",
]

METHOD_NONE = 0
METHOD_SIGMA = 1
METHOD_WINSORIZED = 2

_MIN_SURVIVORS = 3
_WINSOR_CUT = 1.5
_WINSOR_CORRECTION = 1.134
_SIGMA_EPSILON = 1e-12
_BLOCK = 128


@lru_cache(maxsize=64)
def sorting_network(n: int) -> np.ndarray:
    """Compare-exchange pairs (i < j) of Batcher's odd-even merge sort for ``n`` items.

    Built for the next power of two and restricted to pairs inside ``[0, n)``: padding
    items are +inf, so every comparator touching them is a no-op.
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int32).reshape(-1, 2)


# ----------------------------------------------------------------------------- block setup
@njit(cache=True, nogil=True)
def _load_tile(stack, start, size, scales, pivot, tile, n_finite):  # pragma: no cover
    """Copy the block's samples, in rejection space ``scale * (x - pivot) + pivot``, into
    ``tile`` (missing -> +inf) and count the finite ones."""
    n_finite[:size] = 0
    for i in range(stack.shape[0]):
        source = stack[i, start : start + size]
        target = tile[i]
        scale = scales[i]
        for j in range(size):
            value = scale * (source[j] - pivot) + pivot
            finite = value - value == 0  # False for NaN and +-inf, without a branch
            target[j] = value if finite else np.inf
            n_finite[j] += np.int32(finite)


@njit(cache=True, nogil=True)
def _sort_tile(tile, size, pairs):  # pragma: no cover - compiled
    for q in range(pairs.shape[0]):
        upper = tile[pairs[q, 0]]
        lower = tile[pairs[q, 1]]
        for j in range(size):
            x = upper[j]
            y = lower[j]
            upper[j] = min(x, y)
            lower[j] = max(x, y)


# ------------------------------------------------------------------------ per-pixel clipping
@njit(cache=True, nogil=True)
def _search_up(values, bound, lo, hi):  # pragma: no cover - compiled
    """First index in ``[lo, hi)`` whose value is >= bound, scanning up from ``lo``.

    Clipping bounds sit near the ends of the sorted range, so a linear scan from the
    near end takes a step or two, without the mispredicted branches of a bisection.
    """
    while lo < hi and values[lo] < bound:
        lo += 1
    return lo


@njit(cache=True, nogil=True)
def _search_down(values, bound, lo, hi):  # pragma: no cover - compiled
    """First index in ``[lo, hi)`` whose value is > bound, scanning down from ``hi``."""
    while hi > lo and values[hi - 1] > bound:
        hi -= 1
    return hi


@njit(cache=True, nogil=True)
def _is_zero(sigma, median):  # pragma: no cover - compiled
    return not (sigma > _SIGMA_EPSILON * (abs(median) + sigma))


@njit(cache=True, nogil=True)
def _variance(c1, c2, lo, hi, ddof):  # pragma: no cover - compiled
    count = hi - lo
    s1 = c1[hi] - c1[lo]
    s2 = c2[hi] - c2[lo]
    return max(s2 - s1 * s1 / count, 0.0) / (count - ddof)


@njit(cache=True, nogil=True)
def _winsorized_std(values, c1, c2, offset, lo, hi, median, width):  # pragma: no cover
    """Sample std of ``values[lo:hi]`` clipped to ``median +- 1.5 width``."""
    a = median - _WINSOR_CUT * width
    b = median + _WINSOR_CUT * width
    ia = _search_up(values, a, lo, hi)
    ib = _search_down(values, b, ia, hi)
    a -= offset
    b -= offset
    s1 = c1[ib] - c1[ia]
    s2 = c2[ib] - c2[ia]
    n_a = ia - lo
    n_b = hi - ib
    s1 += n_a * a + n_b * b
    s2 += n_a * a * a + n_b * b * b
    count = hi - lo
    return np.sqrt(max(s2 - s1 * s1 / count, 0.0) / (count - 1))


@njit(cache=True, nogil=True)
def _largest_root(qa, qb, qc, upper):  # pragma: no cover - compiled
    """Largest root <= ``upper`` of ``qa w^2 + qb w + qc`` (NaN where there is none)."""
    if qa == 0.0:
        if qb != 0.0:
            r1 = -qc / qb
        elif qc == 0.0:
            r1 = np.nan
        else:
            r1 = np.inf if qc < 0.0 else -np.inf
        r2 = r1
    else:
        disc = np.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0))
        r1 = (-qb + disc) / (2.0 * qa)
        r2 = (-qb - disc) / (2.0 * qa)
    limit = upper + 1e-12 * upper
    r1 = r1 if r1 <= limit else np.nan
    r2 = r2 if r2 <= limit else np.nan
    if np.isnan(r1):
        return r2
    if np.isnan(r2):
        return r1
    return max(r1, r2)


@njit(cache=True, nogil=True)
def _winsorized_fixed_point(values, c1, c2, offset, lo, hi, median, width):  # pragma: no cover
    """Largest ``w <= width`` with ``w = 1.134 std(clip(x, median +- 1.5 w))``.

    Between two consecutive sample crossings the clipped set is fixed, so the fixed-point
    equation is a quadratic in ``w``; walk down one crossing at a time until its largest
    root lies inside the current run.
    """
    n = np.float64(hi - lo)
    alpha = _WINSOR_CORRECTION**2 / (n - 1.0)
    shift = median - offset
    upper = width
    ia = _search_up(values, median - _WINSOR_CUT * upper, lo, hi)
    ib = _search_down(values, median + _WINSOR_CUT * upper, ia, hi)
    for _ in range(hi - lo + 1):
        t1 = c1[ib] - c1[ia]
        t2 = c2[ib] - c2[ia]
        inner = np.float64(ib - ia)
        s1 = t1 - inner * shift
        s2 = t2 - 2.0 * shift * t1 + inner * shift * shift
        clipped = (ia - lo) + (hi - ib)
        excess = (hi - ib) - (ia - lo)
        qa = alpha * _WINSOR_CUT**2 * (clipped - excess * excess / n) - 1.0
        qb = -alpha * 2.0 * _WINSOR_CUT * excess * s1 / n
        qc = alpha * (s2 - s1 * s1 / n)
        root = _largest_root(qa, qb, qc, upper)
        floor = 0.0
        cross_lo = 0.0
        cross_hi = 0.0
        if ib > ia:
            cross_lo = (median - values[ia]) / _WINSOR_CUT
            cross_hi = (values[ib - 1] - median) / _WINSOR_CUT
            floor = max(max(cross_lo, cross_hi), 0.0)
        if floor <= 0.0 or root >= floor - 1e-12 * upper:
            if np.isnan(root):
                return 0.0
            return max(root, 0.0)
        upper = floor
        if cross_lo >= floor:
            ia += 1
        if ib > ia and cross_hi >= floor:
            ib -= 1
    return 0.0


@njit(cache=True, nogil=True)
def _winsorized_sigma(values, c1, c2, offset, lo, hi, median, floor):  # pragma: no cover
    """PixInsight's Huber-winsorized sigma of ``values[lo:hi]``, never below ``floor``.

    The iteration only descends from ``f(s0)``, so when that is already below the floor
    the (costlier) fixed point is not needed.
    """
    sigma0 = np.sqrt(_variance(c1, c2, lo, hi, 1))
    sigma1 = _WINSOR_CORRECTION * _winsorized_std(values, c1, c2, offset, lo, hi, median, sigma0)
    if sigma1 <= floor:
        return floor
    if sigma1 < sigma0 and not _is_zero(sigma0, median):
        sigma1 = _winsorized_fixed_point(values, c1, c2, offset, lo, hi, median, sigma1)
    return max(sigma1, floor)


@njit(cache=True, nogil=True)
def _clip_range(values, c1, c2, offset, n, method, clip):  # pragma: no cover - compiled
    """Survivor range ``[lo, hi)`` of the sorted ``values[:n]`` after iterative clipping.

    ``clip`` is ``(low, high, max_iterations, floor)``: sigma is never taken below ``floor``
    (the known noise of the samples; 0 for none).
    """
    low, high, max_iterations, floor = clip
    lo = 0
    hi = n
    if method == METHOD_NONE or n < _MIN_SURVIVORS:
        return lo, hi
    for _ in range(max_iterations):
        count = hi - lo
        median = 0.5 * (
            np.float64(values[lo + (count - 1) // 2]) + np.float64(values[lo + count // 2])
        )
        if method == METHOD_SIGMA:
            sigma = np.sqrt(_variance(c1, c2, lo, hi, 0))
        else:
            sigma = _winsorized_sigma(values, c1, c2, offset, lo, hi, median, floor)
        sigma = max(sigma, floor)
        if _is_zero(sigma, median):
            break
        new_lo = _search_up(values, median - low * sigma, lo, hi)
        new_hi = _search_down(values, median + high * sigma, new_lo, hi)
        if new_hi - new_lo < _MIN_SURVIVORS or (new_lo == lo and new_hi == hi):
            break
        lo = new_lo
        hi = new_hi
    return lo, hi


@njit(cache=True, nogil=True)
def _block_bounds(stack, start, size, scales, pivot, pairs, method, clip, work):
    # pragma: no cover - compiled
    """Survivor bounds ``first``/``last`` (rejection space) of pixels ``start:start+size``."""
    tile, n_finite, column, c1, c2, first, last = work
    _load_tile(stack, start, size, scales, pivot, tile, n_finite)
    if method == METHOD_NONE:
        first[:size] = -np.inf
        last[:size] = np.inf
        return
    _sort_tile(tile, size, pairs)
    for j in range(size):
        n = n_finite[j]
        if n < _MIN_SURVIVORS:
            first[j] = -np.inf
            last[j] = np.inf
            continue
        for k in range(n):
            column[k] = tile[k, j]
        median = column[(n - 1) // 2]
        c1[0] = 0.0
        c2[0] = 0.0
        for k in range(n):  # prefix sums relative to the median, for O(1) range statistics
            d = column[k] - median
            c1[k + 1] = c1[k] + d
            c2[k + 1] = c2[k] + d * d
        lo, hi = _clip_range(column, c1, c2, median, n, method, clip)
        first[j] = column[lo]
        last[j] = column[hi - 1]


@njit(cache=True, nogil=True)
def _workspace(frames, dtype):  # pragma: no cover - compiled
    """tile (N, B), n_finite, sorted column, c1/c2 prefix sums (N+1), first/last (B,)."""
    return (
        np.empty((frames, _BLOCK), dtype=dtype),
        np.zeros(_BLOCK, dtype=np.int32),
        np.empty(frames, dtype=np.float64),
        np.empty(frames + 1, dtype=np.float64),
        np.empty(frames + 1, dtype=np.float64),
        np.empty(_BLOCK, dtype=np.float64),
        np.empty(_BLOCK, dtype=np.float64),
    )


@njit(cache=True, nogil=True)
def clip_bounds(stack, pairs, method, clip, first, last):  # pragma: no cover - compiled
    """Survivor bounds of every pixel of a (N, P) stack, written to ``first``/``last`` (P,).

    ``pairs`` is :func:`sorting_network` of N; ``clip`` is ``(low, high, max_iterations,
    floor)``. Pixels with fewer than 3 finite samples (or method none) get ``(-inf, inf)``.
    """
    frames, pixels = stack.shape
    work = _workspace(frames, stack.dtype)
    scales = np.ones(frames)
    for start in range(0, pixels, _BLOCK):
        size = min(_BLOCK, pixels - start)
        _block_bounds(stack, start, size, scales, 0.0, pairs, method, clip, work)
        first[start : start + size] = work[5][:size]
        last[start : start + size] = work[6][:size]


@njit(cache=True, nogil=True)
def clip_masks(stack, rejection, pairs, method, clip, low_mask, high_mask):  # pragma: no cover
    """Low/high rejection masks (N, P) of a (N, P) stack, clipped in rejection space.

    ``rejection = (scales, pivot)``: samples are compared as ``scale_i * (x - pivot) +
    pivot``, exactly as :func:`clip_combine` compares them.
    """
    frames, pixels = stack.shape
    work = _workspace(frames, stack.dtype)
    scales, pivot = rejection
    tested = np.empty(_BLOCK, dtype=stack.dtype)
    for start in range(0, pixels, _BLOCK):
        size = min(_BLOCK, pixels - start)
        _block_bounds(stack, start, size, scales, pivot, pairs, method, clip, work)
        first, last = work[5], work[6]
        for i in range(frames):
            row = stack[i, start : start + size]
            scale = scales[i]
            for j in range(size):
                tested[j] = scale * (row[j] - pivot) + pivot
            lows = low_mask[i, start : start + size]
            highs = high_mask[i, start : start + size]
            for j in range(size):
                finite = row[j] - row[j] == 0
                lows[j] = finite & (tested[j] < first[j])
                highs[j] = finite & (tested[j] > last[j])


# ------------------------------------------------------------------------------ combination
@njit(cache=True, nogil=True)
def _accumulate_block(stack, start, size, bounds, masks, weights, noise, rejection, out):
    # pragma: no cover - compiled
    """Weighted mean of the block's samples kept by the bounds (rejection space) and masks."""
    image, count, n_low, n_high, noise_map, per_sub = out
    first, last = bounds
    low_mask, high_mask = masks
    scales, pivot = rejection
    total = np.zeros(size)
    norm = np.zeros(size)
    variance = np.zeros(size)
    used = np.zeros(size, dtype=np.int32)
    lows = np.zeros(size, dtype=np.int32)
    highs = np.zeros(size, dtype=np.int32)
    masked = low_mask.shape[0] > 0
    tested = np.empty(size, dtype=stack.dtype)  # the samples as sorted in the tile
    no_mask = np.zeros(size, dtype=np.bool_)
    for i in range(stack.shape[0]):
        row = stack[i, start : start + size]
        scale = scales[i]
        for j in range(size):
            tested[j] = scale * (row[j] - pivot) + pivot
        weight = weights[i]
        spread = weight * weight * noise[i] * noise[i]
        counts = weight != 0.0
        sub_low = 0
        sub_high = 0
        if masked:
            low_row = low_mask[i, start : start + size]
            high_row = high_mask[i, start : start + size]
        else:
            low_row = no_mask
            high_row = no_mask
        for j in range(size):
            value = np.float64(row[j])
            finite = value - value == 0
            is_low = finite & ((tested[j] < first[j]) | low_row[j])
            is_high = finite & ~is_low & ((tested[j] > last[j]) | high_row[j])
            keep = finite & ~is_low & ~is_high & counts
            total[j] += weight * value if keep else 0.0
            norm[j] += weight if keep else 0.0
            variance[j] += spread if keep else 0.0
            used[j] += np.int32(keep)
            lows[j] += np.int32(is_low)
            highs[j] += np.int32(is_high)
            sub_low += np.int32(is_low)
            sub_high += np.int32(is_high)
        per_sub[i, 0] += sub_low
        per_sub[i, 1] += sub_high
    for j in range(size):
        p = start + j
        if used[j] == 0:
            image[p] = np.nan
            noise_map[p] = np.nan
        else:
            image[p] = total[j] / norm[j]
            noise_map[p] = np.sqrt(variance[j]) / norm[j]
        count[p] = used[j]
        n_low[p] = lows[j]
        n_high[p] = highs[j]


@njit(cache=True, nogil=True)
def clip_combine(stack, weights, noise, rejection, pairs, method, clip, out):
    # pragma: no cover - compiled
    """Clip every pixel of a (N, P) stack and take the weighted mean of the survivors.

    Rejection works on ``scale_i * (x - pivot) + pivot`` (``rejection = (scales, pivot)``,
    e.g. scales that equalise the subs' noise); the mean on ``x``. ``clip`` is ``(low,
    high, max_iterations, floor)``, ``floor`` the least sigma (rejection space). ``out``
    is ``(image f32, count u16, n_low u16, n_high u16, noise f32, per_sub (N, 2) int64)``
    over the P pixels; ``per_sub`` is accumulated into. ``noise`` is each sub's noise
    sigma: the noise map is ``sqrt(sum w^2 sigma^2) / sum w`` over the survivors.
    """
    frames, pixels = stack.shape
    work = _workspace(frames, stack.dtype)
    no_mask = np.zeros((0, 0), dtype=np.bool_)
    scales, pivot = rejection
    for start in range(0, pixels, _BLOCK):
        size = min(_BLOCK, pixels - start)
        _block_bounds(stack, start, size, scales, pivot, pairs, method, clip, work)
        _accumulate_block(
            stack,
            start,
            size,
            (work[5], work[6]),
            (no_mask, no_mask),
            weights,
            noise,
            rejection,
            out,
        )


@njit(cache=True, nogil=True)
def masked_combine(stack, weights, noise, low_mask, high_mask, out):  # pragma: no cover
    """Weighted mean of a (N, P) stack without the samples flagged in the (N, P) masks."""
    pixels = stack.shape[1]
    first = np.full(_BLOCK, -np.inf)
    last = np.full(_BLOCK, np.inf)
    rejection = (np.ones(stack.shape[0]), 0.0)
    for start in range(0, pixels, _BLOCK):
        size = min(_BLOCK, pixels - start)
        _accumulate_block(
            stack,
            start,
            size,
            (first, last),
            (low_mask, high_mask),
            weights,
            noise,
            rejection,
            out,
        )


@njit(cache=True, nogil=True)
def grow_mask(mask, growth, min_pixels, out):  # pragma: no cover - compiled
    """Sparse growth of a 2-D rejection mask (see ``rejection.grow_rejection``).

    Work is proportional to the number of rejected pixels: each counts its rejected
    neighbours in the ``(2 growth + 1)`` square; seeds mark their square in ``out``
    (which must hold a copy of ``mask``).
    """
    rows, cols = mask.shape
    ys, xs = np.nonzero(mask)
    for k in range(ys.size):
        y, x = ys[k], xs[k]
        y0, y1 = max(0, y - growth), min(rows, y + growth + 1)
        x0, x1 = max(0, x - growth), min(cols, x + growth + 1)
        count = 0
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                count += mask[yy, xx]
        if count >= min_pixels:
            out[y0:y1, x0:x1] = True
