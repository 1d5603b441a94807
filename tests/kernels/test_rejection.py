"""Tests for pipeline.kernels.rejection."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.stats import sigma_clip

from pipeline.kernels.rejection import (
    grow_rejection,
    minmax_mask,
    sigma_clip_mask,
    winsorized_sigma_clip_mask,
)

METHODS = {
    "sigma": lambda s: sigma_clip_mask(s, low=3.0, high=3.0),
    "winsorized": lambda s: winsorized_sigma_clip_mask(s, low=3.0, high=3.0),
    "minmax": lambda s: minmax_mask(s, n_low=1, n_high=1),
}


def _outlier_stack(seed=7, shape=()):
    """15 subs at 100 +- 1; frame 4 is 1000 (high) and frame 11 is -500 (low).

    One pixel by default: at 3 sigma a genuine sample among 13 Gaussian draws is
    itself clipped in a percent or two of pixels (e.g. a 3.2-sigma draw), so a
    many-pixel version would test the noise rather than the outliers.
    """
    rng = np.random.default_rng(seed)
    stack = rng.normal(100.0, 1.0, (15, *shape)).astype(np.float32)
    stack[4] = 1000.0
    stack[11] = -500.0
    return stack


def _astropy_mask(stack, low, high, maxiters):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns about NaN input
        clipped = sigma_clip(
            stack,
            sigma_lower=low,
            sigma_upper=high,
            maxiters=maxiters,
            cenfunc="median",
            stdfunc="std",
            axis=0,
        )
    return np.ma.getmaskarray(clipped) & np.isfinite(stack)


def _planted(seed, shape, nan_fraction=0.0):
    rng = np.random.default_rng(seed)
    stack = rng.normal(100.0, 5.0, shape)
    hit = rng.random(shape) < 0.03
    stack[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(15, 300, hit.sum())
    stack[rng.random(shape) < nan_fraction] = np.nan
    return stack


@pytest.mark.parametrize("method", sorted(METHODS))
def test_obvious_outliers_exactly_rejected(method):
    stack = _outlier_stack()
    low, high = METHODS[method](stack)
    expected_low = np.zeros(stack.shape, dtype=bool)
    expected_high = np.zeros(stack.shape, dtype=bool)
    expected_low[11] = True
    expected_high[4] = True
    np.testing.assert_array_equal(low, expected_low)
    np.testing.assert_array_equal(high, expected_high)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_samples_are_untouched_and_not_counted(method):
    clean = _outlier_stack(seed=8)
    # interleave three frames that are NaN everywhere, plus scattered NaN pixels
    holed = np.insert(clean, [2, 9, 15], np.nan, axis=0)
    nan_frames = [2, 10, 17]
    real = [i for i in range(holed.shape[0]) if i not in nan_frames]
    low_c, high_c = METHODS[method](clean)
    low_h, high_h = METHODS[method](holed)
    assert not low_h[nan_frames].any() and not high_h[nan_frames].any()
    np.testing.assert_array_equal(low_h[real], low_c)
    np.testing.assert_array_equal(high_h[real], high_c)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_pixels_with_too_few_samples_are_left_alone(method):
    stack = np.full((6, 2), np.nan, dtype=np.float32)
    stack[:2, 0] = [1.0, 1000.0]  # two finite samples only
    low, high = METHODS[method](stack)
    assert not low.any() and not high.any()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_infinite_samples_count_as_missing(method):
    stack = _outlier_stack(seed=9)
    with_inf = np.concatenate([stack, np.full((1, *stack.shape[1:]), np.inf, np.float32)])
    low, high = METHODS[method](with_inf)
    assert not low[-1].any() and not high[-1].any()
    np.testing.assert_array_equal(high[:-1], METHODS[method](stack)[1])


@pytest.mark.parametrize(("low", "high"), [(3.0, 3.0), (2.5, 3.5), (2.0, 2.0), (4.0, 1.8)])
@pytest.mark.parametrize("nan_fraction", [0.0, 0.1])
def test_sigma_clip_matches_astropy(low, high, nan_fraction):
    # continuous random data: no ties, no pixel clipped below 3 survivors
    stack = _planted(11, (25, 30, 40), nan_fraction)
    lo_mask, hi_mask = sigma_clip_mask(stack, low=low, high=high, max_iterations=10)
    np.testing.assert_array_equal(lo_mask | hi_mask, _astropy_mask(stack, low, high, 10))
    assert not (lo_mask & hi_mask).any()
    median = np.nanmedian(np.where(lo_mask | hi_mask, np.nan, stack), axis=0)
    assert np.all(stack[lo_mask] < np.broadcast_to(median, stack.shape)[lo_mask])
    assert np.all(stack[hi_mask] > np.broadcast_to(median, stack.shape)[hi_mask])


@pytest.mark.parametrize("max_iterations", [1, 2])
def test_sigma_clip_iteration_cap_matches_astropy(max_iterations):
    stack = _planted(12, (12, 50, 50)).astype(np.float32)
    lo_mask, hi_mask = sigma_clip_mask(stack, low=2.0, high=2.0, max_iterations=max_iterations)
    expected = _astropy_mask(stack, 2.0, 2.0, max_iterations)
    np.testing.assert_array_equal(lo_mask | hi_mask, expected)


def test_sigma_clip_keeps_three_survivors():
    # median 5, std 5: 0.5-sigma bounds (2.5, 7.5) would reject all six samples
    # (astropy clips them all); the guard refuses a pass leaving < 3 survivors.
    stack = np.array([0.0, 0, 0, 10, 10, 10])[:, None]
    assert _astropy_mask(stack, 0.5, 0.5, 10).all()
    lo_mask, hi_mask = sigma_clip_mask(stack, low=0.5, high=0.5)
    assert not lo_mask.any() and not hi_mask.any()


def _pi_winsorized_sigma(values):
    """Slow reference of PixInsight's winsorization loop (iterated to convergence)."""
    median = np.median(values)
    sigma = values.std(ddof=1)
    v = values.copy()
    for step in range(10_000):
        if not sigma > 1e-12 * (abs(median) + sigma):
            break
        v = np.clip(v, median - 1.5 * sigma, median + 1.5 * sigma)
        previous, sigma = sigma, 1.134 * v.std(ddof=1)
        if step > 0 and abs(previous - sigma) <= 1e-14 * previous:
            break
    return median, sigma


