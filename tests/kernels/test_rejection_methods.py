"""Tests for the PixInsight rejection methods of pipeline.kernels.rejection.

Percentile clipping, averaged sigma clipping, linear fit clipping, the generalized ESD
test and WBPP's automatic choice. Each method is checked on planted outliers and
against a slow, per-pixel reference written here from the published description.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import linprog

from pipeline.kernels.rejection import (
    _lad_line,
    auto_method,
    averaged_sigma_clip_mask,
    esd_mask,
    linear_fit_clip_mask,
    percentile_clip_mask,
)

# Parameters giving every method clear margins on the planted stacks below (see the
# margin notes in the tests): two outliers among 15 samples inflate every scale
# estimate that includes them.
METHODS = {
    "percentile": lambda s: percentile_clip_mask(s),  # PixInsight defaults 0.2 / 0.1
    # the gain is measured once on the full stack: the outliers set sigma to ~290
    "averaged_sigma": lambda s: averaged_sigma_clip_mask(s, low=1.5, high=1.5),
    # pass 1: 1000 sits at 4.5 (2*adev), pass 2: -500 at 7.0 (current PixInsight high)
    "linear_fit": lambda s: linear_fit_clip_mask(s, low=5.0, high=4.0),
    # R = 3.1 and 3.7 against critical values ~2.8; genuine samples stay below ~2.4
    "esd": lambda s: esd_mask(s, alpha=0.01, low_relaxation=1.0),
}


def _outlier_stack(seed=7, shape=()):
    """15 subs at 100 +- 1 (normal); frame 4 is 1000 (high) and frame 11 is -500 (low)."""
    rng = np.random.default_rng(seed)
    stack = rng.normal(100.0, 1.0, (15, *shape)).astype(np.float32)
    stack[4] = 1000.0
    stack[11] = -500.0
    return stack


def _outlier_grid(seed=3, shape=(8, 25)):
    """Many pixels of 15 subs: 13 at 100 + k/8 (k = -6..6) in a shuffled frame order,
    one at 1000 and one at -500 in random frames. Returns (stack, low, high) expected.

    The genuine samples have a known bound (+-0.75) and sort exactly linearly (all
    float32-exact), so no method can clip one of them by a noise excursion: the margins
    are those of the single-pixel case without its random tail.
    """
    rng = np.random.default_rng(seed)
    pixels = math.prod(shape)
    genuine = 100.0 + np.arange(-6, 7) / 8.0
    stack = np.empty((15, pixels), dtype=np.float32)
    low = np.zeros(stack.shape, dtype=bool)
    high = np.zeros(stack.shape, dtype=bool)
    for p in range(pixels):
        frames = rng.permutation(15)
        stack[frames[:13], p] = rng.permutation(genuine)
        stack[frames[13], p] = 1000.0
        stack[frames[14], p] = -500.0
        high[frames[13], p] = True
        low[frames[14], p] = True
    return (stack.reshape(15, *shape), low.reshape(15, *shape), high.reshape(15, *shape))


def _planted(seed, shape, nan_fraction=0.0, level=100.0):
    """Gaussian stack (sigma 5) with 3% of samples displaced by 15..300 and some NaN."""
    rng = np.random.default_rng(seed)
    stack = rng.normal(level, 5.0, shape)
    hit = rng.random(shape) < 0.03
    stack[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(15, 300, hit.sum())
    stack[rng.random(shape) < nan_fraction] = np.nan
    return stack


def _columns(stack):
    return stack.reshape(stack.shape[0], -1).T


# --------------------------------------------------------------------------- planted outliers
@pytest.mark.parametrize("method", sorted(METHODS))
def test_planted_outliers_exactly_rejected_single_pixel(method):
    stack = _outlier_stack()
    low, high = METHODS[method](stack)
    np.testing.assert_array_equal(np.flatnonzero(low), [11])
    np.testing.assert_array_equal(np.flatnonzero(high), [4])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_planted_outliers_exactly_rejected_many_pixels(method):
    stack, expected_low, expected_high = _outlier_grid()
    low, high = METHODS[method](stack)
    np.testing.assert_array_equal(low, expected_low)
    np.testing.assert_array_equal(high, expected_high)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_samples_are_untouched_and_not_counted(method):
    clean = _outlier_stack(seed=7)
    holed = np.insert(clean, [2, 9, 15], np.nan, axis=0)  # three empty frames
    real = [i for i in range(holed.shape[0]) if i not in (2, 10, 17)]
    low_c, high_c = METHODS[method](clean)
    low_h, high_h = METHODS[method](holed)
    assert not low_h[[2, 10, 17]].any() and not high_h[[2, 10, 17]].any()
    np.testing.assert_array_equal(low_h[real], low_c)
    np.testing.assert_array_equal(high_h[real], high_c)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_holes_in_many_pixels_are_not_counted(method):
    stack, _, _ = _outlier_grid(seed=5, shape=(40,))
    grown = np.concatenate([stack, np.full((4, 40), np.nan, np.float32)])
    rng = np.random.default_rng(1)
    for p in range(40):  # spread the padding NaNs over random frames of each pixel
        order = rng.permutation(19)
        grown[:, p] = grown[order, p]
    low, high = METHODS[method](grown)
    assert not (low | high)[np.isnan(grown)].any()
    assert low.sum(axis=0).tolist() == [1] * 40 and high.sum(axis=0).tolist() == [1] * 40
    np.testing.assert_array_equal(grown[low], np.full(40, -500, np.float32))
    np.testing.assert_array_equal(grown[high], np.full(40, 1000, np.float32))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_infinite_samples_count_as_missing(method):
    stack = _outlier_stack(seed=7)
    with_inf = np.concatenate([stack, np.array([np.inf, -np.inf], np.float32)])
    low, high = METHODS[method](with_inf)
    assert not (low[-2:] | high[-2:]).any()
    np.testing.assert_array_equal(low[:-2], METHODS[method](stack)[0])
    np.testing.assert_array_equal(high[:-2], METHODS[method](stack)[1])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_pixels_with_two_samples_are_left_alone(method):
    stack = np.full((6, 2), np.nan, dtype=np.float32)
    stack[:2, 0] = [1.0, 1000.0]
    stack[:, 1] = 5.0  # constant pixel: no scale, no rejection
    low, high = METHODS[method](stack)
    assert not low.any() and not high.any()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_masks_keep_shape_for_float64_and_4d(method):
    stack = _planted(30, (9, 4, 5, 3)) + 1000.0
    low, high = METHODS[method](stack)
    assert low.shape == stack.shape and low.dtype == bool
    assert high.shape == stack.shape and high.dtype == bool
    assert not (low & high).any()


# --------------------------------------------------------------------------- percentile
def test_percentile_thresholds_are_relative_to_the_median():
    stack = np.array(
        [
            [10.0, 9.0, 11.0, 7.9, 12.1, 8.0, 10.5],  # median 10: keep [8, 11]
            [-10.0, -10.5, -9.5, -13.0, -7.0, -12.0, -9.0],  # median -10, scale |m|
            [0.0, 0.0, 0.0, 5.0, -5.0, 0.0, 0.0],  # median 0: left alone
        ]
    ).T
    low, high = percentile_clip_mask(stack, low=0.2, high=0.1)
    np.testing.assert_array_equal(low[:, 0], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(high[:, 0], [0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(low[:, 1], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(high[:, 1], [0, 0, 0, 0, 1, 0, 0])
    assert not low[:, 2].any() and not high[:, 2].any()


def test_percentile_never_leaves_fewer_than_three_survivors():
    # median 100.5: 1 and 1000 are far outside, but rejecting both would leave two
    stack = np.array([[1.0], [100.0], [1000.0], [101.0]])
    low, high = percentile_clip_mask(stack)
    assert not low.any() and not high.any()
    low, high = percentile_clip_mask(np.append(stack, [[100.2]], axis=0))
    np.testing.assert_array_equal(low[:, 0], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(high[:, 0], [0, 0, 1, 0, 0])


def _percentile_reference(column, low, high):
    keep = np.isfinite(column)
    lo = np.zeros(column.shape, bool)
    hi = np.zeros(column.shape, bool)
    x = column[keep]
    if x.size < 3 or np.median(x) == 0:
        return lo, hi
    m = np.median(x)
    lo[keep] = (m - x) / abs(m) > low
    hi[keep] = (x - m) / abs(m) > high
    if keep.sum() - lo.sum() - hi.sum() < 3:
        lo[:] = hi[:] = False
    return lo, hi


@pytest.mark.parametrize("level", [100.0, -40.0])
def test_percentile_matches_reference(level):
    stack = _planted(41, (11, 400), nan_fraction=0.1, level=level)
    low, high = percentile_clip_mask(stack, low=0.15, high=0.25)
    for p, column in enumerate(_columns(stack)):
        ref_lo, ref_hi = _percentile_reference(column, 0.15, 0.25)
        np.testing.assert_array_equal(low[:, p], ref_lo, err_msg=f"pixel {p}")
        np.testing.assert_array_equal(high[:, p], ref_hi, err_msg=f"pixel {p}")


# --------------------------------------------------------------------------- averaged sigma
def test_averaged_sigma_measures_the_gain_once_on_the_full_stack():
    # m0 = 100, s**2 = (30**2 + 40**2) / 100 / 9, sigma = s * sqrt(100) = 16.67
    stack = np.array([100.0] * 8 + [130.0, 60.0])[:, None]
    low, high = averaged_sigma_clip_mask(stack, low=2.0, high=1.5)  # bounds 66.7, 125
    np.testing.assert_array_equal(np.flatnonzero(low), [9])
    np.testing.assert_array_equal(np.flatnonzero(high), [8])
    low, high = averaged_sigma_clip_mask(stack, low=2.5, high=1.9)  # bounds 58.3, 131.7
    assert not low.any() and not high.any()


def test_averaged_sigma_default_keeps_an_outlier_hidden_by_the_gain_estimate():
    # sigma ~ 290 from the full stack: -500 is only ~2.1 sigma low (PixInsight semantics)
    low, high = averaged_sigma_clip_mask(_outlier_stack())
    assert not low.any()
    np.testing.assert_array_equal(np.flatnonzero(high), [4])


def test_averaged_sigma_needs_a_positive_median():
    stack = _outlier_stack() - 200.0  # median ~ -100: the Poisson model does not apply
    low, high = averaged_sigma_clip_mask(stack, low=1.5, high=1.5)
    assert not low.any() and not high.any()


def _averaged_reference(column, low, high, max_iterations):
    """PixInsight's averaged sigma clipping, transcribed loop by loop."""
    keep = np.isfinite(column)
    lo = np.zeros(column.shape, bool)
    hi = np.zeros(column.shape, bool)
    x = column[keep]
    m0 = np.median(x) if x.size else 0.0
    if x.size < 3 or not m0 > 0:
        return lo, hi
    s = math.sqrt(np.sum((x - m0) ** 2 / m0) / (x.size - 1))
    for _ in range(max_iterations):
        m = np.median(column[keep])
        sigma = s * math.sqrt(max(m, 0.0))
        if not sigma > 1e-12 * (abs(m) + sigma):
            break
        new_lo = keep & (column < m - low * sigma)
        new_hi = keep & (column > m + high * sigma)
        n_new = new_lo.sum() + new_hi.sum()
        if n_new == 0 or keep.sum() - n_new < 3:
            break
        lo |= new_lo
        hi |= new_hi
        keep &= ~(new_lo | new_hi)
    return lo, hi


