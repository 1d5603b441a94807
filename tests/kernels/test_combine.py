"""Tests for pipeline.kernels.combine."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline.kernels.combine import median_combine, weighted_mean


@pytest.fixture
def data():
    rng = np.random.default_rng(42)
    stack = rng.normal(1000, 30, (9, 17, 23)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.1] = np.nan
    stack[:, 0, 0] = np.nan  # a pixel without any data
    rejected = rng.random(stack.shape) < 0.15
    rejected[:, 1, 1] = True  # a pixel fully rejected
    weights = rng.uniform(0.2, 3.0, 9)
    return stack, rejected, weights


def test_weighted_mean_matches_numpy_reference(data):
    stack, rejected, weights = data
    image, count = weighted_mean(stack, weights=weights, rejected=rejected)
    assert image.dtype == np.float32 and count.dtype == np.uint16
    np.testing.assert_allclose(image, _reference_mean(stack, rejected, weights), rtol=1e-6)
    np.testing.assert_array_equal(count, (np.isfinite(stack) & ~rejected).sum(axis=0))
    assert np.isnan(image[0, 0]) and np.isnan(image[1, 1])
    assert count[0, 0] == 0 and count[1, 1] == 0


def _reference_mean(stack, rejected, weights):
    """Straightforward float64 numpy weighted mean over the usable samples."""
    use = np.isfinite(stack) & ~rejected
    num = (np.where(use, stack.astype(np.float64), 0) * weights[:, None, None]).sum(axis=0)
    den = (use * weights[:, None, None]).sum(axis=0)
    with np.errstate(invalid="ignore"):
        return num / den


def test_weighted_mean_is_invariant_to_weight_scale(data):
    stack, rejected, weights = data
    a, _ = weighted_mean(stack, weights=weights, rejected=rejected)
    b, _ = weighted_mean(stack, weights=weights * 7.3, rejected=rejected)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_weighted_mean_is_invariant_to_frame_order(data):
    stack, rejected, weights = data
    order = np.random.default_rng(1).permutation(stack.shape[0])
    a, count_a = weighted_mean(stack, weights=weights, rejected=rejected)
    b, count_b = weighted_mean(stack[order], weights=weights[order], rejected=rejected[order])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(count_a, count_b)


def test_weighted_mean_equal_weights_is_plain_nanmean(data):
    stack, _, _ = data
    image, count = weighted_mean(stack, weights=np.ones(stack.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN pixel
        expected = np.nanmean(stack.astype(np.float64), axis=0)
    np.testing.assert_allclose(image, expected, rtol=1e-6)
    np.testing.assert_array_equal(count, np.isfinite(stack).sum(axis=0))


def test_weighted_mean_zero_weight_frames_do_not_count():
    stack = np.array([[1.0], [3.0], [100.0]], dtype=np.float32)
    image, count = weighted_mean(stack, weights=[1.0, 1.0, 0.0])
    assert image[0] == 2.0 and count[0] == 2


def test_weighted_mean_keeps_float64():
    image, _ = weighted_mean(np.ones((3, 2)), weights=[1, 2, 3])
    assert image.dtype == np.float64


def test_median_combine_matches_nanmedian(data):
    stack, rejected, _ = data
    image, count = median_combine(stack, rejected=rejected)
    masked = np.where(rejected, np.nan, stack)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(masked.astype(np.float64), axis=0)
    assert image.dtype == np.float32 and count.dtype == np.uint16
    np.testing.assert_allclose(image, expected, rtol=1e-6)
    np.testing.assert_array_equal(count, np.isfinite(masked).sum(axis=0))
    assert np.isnan(image[0, 0]) and np.isnan(image[1, 1])


def test_median_combine_even_and_odd_counts():
    stack = np.array([[1.0, 1.0], [2.0, 5.0], [10.0, np.nan], [4.0, 3.0]])
    image, count = median_combine(stack)
    np.testing.assert_array_equal(image, [3.0, 3.0])
    np.testing.assert_array_equal(count, [4, 3])


def test_median_combine_is_invariant_to_frame_order(data):
    stack, rejected, _ = data
    order = np.random.default_rng(2).permutation(stack.shape[0])
    a, count_a = median_combine(stack, rejected=rejected)
    b, count_b = median_combine(stack[order], rejected=rejected[order])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(count_a, count_b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [1.0, 2.0]}, "one weight per frame"),
        ({"weights": [1.0, -2.0, 1.0]}, "finite and >= 0"),
        ({"weights": [0.0, 0.0, 0.0]}, "all zero"),
        ({"weights": [1, 1, 1], "rejected": np.zeros((3, 4), dtype=int)}, "boolean"),
        ({"weights": [1, 1, 1], "rejected": np.zeros((3, 5), dtype=bool)}, "shape"),
    ],
)
def test_weighted_mean_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        weighted_mean(np.ones((3, 4)), **kwargs)


def test_median_combine_validation():
    with pytest.raises(ValueError, match="shape"):
        median_combine(np.ones((3, 4)), rejected=np.zeros((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="N"):
        median_combine(np.ones((0, 4)))