def _pi_winsorized_masks(column, low, high, max_iterations=10):
    """Slow per-pixel reference of winsorized sigma clipping with the 3-survivor guard."""
    keep = np.isfinite(column)
    lo_mask = np.zeros(column.shape, dtype=bool)
    hi_mask = np.zeros(column.shape, dtype=bool)
    if keep.sum() < 3:
        return lo_mask, hi_mask
    for _ in range(max_iterations):
        median, sigma = _pi_winsorized_sigma(column[keep])
        if not sigma > 1e-12 * (abs(median) + sigma):
            break
        new_lo = keep & (column < median - low * sigma)
        new_hi = keep & (column > median + high * sigma)
        if not (new_lo.any() or new_hi.any()) or keep.sum() - new_lo.sum() - new_hi.sum() < 3:
            break
        lo_mask |= new_lo
        hi_mask |= new_hi
        keep &= ~(new_lo | new_hi)
    return lo_mask, hi_mask


@pytest.mark.parametrize("n_frames", [4, 7, 16, 33])
def test_winsorized_matches_pixinsight_reference(n_frames):
    stack = _planted(20 + n_frames, (n_frames, 300), nan_fraction=0.05)
    stack[:, :40] = np.round(stack[:, :40] / 4) * 4  # ties
    lo_mask, hi_mask = winsorized_sigma_clip_mask(stack, low=2.5, high=3.0)
    for p in range(stack.shape[1]):
        ref_lo, ref_hi = _pi_winsorized_masks(stack[:, p], 2.5, 3.0)
        np.testing.assert_array_equal(lo_mask[:, p], ref_lo, err_msg=f"pixel {p}")
        np.testing.assert_array_equal(hi_mask[:, p], ref_hi, err_msg=f"pixel {p}")


def test_winsorized_is_more_robust_than_classic():
    # two moderate outliers inflate the classic std enough to hide both of them
    stack = np.array([99.0, 100.5, 101, 99.5, 100, 100.2, 130, 131])[:, None]
    assert not sigma_clip_mask(stack, low=3, high=3)[1].any()
    _, high = winsorized_sigma_clip_mask(stack, low=3, high=3)
    np.testing.assert_array_equal(high[:, 0], [0, 0, 0, 0, 0, 0, 1, 1])


def test_winsorized_constant_pixel_rejects_nothing():
    stack = np.full((10, 3), 42.0)
    lo_mask, hi_mask = winsorized_sigma_clip_mask(stack, low=1.0, high=1.0)
    assert not lo_mask.any() and not hi_mask.any()