@pytest.mark.parametrize(
    ("low", "high", "iterations"), [(4.0, 3.0, 10), (2.0, 1.5, 10), (1.5, 1.0, 2)]
)
def test_averaged_sigma_matches_reference(low, high, iterations):
    stack = _planted(51, (13, 300), nan_fraction=0.08, level=400.0)
    lo_mask, hi_mask = averaged_sigma_clip_mask(
        stack, low=low, high=high, max_iterations=iterations
    )
    for p, column in enumerate(_columns(stack)):
        ref_lo, ref_hi = _averaged_reference(column, low, high, iterations)
        np.testing.assert_array_equal(lo_mask[:, p], ref_lo, err_msg=f"pixel {p}")
        np.testing.assert_array_equal(hi_mask[:, p], ref_hi, err_msg=f"pixel {p}")


# --------------------------------------------------------------------------- linear fit
def _lad_reference(y):
    """Exact least-absolute-deviation line through (j, y[j]) by linear programming."""
    n = y.size
    cost = np.r_[0.0, 0.0, np.ones(2 * n)]
    equality = np.zeros((n, 2 + 2 * n))
    equality[:, 0] = 1.0
    equality[:, 1] = np.arange(n)
    equality[np.arange(n), 2 + np.arange(n)] = 1.0
    equality[np.arange(n), 2 + n + np.arange(n)] = -1.0
    bounds = [(None, None)] * 2 + [(0, None)] * (2 * n)
    result = linprog(cost, A_eq=equality, b_eq=y, bounds=bounds, method="highs")
    return result.x[0], result.x[1], result.fun / n


