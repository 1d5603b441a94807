"""Pixel rejection for image integration.

Stacks are arrays of shape (N, ...) with the frame axis first. Every function returns
boolean masks, of the stack's shape, flagging the REJECTED samples. NaN samples are
"no data": they are never counted in the statistics and never flagged as rejected.

Implementation
--------------
Sigma and winsorized sigma clipping are compiled (:mod:`pipeline.kernels._clip_numba`):
each pixel's survivors are found as a range of its sorted samples, and the masks follow
from the survivor bounds; integration uses the same bounds without building masks.
The other iterative clippers sort each pixel's samples once (NaN sorts last) and track the
surviving samples as a contiguous index range ``[lo, hi)`` of the sorted column: a
clipping pass removes values below ``center - low*sigma`` and above
``center + high*sigma``, i.e. always from the two ends, so survivors stay contiguous
and ties are never split. Pixels whose survivor set stops changing drop out of the
active set, so later iterations only touch the few pixels still converging. Large
stacks are processed in column chunks to bound temporaries.

Averaged sigma clipping reuses that machinery with a Poisson-model sigma. Percentile
clipping is a single vectorised pass. The generalized ESD test also peels samples off
the two ends of the sorted column, so it runs one vectorised step per tested outlier
on prefix sums. Linear fit clipping rejects samples anywhere in the sorted column, so
it runs a compiled (numba) loop per pixel; the pixels of a chunk are handed to it as
one contiguous block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import ArrayLike
from scipy.special import stdtrit

from pipeline.kernels import _clip_numba as _clip
from pipeline.kernels._common import float_array

__all__ = [
    "MIN_SURVIVORS",
    "auto_method",
    "averaged_sigma_clip_mask",
    "esd_mask",
    "grow_rejection",
    "linear_fit_clip_mask",
    "minmax_mask",
    "percentile_clip_mask",
    "sigma_clip_mask",
    "winsorized_sigma_clip_mask",
]

#: Iterative clippers never leave fewer survivors than this in a pixel.
MIN_SURVIVORS = 3

_CHUNK_ELEMENTS = 1 << 22  # samples per processing chunk (N * pixels)
_SIGMA_EPSILON = 1e-12  # sigma <= eps * (|median| + sigma) counts as zero: no rejection


def _validate_stack(stack: ArrayLike) -> np.ndarray:
    array = float_array(stack, "stack")
    if array.ndim < 1 or array.shape[0] < 1:
        raise ValueError(f"stack has shape {array.shape}; pass an (N, ...) array with N >= 1")
    return array


def _validate_sigmas(low: float, high: float, max_iterations: int) -> None:
    for name, value in (("low", low), ("high", high)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be a positive, finite number of sigmas")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int | np.integer):
        raise ValueError(f"max_iterations={max_iterations!r} must be an int >= 1")
    if max_iterations < 1:
        raise ValueError(f"max_iterations={max_iterations} must be >= 1")


def _count(mask: np.ndarray) -> np.ndarray:
    """Number of True values along axis 0 (fast path for stacks of < 256 frames)."""
    if mask.shape[0] < 256:
        return np.add.reduce(mask.view(np.uint8), axis=0, dtype=np.uint8).astype(np.intp)
    return np.count_nonzero(mask, axis=0)


def _count_below(block: np.ndarray, bound: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """Per column of ``block``, the number of samples ``< bound`` (``<=`` if inclusive).

    ``bound`` (float64) is first rounded to the block's dtype in the direction that
    keeps the comparison exact, so float32 blocks are compared at float32 speed with
    float64 semantics. NaN samples never count.
    """
    if block.dtype != bound.dtype:
        rounded = bound.astype(block.dtype)
        if inclusive:  # largest representable value <= bound
            fix = rounded > bound
            rounded[fix] = np.nextafter(rounded[fix], -np.inf)
        else:  # smallest representable value >= bound
            fix = rounded < bound
            rounded[fix] = np.nextafter(rounded[fix], np.inf)
        bound = rounded
    return _count(block <= bound if inclusive else block < bound)


@dataclass(frozen=True)
class _Columns:
    """Sorted samples of a chunk of pixels plus float64 prefix sums for O(1) range stats.

    ``values[:, p]`` are the samples of pixel ``p`` sorted ascending, NaN last.
    ``c1[k, p]`` / ``c2[k, p]`` hold the sums of ``d`` / ``d**2`` over the first ``k``
    sorted samples, where ``d = x - offset[p]`` is centred on the pixel's median to
    limit cancellation; NaN samples add 0.
    """

    values: np.ndarray  # (N, P)
    offset: np.ndarray  # (P,)
    c1: np.ndarray  # (N + 1, P)
    c2: np.ndarray  # (N + 1, P)

    @classmethod
    def build(cls, values: np.ndarray, n_finite: np.ndarray) -> _Columns:
        n, p = values.shape
        offset = values[np.maximum(n_finite - 1, 0) // 2, np.arange(p)].astype(np.float64)
        offset[~np.isfinite(offset)] = 0.0
        d = np.subtract(values, offset, dtype=np.float64)
        d[np.isnan(d)] = 0.0
        c1 = np.empty((n + 1, p))
        c2 = np.empty((n + 1, p))
        c1[0] = c2[0] = 0.0
        for k in range(n):  # a row loop is much faster than cumsum along axis 0
            np.add(c1[k], d[k], out=c1[k + 1])
        np.multiply(d, d, out=d)
        for k in range(n):
            np.add(c2[k], d[k], out=c2[k + 1])
        return cls(values, offset, c1, c2)

    def take(self, array: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``array[rows, cols]`` for one of the (rows, P) arrays, via a flat take."""
        return np.take(array.reshape(-1), rows * array.shape[1] + cols)

    def range_sums(self, sel: _Selection, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Sums of ``d`` and ``d**2`` over the sorted ranges ``[lo, hi)``."""
        cols = sel.cols
        s1 = self.take(self.c1, hi, cols) - self.take(self.c1, lo, cols)
        s2 = self.take(self.c2, hi, cols) - self.take(self.c2, lo, cols)
        return s1, s2

    def median(self, sel: _Selection, lo, hi) -> np.ndarray:
        """Median of the sorted ranges ``[lo, hi)``, in float64."""
        count = hi - lo
        a = self.take(self.values, lo + (count - 1) // 2, sel.cols).astype(np.float64)
        b = self.take(self.values, lo + count // 2, sel.cols).astype(np.float64)
        return 0.5 * (a + b)


class _Selection:
    """A subset ``cols`` of the pixels of a :class:`_Columns`, with a sample block.

    ``block[:, pos]`` are the sorted samples of ``cols``. The block is a copy that is
    only re-compacted when the selection has shrunk to under half of it, so that
    shrinking the working set every iteration does not copy data every iteration.
    """

    def __init__(self, columns: _Columns, cols: np.ndarray) -> None:
        self.columns = columns
        self.cols = cols
        whole = cols.size == columns.values.shape[1]
        self.block = columns.values if whole else columns.values[:, cols]
        self.pos = np.arange(cols.size)

    def shrink(self, keep: np.ndarray) -> _Selection:
        """Restrict the selection to ``cols[keep]`` (in place; returns self)."""
        self.cols = self.cols[keep]
        self.pos = self.pos[keep]
        if 2 * self.pos.size < self.block.shape[1]:
            self.block = self.block[:, self.pos]
            self.pos = np.arange(self.pos.size)
        return self

    def search(self, bound, lo, hi, *, inclusive: bool) -> np.ndarray:
        """``clip(count(samples < bound), lo, hi)`` per pixel (``<=`` if inclusive)."""
        if self.pos.size == self.block.shape[1]:
            full = bound
        else:
            full = np.full(self.block.shape[1], -np.inf)
            full[self.pos] = bound
        counts = _count_below(self.block, full, inclusive=inclusive)[self.pos]
        return np.clip(counts, lo, hi)


def _variance(s1, s2, count, ddof):
    return np.maximum(s2 - s1 * s1 / count, 0.0) / (count - ddof)


def _is_zero(sigma, median):
    return ~(sigma > _SIGMA_EPSILON * (np.abs(median) + sigma))


# (selection, lo, hi, median) -> sigma, all per selected pixel
SigmaEstimator = Callable[[_Selection, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _clip_pass(sel: _Selection, lo, hi, low, high, estimator: SigmaEstimator):
    """One clipping pass; returns the proposed survivor ranges (lo, hi)."""
    median = sel.columns.median(sel, lo, hi)
    sigma = estimator(sel, lo, hi, median)
    valid = ~_is_zero(sigma, median)
    lower = np.where(valid, median - low * sigma, -np.inf)
    upper = np.where(valid, median + high * sigma, np.inf)
    new_lo = sel.search(lower, lo, hi, inclusive=False)
    new_hi = sel.search(upper, new_lo, hi, inclusive=True)
    return new_lo, new_hi


def _iterative_clip(columns: _Columns, n_finite, low, high, max_iterations, estimator):
    """Survivor ranges ``[lo, hi)`` after iterative clipping of the sorted columns."""
    lo = np.zeros(n_finite.shape, dtype=np.intp)
    hi = n_finite.astype(np.intp)
    sel = _Selection(columns, np.flatnonzero(hi >= MIN_SURVIVORS))
    for _ in range(max_iterations):
        active = sel.cols
        if active.size == 0:
            break
        new_lo, new_hi = _clip_pass(sel, lo[active], hi[active], low, high, estimator)
        accept = (new_hi - new_lo) >= MIN_SURVIVORS
        changed = np.flatnonzero(accept & ((new_lo != lo[active]) | (new_hi != hi[active])))
        lo[active[changed]] = new_lo[changed]
        hi[active[changed]] = new_hi[changed]
        sel.shrink(changed)
    return lo, hi


def _masks_from_ranges(chunk, sorted_, lo, hi):
    """Map survivor ranges of the sorted columns back onto the unsorted chunk."""
    n = sorted_.shape[0]
    first = np.take_along_axis(sorted_, np.minimum(lo, n - 1)[None], axis=0)
    last = np.take_along_axis(sorted_, np.maximum(hi - 1, 0)[None], axis=0)
    has_data = (hi > lo)[None]
    return has_data & (chunk < first), has_data & (chunk > last)


def _clip_masks(stack, low, high, max_iterations, estimator, *, per_chunk=None):
    """Masks of an iterative clipper; ``per_chunk(columns, n_finite)`` builds a chunk's
    estimator when the sigma model needs per-pixel constants (else ``estimator``)."""
    array = _validate_stack(stack)
    _validate_sigmas(low, high, max_iterations)
    n = array.shape[0]
    flat = array.reshape(n, -1)
    low_mask = np.zeros(flat.shape, dtype=bool)
    high_mask = np.zeros(flat.shape, dtype=bool)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, flat.shape[1], step):
        finite = np.isfinite(flat[:, start : start + step])
        chunk = np.where(finite, flat[:, start : start + step], np.nan)  # inf -> no data
        n_finite = _count(finite)
        columns = _Columns.build(np.sort(chunk, axis=0), n_finite)
        if per_chunk is not None:
            estimator = per_chunk(columns, n_finite)
        lo, hi = _iterative_clip(columns, n_finite, low, high, max_iterations, estimator)
        lm, hm = _masks_from_ranges(chunk, columns.values, lo, hi)
        low_mask[:, start : start + step] = lm
        high_mask[:, start : start + step] = hm
    return low_mask.reshape(array.shape), high_mask.reshape(array.shape)


def _compiled_clip_masks(stack, low, high, max_iterations, method):
    """Masks of sigma / winsorized sigma clipping from the compiled survivor bounds."""
    array = _validate_stack(stack)
    _validate_sigmas(low, high, max_iterations)
    n = array.shape[0]
    flat = array.reshape(n, -1)
    first = np.empty(flat.shape[1])
    last = np.empty(flat.shape[1])
    pairs = _clip.sorting_network(n)
    _clip.clip_bounds(
        flat, pairs, method, (float(low), float(high), int(max_iterations), 0.0), first, last
    )
    finite = np.isfinite(flat)
    low_mask = finite & (flat < first)
    high_mask = finite & (flat > last)
    return low_mask.reshape(array.shape), high_mask.reshape(array.shape)


def sigma_clip_mask(
    stack: ArrayLike, *, low: float, high: float, max_iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Iterative sigma-clipping rejection around the median.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first. NaN samples are ignored.
    low, high : float
        Clipping thresholds in sigma below/above the median (both > 0).
    max_iterations : int, optional
        Maximum number of clipping passes (default 10).

    Returns
    -------
    low_mask, high_mask : ndarray of bool
        Samples rejected below / above the median; same shape as ``stack``.

    Notes
    -----
    Each pass computes, from the surviving samples of a pixel, the median ``m`` and
    the standard deviation ``s`` (population, ``ddof=0``), and rejects samples with
    ``x < m - low*s`` or ``x > m + high*s`` (strict inequalities). Rejections
    accumulate; a pixel stops when a pass rejects nothing or after
    ``max_iterations`` passes. This is the sigma clipping of PixInsight's
    ImageIntegration and matches ``astropy.stats.sigma_clip(..., cenfunc='median',
    stdfunc='std', axis=0)`` sample for sample, except for two documented guards:

    * **Minimum survivors.** A pixel with fewer than 3 finite samples is never
      clipped, and a pass that would leave fewer than 3 survivors in a pixel is not
      applied: that pixel keeps its previous state and stops iterating. (astropy has
      no such guard; PixInsight stops once fewer than 3 remain.)
    * ``+-inf`` samples are treated as missing data, like NaN.

    PixInsight uses the sample standard deviation (``n - 1``); ``ddof=0`` is used
    here so that astropy can serve as an exact oracle.

    References
    ----------
    .. [1] PixInsight ImageIntegration documentation, "Pixel Rejection: Sigma
       Clipping", https://pixinsight.com/doc/tools/ImageIntegration/ImageIntegration.html
    """
    return _compiled_clip_masks(stack, low, high, max_iterations, _clip.METHOD_SIGMA)


def winsorized_sigma_clip_mask(
    stack: ArrayLike, *, low: float, high: float, max_iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """PixInsight winsorized sigma-clipping rejection.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first. NaN samples are ignored.
    low, high : float
        Clipping thresholds in (winsorized) sigma below/above the median.
    max_iterations : int, optional
        Maximum number of clipping passes (default 10).

    Returns
    -------
    low_mask, high_mask : ndarray of bool
        Samples rejected below / above the median; same shape as ``stack``.

    Notes
    -----
    Each clipping pass works on the surviving samples of a pixel:

    1. ``m`` = median, ``s0`` = sample standard deviation (``n - 1``).
    2. Huber winsorization: values below ``m - 1.5 s`` are replaced by
       ``m - 1.5 s`` and values above ``m + 1.5 s`` by ``m + 1.5 s``, and
       ``s = 1.134 * std(winsorized)``; PixInsight repeats this (cumulatively) from
       ``s = s0`` until ``s`` changes by less than 0.05 %. ``m`` stays the median.
    3. Reject ``x < m - low*s`` and ``x > m + high*s`` on the original values.

    Passes repeat until nothing is rejected or ``max_iterations``.

    Step 2 is computed in closed form rather than iterated: the winsorization
    intervals are nested, so the iteration is ``s_{k+1} = f(s_k)`` with
    ``f(w) = 1.134 * std(clip(x, m - 1.5 w, m + 1.5 w))`` continuous and
    non-decreasing; it stops at ``f(s0)`` when ``f(s0) >= s0`` and otherwise
    decreases to the largest fixed point ``f(w) = w`` below ``s0``, which is found
    exactly (a quadratic per run of samples between crossings). PixInsight's 0.05 %
    stopping rule leaves its ``s`` slightly (up to a few tenths of a percent) above
    that fixed point, so a sample lying within that margin of a threshold can be
    judged differently; otherwise the masks agree.

    A robust sigma that is zero (all survivors equal, or winsorization collapsing
    onto the median) rejects nothing, as in PixInsight. The same minimum-survivor
    guard as :func:`sigma_clip_mask` applies (never fewer than 3 survivors), and
    ``+-inf`` counts as missing data. This is the classic ImageIntegration 1.x
    algorithm (median centre, standard-deviation start); later PixInsight versions
    start from the Sn estimator and add a winsorization cutoff.

    References
    ----------
    .. [1] PixInsight ImageIntegration documentation, "Winsorized Sigma Clipping",
       https://pixinsight.com/doc/tools/ImageIntegration/ImageIntegration.html
    .. [2] Huber, P. J. (1981), Robust Statistics, Wiley (winsorization, 1.134
       consistency factor at 1.5 sigma).
    """
    return _compiled_clip_masks(stack, low, high, max_iterations, _clip.METHOD_WINSORIZED)


def minmax_mask(stack: ArrayLike, *, n_low: int, n_high: int) -> tuple[np.ndarray, np.ndarray]:
    """Reject the ``n_low`` lowest and ``n_high`` highest finite samples of each pixel.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first. NaN samples are ignored.
    n_low, n_high : int
        Number of samples to reject at each end (>= 0).

    Returns
    -------
    low_mask, high_mask : ndarray of bool
        Rejected samples; same shape as ``stack``.

    Notes
    -----
    Exactly ``n_low``/``n_high`` samples are rejected per pixel, ties broken by frame
    order (earlier frames rank lower). A pixel with ``n_low + n_high`` or fewer
    finite samples is left untouched, so min/max never empties a pixel. ``+-inf``
    counts as missing data.
    """
    array = _validate_stack(stack)
    for name, value in (("n_low", n_low), ("n_high", n_high)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name}={value!r} must be an int >= 0")
    n = array.shape[0]
    flat = array.reshape(n, -1)
    low_mask = np.zeros(flat.shape, dtype=bool)
    high_mask = np.zeros(flat.shape, dtype=bool)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, flat.shape[1], step):
        finite = np.isfinite(flat[:, start : start + step])
        chunk = np.where(finite, flat[:, start : start + step], np.nan)
        n_finite = _count(finite)
        sorted_ = np.sort(chunk, axis=0)
        enough = n_finite > n_low + n_high
        if n_low:
            low_mask[:, start : start + step] = _lowest(chunk, sorted_, n_low, enough)
        if n_high:
            high_mask[:, start : start + step] = _lowest(
                -chunk[::-1], -sorted_[::-1], n_high, enough, first=n - n_finite
            )[::-1]
    return low_mask.reshape(array.shape), high_mask.reshape(array.shape)


def _lowest(chunk, sorted_, k, enough, first=0):
    """Mask of the ``k`` lowest samples per column, ties going to the earliest rows.

    ``sorted_`` is ``chunk`` sorted along axis 0, with its finite values starting at
    row ``first`` (scalar or per column); the k-th lowest value is
    ``sorted_[first + k - 1]``. Columns where ``enough`` is False get no rejection.
    """
    n = chunk.shape[0]
    index = np.clip(np.broadcast_to(first + k - 1, enough.shape), 0, n - 1)
    threshold = np.take_along_axis(sorted_, index[None], axis=0)
    take = chunk < threshold
    tied = chunk == threshold
    room = k - _count(take)
    ambiguous = np.flatnonzero(_count(tied) > room)
    take |= tied
    if ambiguous.size:
        sub = tied[:, ambiguous]
        take[:, ambiguous] &= ~sub | (np.cumsum(sub, axis=0) <= room[ambiguous])
    return take & enough[None]


# --------------------------------------------------------------------------- shared helpers
def _validate_positive(name: str, value: float, what: str) -> None:
    if isinstance(value, bool) or not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive, finite {what}")


def _finite_chunks(array: np.ndarray):
    """Yield ``(start, stop, chunk, finite, n_finite)`` over column chunks of the flat stack.

    ``chunk`` has +-inf replaced by NaN (missing data), ``finite`` marks the real
    samples and ``n_finite`` counts them per pixel.
    """
    n = array.shape[0]
    flat = array.reshape(n, -1)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, flat.shape[1], step):
        stop = min(start + step, flat.shape[1])
        finite = np.isfinite(flat[:, start:stop])
        chunk = np.where(finite, flat[:, start:stop], np.nan)
        yield start, stop, chunk, finite, _count(finite)