def test_masks_keep_stack_shape_and_accept_float32():
    stack = _planted(30, (9, 4, 5, 3)).astype(np.float32)
    for low_mask, high_mask in (
        sigma_clip_mask(stack, low=2, high=2),
        winsorized_sigma_clip_mask(stack, low=2, high=2),
        minmax_mask(stack, n_low=2, n_high=1),
    ):
        assert low_mask.shape == stack.shape and low_mask.dtype == bool
        assert high_mask.shape == stack.shape and high_mask.dtype == bool


def test_minmax_rejects_exact_counts_with_ties_by_frame_order():
    stack = np.full((6, 3), 7.0)
    stack[:, 1] = [3, 1, 4, 1, 5, 9]
    stack[2, 2] = np.nan
    low, high = minmax_mask(stack, n_low=2, n_high=1)
    np.testing.assert_array_equal(low[:, 0], [1, 1, 0, 0, 0, 0])  # all tied: first frames
    np.testing.assert_array_equal(high[:, 0], [0, 0, 0, 0, 0, 1])  # ...and last frame
    np.testing.assert_array_equal(low[:, 1], [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(high[:, 1], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(low[:, 2], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(high[:, 2], [0, 0, 0, 0, 0, 1])
    assert (low.sum(axis=0) == 2).all() and (high.sum(axis=0) == 1).all()


def test_minmax_leaves_pixels_that_would_be_emptied():
    stack = np.array([[1.0], [2.0], [3.0], [np.nan]])
    low, high = minmax_mask(stack, n_low=2, n_high=1)
    assert not low.any() and not high.any()
    low, high = minmax_mask(stack, n_low=1, n_high=1)
    np.testing.assert_array_equal(low[:, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(high[:, 0], [0, 0, 1, 0])


def test_minmax_zero_counts_reject_nothing():
    low, high = minmax_mask(_outlier_stack(), n_low=0, n_high=0)
    assert not low.any() and not high.any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sigma_clip_mask(np.ones((3, 2)), low=0, high=3), "low=0"),
        (lambda: sigma_clip_mask(np.ones((3, 2)), low=3, high=np.nan), "high=nan"),
        (lambda: sigma_clip_mask(np.ones((3, 2)), low=3, high=3, max_iterations=0), "max_iter"),
        (lambda: winsorized_sigma_clip_mask(np.ones((3, 2)), low=3, high=-1), "high=-1"),
        (lambda: minmax_mask(np.ones((3, 2)), n_low=-1, n_high=1), "n_low=-1"),
        (lambda: minmax_mask(np.ones((3, 2)), n_low=1, n_high=1.5), "n_high=1.5"),
        (lambda: sigma_clip_mask(np.float32(3.0), low=3, high=3), "shape"),
        (lambda: sigma_clip_mask(np.ones((3, 2), complex), low=3, high=3), "dtype"),
    ],
)
def test_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _reference_growth(mask, growth, min_pixels):
    """Straightforward scipy version: neighbourhood counts, seeds, square dilation."""
    from scipy import ndimage

    box = np.ones((2 * growth + 1,) * 2, dtype=int)
    counts = ndimage.correlate(mask.astype(int), box, mode="constant")
    seeds = mask & (counts >= min_pixels)
    return mask | ndimage.binary_dilation(seeds, structure=box.astype(bool))


@pytest.mark.parametrize(("growth", "min_pixels"), [(1, 2), (2, 3), (3, 5)])
def test_grow_rejection_matches_a_reference(growth, min_pixels):
    rng = np.random.default_rng(growth)
    mask = rng.random((70, 90)) < 0.02
    mask[30:33, :] = True  # a trail
    grown = grow_rejection(mask, growth=growth, min_pixels=min_pixels)
    np.testing.assert_array_equal(grown, _reference_growth(mask, growth, min_pixels))


def test_grow_rejection_widens_a_trail_but_not_isolated_pixels():
    mask = np.zeros((40, 40), dtype=bool)
    mask[20, :] = True
    mask[5, 5] = True
    grown = grow_rejection(mask, growth=2, min_pixels=3)
    assert grown[18:23, 2:38].all() and not grown[17].any() and not grown[23].any()
    assert grown[5, 5] and grown[3:8, 3:8].sum() == 1


def test_grow_rejection_of_a_band_with_halo_equals_the_whole():
    rng = np.random.default_rng(4)
    mask = rng.random((60, 50)) < 0.05
    whole = grow_rejection(mask, growth=2, min_pixels=3)
    band = grow_rejection(mask[16:44], growth=2, min_pixels=3)[4:24]  # rows 20..40, halo 4
    np.testing.assert_array_equal(band, whole[20:40])