def _lad(y):
    n = y.size
    buffers = (np.empty(n), np.empty(n), np.empty(n))
    return _lad_line(np.ascontiguousarray(y, dtype=np.float64), n, n // 4, *buffers)[:3]


def test_lad_line_is_optimal_including_tied_and_collinear_data():
    rng = np.random.default_rng(8)
    for trial in range(120):
        n = int(rng.integers(3, 45))
        y = rng.normal(0.0, 1.0, n)
        if trial % 2:
            y = np.round(y * 1.5)  # ties: several points on one line, flat optima
        if trial % 5 == 0:
            y[rng.integers(n)] += 40.0
        y = np.sort(y)
        _, _, adev = _lad(y)
        _, _, best = _lad_reference(y)
        assert adev == pytest.approx(best, rel=1e-9, abs=1e-12), (trial, y)


def _linear_fit_reference(column, low, high, max_iterations):
    """PixInsight's linear fit clipping (without its sqrt(1 + b**2) factor), with an LP fit."""
    lo = np.zeros(column.shape, bool)
    hi = np.zeros(column.shape, bool)
    frames = np.flatnonzero(np.isfinite(column))
    if frames.size < 5:
        return lo, hi
    frames = frames[np.argsort(column[frames], kind="stable")]
    for _ in range(max_iterations):
        y = column[frames].astype(np.float64)
        a, b, adev = _lad_reference(y)
        sigma = 2.0 * adev
        if not sigma > 1e-12 * (abs(np.median(y)) + sigma):
            break
        residual = y - (a + b * np.arange(y.size))
        new_lo = -residual >= low * sigma
        new_hi = residual >= high * sigma
        n_new = new_lo.sum() + new_hi.sum()
        if n_new == 0 or y.size - n_new < 3:
            break
        lo[frames[new_lo]] = True
        hi[frames[new_hi]] = True
        frames = frames[~(new_lo | new_hi)]
    return lo, hi


@pytest.mark.parametrize(
    ("n_frames", "low", "high"), [(7, 5.0, 2.5), (16, 4.0, 3.0), (30, 5.0, 4.0)]
)
def test_linear_fit_matches_reference(n_frames, low, high):
    stack = _planted(60 + n_frames, (n_frames, 40), nan_fraction=0.05)
    lo_mask, hi_mask = linear_fit_clip_mask(stack, low=low, high=high)
    for p, column in enumerate(_columns(stack)):
        ref_lo, ref_hi = _linear_fit_reference(column, low, high, 10)
        np.testing.assert_array_equal(lo_mask[:, p], ref_lo, err_msg=f"pixel {p}")
        np.testing.assert_array_equal(hi_mask[:, p], ref_hi, err_msg=f"pixel {p}")


def test_linear_fit_follows_a_gradient_that_sigma_clipping_would_cut():
    # 20 frames spread evenly over 100..138 (a varying sky gradient), plus a trail
    rng = np.random.default_rng(4)
    stack = (100.0 + 2.0 * rng.permutation(20) + rng.uniform(-0.05, 0.05, 20))[:, None]
    stack[7] = 180.0
    low, high = linear_fit_clip_mask(stack, low=5.0, high=4.0)
    assert not low.any()
    np.testing.assert_array_equal(np.flatnonzero(high), [7])


def test_linear_fit_needs_five_samples():
    stack = np.array([1.0, 2.0, 3.0, 500.0, np.nan, np.nan])[:, None]
    low, high = linear_fit_clip_mask(stack, low=0.1, high=0.1)
    assert not low.any() and not high.any()


# --------------------------------------------------------------------------- generalized ESD
def _esd_reference(column, fraction, alpha, relax):
    """Rosner's (1983) generalized ESD many-outlier procedure for one pixel, with
    PixInsight's trimmed-mean centre and relaxed low side, written as a plain loop."""
    lo = np.zeros(column.shape, bool)
    hi = np.zeros(column.shape, bool)
    frames = np.flatnonzero(np.isfinite(column))
    n = frames.size
    k = min(max(min(math.floor(fraction * n + 1e-9), n - 2), 1), n - 3)
    if k < 1:
        return lo, hi
    frames = list(frames[np.argsort(column[frames], kind="stable")])
    statistics, removed = [], []
    for i in range(k):
        x = column[frames].astype(np.float64)
        size = x.size
        top = max(1, math.floor(fraction * size + 1e-9) - i)
        bottom = max(1, math.floor(fraction / relax * size + 1e-9) - i)
        centre = x[bottom : size - top].mean() if top + bottom < size - 2 else np.median(x)
        scale = x.std(ddof=1)
        if not scale > 1e-12 * (abs(centre) + scale):
            break
        d = x - centre
        r = np.where(d >= 0, d / scale, -d / (relax * scale))
        j = int(np.argmax(r))  # first maximum: the low end wins a tie
        if d[j] >= 0:
            j = size - 1 - int(np.argmax(r[::-1]))  # among equal highs, the last frame
        statistics.append(r[j])
        removed.append((frames.pop(j), d[j] >= 0))
    outliers = 0
    for i, r_i in enumerate(statistics):
        rest = n - i
        t = stats.t.isf(alpha / (2 * rest), rest - 2)
        critical = (rest - 1) * t / math.sqrt((rest - 2 + t * t) * rest)
        if r_i > critical:
            outliers = i + 1
    for frame, is_high in removed[:outliers]:
        (hi if is_high else lo)[frame] = True
    return lo, hi


@pytest.mark.parametrize(
    ("n_frames", "fraction", "alpha", "relax"),
    [(8, 0.3, 0.05, 1.5), (20, 0.3, 0.05, 1.0), (25, 0.2, 0.2, 2.0), (60, 0.3, 0.05, 1.5)],
)
def test_esd_matches_rosner_reference(n_frames, fraction, alpha, relax):
    stack = _planted(70 + n_frames, (n_frames, 150), nan_fraction=0.06)
    stack[:, :10] = np.round(stack[:, :10])  # some ties
    low, high = esd_mask(stack, outlier_fraction=fraction, alpha=alpha, low_relaxation=relax)
    assert high.any() and (low.any() or n_frames < 10)
    for p, column in enumerate(_columns(stack)):
        ref_lo, ref_hi = _esd_reference(column, fraction, alpha, relax)
        np.testing.assert_array_equal(low[:, p], ref_lo, err_msg=f"pixel {p}")
        np.testing.assert_array_equal(high[:, p], ref_hi, err_msg=f"pixel {p}")


def test_esd_float32_matches_reference():
    stack = _planted(90, (15, 200), nan_fraction=0.05).astype(np.float32)
    low, high = esd_mask(stack)
    for p, column in enumerate(_columns(stack)):
        ref_lo, ref_hi = _esd_reference(column, 0.3, 0.05, 1.5)
        np.testing.assert_array_equal(low[:, p], ref_lo, err_msg=f"pixel {p}")
        np.testing.assert_array_equal(high[:, p], ref_hi, err_msg=f"pixel {p}")


def test_esd_low_relaxation_spares_dark_samples_only():
    base = 100.0 + np.arange(-6, 7) / 8.0  # sample std ~0.49
    dark = np.append(base, 98.0)[:, None]  # 2 below, ~4 std
    bright = np.append(base, 102.0)[:, None]
    assert esd_mask(dark, low_relaxation=1.0)[0][-1, 0]
    assert not esd_mask(dark, low_relaxation=2.0)[0].any()
    assert esd_mask(bright, low_relaxation=2.0)[1][-1, 0]


def test_esd_rejects_at_most_the_outlier_fraction():
    stack = np.array([10.0] * 7 + [50.0, 60.0, 70.0])[:, None]
    low, high = esd_mask(stack, outlier_fraction=0.2, alpha=0.2)
    assert high.sum() <= 2 and not low.any()


# --------------------------------------------------------------------------- automatic choice
@pytest.mark.parametrize(
    ("n_subs", "light", "dark"),
    [
        (0, "percentile_clip", "percentile_clip"),
        (3, "percentile_clip", "percentile_clip"),
        (5, "percentile_clip", "percentile_clip"),
        (6, "winsorized_sigma", "winsorized_sigma"),
        (15, "winsorized_sigma", "winsorized_sigma"),
        (16, "linear_fit", "winsorized_sigma"),
        (200, "linear_fit", "winsorized_sigma"),
    ],
)
def test_auto_method_follows_wbpp_thresholds(n_subs, light, dark):
    assert auto_method(n_subs) == light
    assert auto_method(n_subs, frame_type="flat") == light
    assert auto_method(n_subs, frame_type="bias") == dark
    assert auto_method(n_subs, frame_type="dark") == dark


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: percentile_clip_mask(np.ones((3, 2)), low=0), "low=0"),
        (lambda: percentile_clip_mask(np.ones((3, 2)), high=-0.1), "high=-0.1"),
        (lambda: averaged_sigma_clip_mask(np.ones((3, 2)), low=np.inf), "low=inf"),
        (lambda: averaged_sigma_clip_mask(np.ones((3, 2)), max_iterations=0), "max_iter"),
        (lambda: linear_fit_clip_mask(np.ones((5, 2)), high=0), "high=0"),
        (lambda: linear_fit_clip_mask(np.ones((5, 2)), max_iterations=2.5), "max_iter"),
        (lambda: esd_mask(np.ones((5, 2)), outlier_fraction=1.0), "outlier_fraction=1.0"),
        (lambda: esd_mask(np.ones((5, 2)), alpha=0), "alpha=0"),
        (lambda: esd_mask(np.ones((5, 2)), low_relaxation=0.5), "low_relaxation=0.5"),
        (lambda: esd_mask(np.float32(1.0)), "shape"),
        (lambda: linear_fit_clip_mask(np.ones((5, 2), complex)), "dtype"),
        (lambda: auto_method(-1), "n_subs=-1"),
        (lambda: auto_method(12.0), "n_subs=12.0"),
        (lambda: auto_method(12, frame_type="science"), "frame_type='science'"),
    ],
)
def test_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