def _sorted_median(sorted_: np.ndarray, n_finite: np.ndarray) -> np.ndarray:
    """Median (float64) of each column of a NaN-last sorted block; NaN where empty."""
    cols = np.arange(sorted_.shape[1])
    a = sorted_[np.maximum(n_finite - 1, 0) // 2, cols].astype(np.float64)
    b = sorted_[n_finite // 2 - (n_finite == 0), cols].astype(np.float64)
    median = 0.5 * (a + b)
    median[n_finite == 0] = np.nan
    return median


def _floor_fraction(fraction: float, count) -> np.ndarray:
    """``floor(fraction * count)``, immune to the product landing just below an integer."""
    return np.floor(fraction * np.asarray(count, dtype=np.float64) + 1e-9).astype(np.intp)


# --------------------------------------------------------------------------- percentile
def percentile_clip_mask(
    stack: ArrayLike, *, low: float = 0.2, high: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """PixInsight percentile clipping: one pass, relative to the median of each pixel.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first. NaN and +-inf samples are ignored.
    low, high : float, optional
        Largest accepted fractional deviation below / above the median, in units of
        the median (defaults 0.2 and 0.1, PixInsight's defaults).

    Returns
    -------
    low_mask, high_mask : ndarray of bool
        Samples rejected below / above the median; same shape as ``stack``.

    Notes
    -----
    With ``m`` the median of a pixel's finite samples, a sample ``x`` is rejected low
    when ``(m - x) / |m| > low`` and high when ``(x - m) / |m| > high``. This is a single,
    non-iterative pass; PixInsight recommends it for small sets (3 to 6, at most 8
    frames), where moment-based estimators mean little.

    PixInsight divides by ``m`` itself; its data are normalized to ``[0, 1]`` so
    ``m >= 0``. ``|m|`` is used here so that a negative median (bias-subtracted data)
    keeps the meaning of "relative deviation". A pixel whose median is exactly zero is
    left alone (PixInsight skips it too).

    Guards shared with the other kernels: a pixel with fewer than 3 finite samples is
    never clipped, and a pass that would leave fewer than 3 survivors in a pixel is not
    applied to that pixel (PixInsight has no such guard for this method).

    References
    ----------
    .. [1] PixInsight ImageIntegration documentation, "Pixel Rejection: Percentile
       Clipping" and "Pixel Rejection (2): Percentile low / high",
       https://pixinsight.com/doc/tools/ImageIntegration/ImageIntegration.html
    """
    array = _validate_stack(stack)
    _validate_positive("low", low, "fraction of the median")
    _validate_positive("high", high, "fraction of the median")
    n = array.shape[0]
    low_mask = np.zeros((n, array[0].size), dtype=bool)
    high_mask = np.zeros((n, array[0].size), dtype=bool)
    for start, stop, chunk, _, n_finite in _finite_chunks(array):
        median = _sorted_median(np.sort(chunk, axis=0), n_finite)
        scale = np.abs(median)
        usable = (n_finite >= MIN_SURVIVORS) & (scale > 0)
        with np.errstate(invalid="ignore"):  # NaN samples compare False
            lm = (median - chunk) > low * scale
            hm = (chunk - median) > high * scale
        survivors = n_finite - _count(lm) - _count(hm)
        keep = usable & (survivors >= MIN_SURVIVORS)
        low_mask[:, start:stop] = lm & keep
        high_mask[:, start:stop] = hm & keep
    return low_mask.reshape(array.shape), high_mask.reshape(array.shape)


# --------------------------------------------------------------------------- averaged sigma
def _poisson_sigma_estimator(columns: _Columns, n_finite: np.ndarray) -> SigmaEstimator:
    """Averaged sigma clipping's estimator for one chunk.

    The "gain" ``s**2 = sum((x - m0)**2 / m0) / (n - 1)`` is measured once per pixel
    from all its finite samples (``m0``: their median); a pass then uses
    ``sigma = s * sqrt(m)`` with ``m`` the median of the current survivors.
    """
    p = n_finite.size
    cols = np.arange(p)
    m0 = _sorted_median(columns.values, n_finite)
    delta = m0 - columns.offset
    s1 = columns.c1[n_finite, cols]
    s2 = columns.c2[n_finite, cols]
    spread = np.maximum(s2 - 2.0 * delta * s1 + n_finite * delta * delta, 0.0)
    gain = np.zeros(p)
    ok = (n_finite >= MIN_SURVIVORS) & (m0 > 0)
    gain[ok] = spread[ok] / (n_finite[ok] - 1) / m0[ok]  # s**2 per pixel

    def estimator(sel: _Selection, lo, hi, median):
        return np.sqrt(gain[sel.cols] * np.maximum(median, 0.0))

    return estimator


def averaged_sigma_clip_mask(
    stack: ArrayLike, *, low: float = 4.0, high: float = 3.0, max_iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """PixInsight averaged (Poisson model) sigma clipping.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first. NaN and +-inf samples are ignored.
    low, high : float, optional
        Clipping thresholds in sigma below/above the median (defaults 4 and 3).
    max_iterations : int, optional
        Maximum number of clipping passes (default 10).

    Returns
    -------
    low_mask, high_mask : ndarray of bool
        Samples rejected below / above the median; same shape as ``stack``.

    Notes
    -----
    The noise is modelled as Poisson-like, ``sigma**2 = m / g`` with ``m`` the signal
    and ``g`` the gain of an ideal, noiseless-readout detector. Per pixel:

    1. ``m0`` = median of all finite samples and ``s**2 = sum((x - m0)**2 / m0) / (n - 1)``
       (``s**2`` estimates ``1/g``). This is measured **once**, from the full stack.
    2. Each pass: ``m`` = median of the survivors, ``sigma = s * sqrt(m)``; reject
       ``x < m - low*sigma`` and ``x > m + high*sigma``.
    3. Stop when a pass rejects nothing or after ``max_iterations`` passes.

    Because ``s`` comes from the full, unclipped stack (as in PixInsight), strong
    outliers inflate it and the method is far less robust than sigma clipping: a single
    bright outlier sets the scale for the whole iteration. PixInsight recommends it for
    moderate sets of about 8 to 10 frames only. IRAF's AVSIGCLIP, from which it derives,
    estimates the gain per image row instead of per pixel.

    The model needs positive signal: a pixel whose median ``m0`` is not positive, or
    whose ``s`` or current ``sigma`` is zero, rejects nothing (PixInsight works on data
    made non-negative by a pedestal). The minimum-survivor guard of
    :func:`sigma_clip_mask` applies (never fewer than 3 survivors) and ``+-inf`` counts as
    missing data.

    References
    ----------
    .. [1] PixInsight ImageIntegration documentation, "Averaged Sigma Clipping",
       https://pixinsight.com/doc/tools/ImageIntegration/ImageIntegration.html
    .. [2] IRAF ``imcombine`` help, "avsigclip" rejection algorithm.
    .. [3] PixInsight Class Library, ImageIntegration module 1.2.33 (2021),
       ``IntegrationRejectionEngine.cpp`` (gain measured once per pixel stack),
       https://github.com/PixInsight/PCL
    """
    return _clip_masks(stack, low, high, max_iterations, None, per_chunk=_poisson_sigma_estimator)


# --------------------------------------------------------------------------- linear fit
_LINEAR_FIT_MIN_SAMPLES = 5  # PixInsight: "Five images is the minimum required"
_LINEAR_FIT_SCALE = 2.0  # PixInsight's factor matching the response of sigma clipping


@njit(cache=True, nogil=True)
def _weighted_median_index(values, weights, count, half):  # pragma: no cover - compiled
    """Quickselect the first position whose cumulative weight (ascending values) reaches
    ``half``; permutes ``values`` and ``weights`` in place and returns that position."""
    lo = 0
    hi = count - 1
    below = 0.0
    while lo < hi:
        a = values[lo]
        b = values[(lo + hi) >> 1]
        c = values[hi]
        if a < b:
            pivot = b if b < c else (c if a < c else a)
        else:
            pivot = a if a < c else (c if b < c else b)
        lt = lo
        i = lo
        gt = hi
        while i <= gt:  # three-way partition: < pivot | == pivot | > pivot
            v = values[i]
            if v < pivot:
                values[i], values[lt] = values[lt], values[i]
                weights[i], weights[lt] = weights[lt], weights[i]
                lt += 1
                i += 1
            elif v > pivot:
                values[i], values[gt] = values[gt], values[i]
                weights[i], weights[gt] = weights[gt], weights[i]
                gt -= 1
            else:
                i += 1
        w_less = 0.0
        for t in range(lo, lt):
            w_less += weights[t]
        if below + w_less >= half:
            hi = lt - 1
            continue
        w_equal = 0.0
        for t in range(lt, gt + 1):
            w_equal += weights[t]
        if below + w_less + w_equal >= half:
            return lt
        below += w_less + w_equal
        lo = gt + 1
    return lo


@njit(cache=True, nogil=True)
def _lad_line(y, n, k, slopes, weights, residuals):  # pragma: no cover - compiled
    """Least-absolute-deviation line ``y[j] ~ a + b*j`` over ``j < n``, starting from
    pivot ``k``: (a, b, mean |r|, a point of the data on the returned line).

    Pivoting descent (Wesolowsky 1981): an optimal line passes through two data points.
    Rotating the line about a pivot point ``k`` is a one-dimensional problem solved
    exactly by the weighted median of the slopes ``(y[j] - y[k]) / (j - k)`` with weights
    ``|j - k|``; the new line passes through another point. It is optimal once no
    rotation about any other point lying on it can lower the total absolute deviation,
    which the residual signs tell (this also covers collinear, tied data).
    """
    tol = 1e-12 * max(abs(y[0]), abs(y[n - 1]))
    best_a = y[k]
    best_b = 0.0
    best = np.inf
    best_k = k
    for _ in range(4 * n):
        m = 0
        for j in range(n):
            if j != k:
                slopes[m] = (y[j] - y[k]) / (j - k)
                weights[m] = abs(j - k)
                m += 1
        total = 0.5 * (k * (k + 1) + (n - 1 - k) * (n - k))
        b = slopes[_weighted_median_index(slopes, weights, m, 0.5 * total)]
        a = y[k] - b * k
        deviation = 0.0
        for j in range(n):
            r = y[j] - a - b * j
            residuals[j] = r
            deviation += abs(r)
        if not deviation < best:
            break
        best_a = a
        best_b = b
        best = deviation
        best_k = k
        pivot = -1
        for c in range(n):  # k is optimal already; try the other points on the line
            if c == k or abs(residuals[c]) > tol:
                continue
            above = 0.0
            below = 0.0
            for j in range(n):
                r = residuals[j]
                if j == c or abs(r) <= tol:
                    continue
                if (r > 0) == (j > c):
                    above += abs(j - c)
                else:
                    below += abs(j - c)
            half = 0.25 * (c * (c + 1) + (n - 1 - c) * (n - c))
            if above > half or below > half:
                pivot = c
                break
        if pivot < 0:
            break
        k = pivot
    return best_a, best_b, best / n, best_k


@njit(cache=True, nogil=True)
def _linear_fit_block(
    block, low, high, scale, max_iterations, min_samples, min_survivors, low_mask, high_mask
):  # pragma: no cover - compiled
    """Linear fit clipping of a (pixels, frames) float64 block into (pixels, frames) masks."""
    n_pixels, n_frames = block.shape
    values = np.empty(n_frames)
    frames = np.empty(n_frames, dtype=np.int64)
    y = np.empty(n_frames)
    frame_of = np.empty(n_frames, dtype=np.int64)
    slopes = np.empty(n_frames)
    weights = np.empty(n_frames)
    residuals = np.empty(n_frames)
    for p in range(n_pixels):
        count = 0
        for f in range(n_frames):
            v = block[p, f]
            if np.isfinite(v):
                values[count] = v
                frames[count] = f
                count += 1
        if count < min_samples:
            continue
        order = np.argsort(values[:count], kind="mergesort")  # ties keep frame order
        for j in range(count):
            y[j] = values[order[j]]
            frame_of[j] = frames[order[j]]
        n = count
        pivot = n // 4  # any start works; later passes restart on the last line
        for _ in range(max_iterations):
            a, b, adev, pivot = _lad_line(y, n, pivot, slopes, weights, residuals)
            sigma = scale * adev
            if not sigma > 1e-12 * (abs(y[(n - 1) // 2]) + sigma):
                break
            rejected = 0
            for j in range(n):
                r = y[j] - (a + b * j)
                if -r >= low * sigma or r >= high * sigma:
                    rejected += 1
            if rejected == 0 or n - rejected < min_survivors:
                break
            kept = 0
            start = pivot
            for j in range(n):
                if j == start:  # on the line, so never rejected: its new rank
                    pivot = kept
                r = y[j] - (a + b * j)
                if -r >= low * sigma:
                    low_mask[p, frame_of[j]] = True
                elif r >= high * sigma:
                    high_mask[p, frame_of[j]] = True
                else:  # survivors stay sorted; they are re-ranked 0..kept-1
                    y[kept] = y[j]
                    frame_of[kept] = frame_of[j]
                    kept += 1
            n = kept


def linear_fit_clip_mask(
    stack: ArrayLike, *, low: float = 5.0, high: float = 2.5, max_iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """PixInsight linear fit clipping: distance to a robust line through the sorted stack.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first. NaN and +-inf samples are ignored.
    low, high : float, optional
        Tolerances below/above the fitted line, in units of ``2 * adev`` (defaults 5
        and 2.5, the defaults of the PixInsight documentation).
    max_iterations : int, optional
        Maximum number of fit-and-reject passes (default 10).

    Returns
    -------
    low_mask, high_mask : ndarray of bool
        Samples rejected below / above the fitted line; same shape as ``stack``.

    Notes
    -----
    Each pass works on the surviving samples of a pixel, sorted ascending and indexed
    by rank ``j = 0 .. n-1``:

    1. Fit the line ``y = a + b*j`` minimizing the mean absolute deviation (exact L1
       fit); ``adev`` is that mean absolute vertical deviation.
    2. ``sigma = 2 * adev`` and reject samples with ``(a + b*j - x) / sigma >= low``
       (low) or ``(x - a - b*j) / sigma >= high`` (high), wherever they lie in the
       sorted column.
    3. Re-sort and re-rank the survivors and repeat until a pass rejects nothing or
       after ``max_iterations`` passes.

    The factor 2 is PixInsight's "magic factor" that matches the response of sigma
    clipping; PixInsight's implementation also multiplies by ``sqrt(1 + b**2)``, which
    is 1 to within ~1e-6 for its data normalized to [0, 1] but would make the rejection
    depend on the data units here, so it is left out. A fitted line is optimal but not
    always unique (flat directions in degenerate, tied data); the descent then returns
    one optimal line deterministically. PixInsight's line fitter adapts the
    Press et al. L1 routine; any exact L1 fit is equivalent up to such ties.

    Guards: a pixel needs at least 5 finite samples (as in PixInsight), a pass that
    would leave fewer than 3 survivors is not applied (PixInsight applies it and
    stops), ``adev == 0`` rejects nothing, and ``+-inf`` counts as missing data. Newer
    PixInsight versions default ``high`` to 4.

    References
    ----------
    .. [1] PixInsight ImageIntegration documentation, "Linear Fit Clipping" and
       "Pixel Rejection (2): Linear fit low / high",
       https://pixinsight.com/doc/tools/ImageIntegration/ImageIntegration.html
    .. [2] J. Conejero, "Linear Fit Clipping Pixel Rejection Algorithm", PixInsight
       forum (PixInsight 1.6.1 announcement),
       https://pixinsight.com/forum.old/index.php?topic=2169.0
    .. [3] PixInsight Class Library, ImageIntegration module 1.2.33 (2021),
       ``IntegrationRejectionEngine.cpp`` (the factor 2 and ``sqrt(1 + b**2)``),
       https://github.com/PixInsight/PCL
    .. [4] G. O. Wesolowsky (1981), "A new descent algorithm for the least absolute
       value regression problem", Communications in Statistics - Simulation and
       Computation 10(5), 479-491.
    """
    array = _validate_stack(stack)
    _validate_sigmas(low, high, max_iterations)
    n = array.shape[0]
    flat = array.reshape(n, -1)
    low_mask = np.zeros(flat.shape, dtype=bool)
    high_mask = np.zeros(flat.shape, dtype=bool)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, flat.shape[1], step):
        block = np.ascontiguousarray(flat[:, start : start + step].T, dtype=np.float64)
        lm = np.zeros(block.shape, dtype=bool)
        hm = np.zeros(block.shape, dtype=bool)
        _linear_fit_block(
            block,
            float(low),
            float(high),
            _LINEAR_FIT_SCALE,
            int(max_iterations),
            _LINEAR_FIT_MIN_SAMPLES,
            MIN_SURVIVORS,
            lm,
            hm,
        )
        low_mask[:, start : start + step] = lm.T
        high_mask[:, start : start + step] = hm.T
    return low_mask.reshape(array.shape), high_mask.reshape(array.shape)


# --------------------------------------------------------------------------- generalized ESD
def _esd_critical_values(n_max: int, fraction: float, alpha: float) -> np.ndarray:
    """Rosner's critical values ``lambda[n, i]`` (i = 0-based test index), NaN elsewhere.

    ``lambda = (n - i - 1) t / sqrt((n - i - 2 + t**2) (n - i))`` with ``t`` the upper
    ``alpha / (2 (n - i))`` quantile of Student's t with ``n - i - 2`` degrees of freedom.
    """
    table = np.full((n_max + 1, n_max + 1), np.nan)
    n = np.arange(n_max + 1)[:, None]
    i = np.arange(n_max + 1)[None, :]
    valid = i < _esd_max_outliers(n, fraction)
    nn, ii = np.broadcast_to(n, valid.shape)[valid], np.broadcast_to(i, valid.shape)[valid]
    if nn.size:
        rest = (nn - ii).astype(np.float64)
        t = -stdtrit(rest - 2.0, alpha / (2.0 * rest))  # upper quantile, accurate tails
        table[nn, ii] = (rest - 1.0) * t / np.sqrt((rest - 2.0 + t * t) * rest)
    return table


def _esd_max_outliers(n, fraction: float) -> np.ndarray:
    """Tested outliers per pixel: ``clip(floor(fraction*n), 1, n-2)``, survivors >= 3."""
    n = np.asarray(n)
    k = np.clip(_floor_fraction(fraction, n), 1, np.maximum(n - 2, 1))
    return np.clip(np.minimum(k, n - MIN_SURVIVORS), 0, None)


def esd_mask(
    stack: ArrayLike,
    *,
    outlier_fraction: float = 0.3,
    alpha: float = 0.05,
    low_relaxation: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized extreme Studentized deviate (ESD) test, PixInsight's variant.

    Parameters
    ----------
    stack : array_like
        (N, ...) stack, frame axis first. NaN and +-inf samples are ignored.
    outlier_fraction : float, optional
        Upper bound of the fraction of a pixel's samples that can be outliers, in
        (0, 1) (default 0.3).
    alpha : float, optional
        Significance level of the test, in (0, 1) (default 0.05).
    low_relaxation : float, optional
        Factor >= 1 by which low deviations are down-weighted (default 1.5); 1 makes
        the test symmetric.

    Returns
    -------
    low_mask, high_mask : ndarray of bool
        Samples rejected below / above the centre; same shape as ``stack``.

    Notes
    -----
    For a pixel with ``n`` finite samples, ``k = clip(floor(outlier_fraction*n), 1,
    n-2)`` candidates are tested (further capped at ``n - 3`` so that 3 samples always
    survive). For ``i = 0 .. k-1``, on the ``n - i`` samples still present:

    * centre ``c``: the mean after trimming ``max(1, floor(f*(n-i)) - i)`` highest and
      ``max(1, floor(f/relax*(n-i)) - i)`` lowest samples (``f = outlier_fraction``),
      or the median when fewer than 3 samples would remain;
    * scale ``s``: the sample standard deviation (``n - i - 1``) of those samples;
    * ``R_i = max((x - c) / s for x >= c, (c - x) / (relax * s) for x < c)``; the sample
      reaching it is removed (a tie goes to the low one).

    Rosner's critical values are
    ``lambda_i = (n-i-1) t / sqrt((n-i-2 + t**2) (n-i))`` with ``t`` the
    ``1 - alpha / (2 (n-i))`` quantile of Student's t with ``n - i - 2`` degrees of
    freedom, and the number of outliers is the largest ``i + 1`` with
    ``R_i > lambda_i`` (0 if none): the first that many removed samples are rejected,
    low or high according to the end they were removed from. A zero scale stops the
    test for that pixel.

    This is Rosner's many-outlier procedure with PixInsight's changes: trimmed-mean
    centre, relaxed low side, and its bounds on ``k``. PixInsight's scale routine,
    although handed the trimmed mean, returns the ordinary sample standard deviation,
    which is what is used here. One deliberate difference: PixInsight counts outliers
    as the leading run of ``R_i >= lambda_i`` (stopping at the first failure); the
    largest-``i`` rule of Rosner (1983) is used here because it is what protects
    against masking. Both agree whenever the test statistics do not dip below and
    rise back above their critical values.

    References
    ----------
    .. [1] B. Rosner (1983), "Percentage Points for a Generalized ESD Many-Outlier
       Procedure", Technometrics 25(2), 165-172.
    .. [2] NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.5.17.3,
       "Generalized Extreme Studentized Deviate Test for Outliers".
    .. [3] PixInsight Class Library, ImageIntegration module 1.2.33 (2021),
       ``IntegrationRejectionEngine.cpp`` (ESD rejection: trimming, relaxation, bounds
       on ``k``), https://github.com/PixInsight/PCL; parameter meanings explained by
       J. Conejero on the PixInsight forum ("ESD outliers", "ESD significance").
    """
    array = _validate_stack(stack)
    for name, value in (("outlier_fraction", outlier_fraction), ("alpha", alpha)):
        if isinstance(value, bool) or not (np.isfinite(value) and 0 < value < 1):
            raise ValueError(f"{name}={value!r} must be a number strictly between 0 and 1")
    if isinstance(low_relaxation, bool) or not (
        np.isfinite(low_relaxation) and low_relaxation >= 1
    ):
        raise ValueError(
            f"low_relaxation={low_relaxation!r} must be a finite number >= 1 (1 = no relaxation)"
        )
    n = array.shape[0]
    lam = _esd_critical_values(n, outlier_fraction, alpha)
    low_mask = np.zeros((n, array[0].size), dtype=bool)
    high_mask = np.zeros((n, array[0].size), dtype=bool)
    for start, stop, chunk, _, n_finite in _finite_chunks(array):
        sorted_ = np.sort(chunk, axis=0)
        lo, hi = _esd_chunk(sorted_, n_finite, lam, outlier_fraction, low_relaxation)
        low_mask[:, start:stop] = _lowest_k(chunk, sorted_, lo)
        high_mask[:, start:stop] = _lowest_k(
            -chunk[::-1], -sorted_[::-1], n_finite - hi, first=n - n_finite
        )[::-1]
    return low_mask.reshape(array.shape), high_mask.reshape(array.shape)


def _lowest_k(chunk, sorted_, k, first=0):
    """Mask of the ``k[p]`` lowest samples of each column ``p`` (ties to the earliest rows).

    ``sorted_`` is ``chunk`` sorted along axis 0 with its finite values starting at row
    ``first``; ``k`` may be 0. Same rule as min/max rejection, for per-column counts.
    """
    n = chunk.shape[0]
    index = np.clip(first + k - 1, 0, n - 1)
    threshold = np.take_along_axis(sorted_, np.broadcast_to(index, k.shape)[None], axis=0)
    take = chunk < threshold
    tied = chunk == threshold
    room = k - _count(take)
    wanted = k > 0
    ambiguous = np.flatnonzero(wanted & (_count(tied) > room))
    take |= tied
    if ambiguous.size:
        sub = tied[:, ambiguous]
        take[:, ambiguous] &= ~sub | (np.cumsum(sub, axis=0) <= room[ambiguous])
    return take & wanted[None]


def _esd_chunk(sorted_, n_finite, lam, fraction, relax):
    """Per-pixel ranges ``[lo, hi)`` of the sorted chunk kept by the ESD test."""
    p = n_finite.size
    columns = _Columns.build(sorted_, n_finite)
    k = _esd_max_outliers(n_finite, fraction)
    k_max = int(k.max()) if p else 0
    lo = np.zeros(p, dtype=np.intp)
    hi = n_finite.astype(np.intp)
    steps_lo = np.zeros((k_max + 1, p), dtype=np.intp)
    steps_hi = np.broadcast_to(hi, (k_max + 1, p)).copy()
    stats = np.full((k_max, p), -np.inf)
    active = np.flatnonzero(k > 0)
    take = columns.take
    for i in range(k_max):
        active = active[k[active] > i]
        if active.size == 0:
            break
        a_lo, a_hi = lo[active], hi[active]
        count = a_hi - a_lo
        n_top = np.maximum(1, _floor_fraction(fraction, count) - i)
        n_bottom = np.maximum(1, _floor_fraction(fraction / relax, count) - i)
        trimmed = n_top + n_bottom < count - 2
        t_lo = np.where(trimmed, a_lo + n_bottom, a_lo)
        t_hi = np.where(trimmed, a_hi - n_top, a_hi)
        t_sum = take(columns.c1, t_hi, active) - take(columns.c1, t_lo, active)
        offset = columns.offset[active]
        mid_a = take(columns.values, a_lo + (count - 1) // 2, active).astype(np.float64)
        mid_b = take(columns.values, a_lo + count // 2, active).astype(np.float64)
        centre = np.where(trimmed, t_sum / (t_hi - t_lo) + offset, 0.5 * (mid_a + mid_b))
        s1 = take(columns.c1, a_hi, active) - take(columns.c1, a_lo, active)
        s2 = take(columns.c2, a_hi, active) - take(columns.c2, a_lo, active)
        scale = np.sqrt(_variance(s1, s2, count, 1))
        bottom = take(columns.values, a_lo, active).astype(np.float64)
        top = take(columns.values, a_hi - 1, active).astype(np.float64)
        valid = ~_is_zero(scale, centre)
        safe = np.where(valid, scale, 1.0)
        r_low = np.where(valid, (centre - bottom) / (relax * safe), 0.0)
        r_high = np.where(valid, (top - centre) / safe, 0.0)
        from_low = r_low >= r_high
        stats[i, active] = np.maximum(r_low, r_high)
        lo[active] = a_lo + from_low
        hi[active] = a_hi - ~from_low
        steps_lo[i + 1, active] = lo[active]
        steps_hi[i + 1, active] = hi[active]
        stopped = ~valid  # a zero scale ends the test for that pixel
        if stopped.any():
            k[active[stopped]] = i + 1
            stats[i, active[stopped]] = -np.inf
    tests = np.arange(k_max)[:, None]
    critical = lam[n_finite[None, :], np.minimum(tests, lam.shape[1] - 1)]
    with np.errstate(invalid="ignore"):
        exceed = (tests < k[None, :]) & (stats > critical)
    found = exceed.any(axis=0)
    n_out = np.where(found, k_max - np.argmax(exceed[::-1], axis=0), 0)
    cols = np.arange(p)
    return steps_lo[n_out, cols], steps_hi[n_out, cols]


# --------------------------------------------------------------------------- automatic choice
_FRAME_TYPES = ("light", "flat", "bias", "dark")


def auto_method(n_subs: int, *, frame_type: str = "light") -> str:
    """Rejection method WBPP picks automatically for a group of ``n_subs`` frames.

    Parameters
    ----------
    n_subs : int
        Number of frames integrated (>= 0).
    frame_type : {"light", "flat", "bias", "dark"}, optional
        Kind of frames (default "light"). WBPP never goes past Winsorized sigma
        clipping for bias and dark frames.

    Returns
    -------
    str
        ``"percentile_clip"`` for fewer than 6 frames, ``"winsorized_sigma"`` for 6 to 15
        frames (and for any larger bias or dark group), ``"linear_fit"`` above 15.

    Notes
    -----
    These are the thresholds of ``FrameGroup.bestRejectionMethod`` in PixInsight's
    WeightedBatchPreprocessing (WBPP 2.x). WBPP's automatic mode never selects ESD or
    averaged sigma clipping; its rejection advisor only recommends ESD for sets of 25
    or more frames when chosen by hand. Older WBPP 1.x used percentile below 8 frames,
    averaged sigma clipping for 8-10, Winsorized sigma clipping for 11-19 and linear
    fit from 20.

    References
    ----------
    .. [1] PixInsight WeightedBatchPreprocessing script (WBPP 2.x), ``BPP-FrameGroup.js``:
       ``FrameGroup.bestRejectionMethod`` and ``rejectionIsGood``.
    .. [2] WBPP 1.3.0 (2018), ``WeightedBatchPreprocessing-engine.js``:
       ``FrameGroup.bestRejectionMethod`` (the older thresholds).
    """
    if isinstance(n_subs, bool) or not isinstance(n_subs, int | np.integer) or n_subs < 0:
        raise ValueError(f"n_subs={n_subs!r} must be an int >= 0 (the number of frames)")
    if frame_type not in _FRAME_TYPES:
        raise ValueError(f"frame_type={frame_type!r} is not allowed; use one of {_FRAME_TYPES}")
    if n_subs < 6:
        return "percentile_clip"
    if n_subs <= 15 or frame_type in ("bias", "dark"):
        return "winsorized_sigma"
    return "linear_fit"


# --------------------------------------------------------------------------- large scale
def grow_rejection(mask: ArrayLike, *, growth: int, min_pixels: int) -> np.ndarray:
    """Grow the rejected structures of one sub's 2-D rejection mask into their edges.

    A satellite or aircraft trail, or a cosmic-ray cluster, is rejected where it is bright;
    its faint edges fall under the clipping threshold but are the same artefact. A rejected
    pixel with at least ``min_pixels`` rejected pixels (itself included) in its
    ``(2 growth + 1)``-pixel square neighbourhood belongs to such a structure; every pixel
    within ``growth`` of one is rejected too. Isolated rejections (noise) never grow.
    This is a simple form of PixInsight's large-scale pixel rejection.

    Parameters
    ----------
    mask : array_like of bool
        (rows, cols) rejections of one sub.
    growth : int
        Radius (pixels) of the neighbourhood and of the growth (>= 1).
    min_pixels : int
        Rejected pixels in the neighbourhood needed to seed growth (>= 1).

    Returns
    -------
    ndarray of bool
        The grown mask (a superset of ``mask``).

    Notes
    -----
    The result at a pixel depends only on the mask within ``2 growth`` pixels of it, so a
    band of rows processed with ``2 growth`` extra rows on each side gives the same result
    as the whole image.
    """
    rejected = np.asarray(mask, dtype=bool)
    if rejected.ndim != 2:
        raise ValueError(f"mask has shape {rejected.shape}; pass one sub's 2-D mask")
    if growth < 1 or min_pixels < 1:
        raise ValueError(f"growth={growth} and min_pixels={min_pixels} must both be >= 1")
    grown = rejected.copy()
    if rejected.any():
        _clip.grow_mask(rejected, int(growth), int(min_pixels), grown)
    return grown
