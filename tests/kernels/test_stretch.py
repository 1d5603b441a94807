"""Tests for pipeline.kernels.stretch."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels.stretch import (
    StretchParameters,
    apply_stretch,
    auto_stretch_parameters,
    midtones_transfer,
    normalize_to_unit,
)

MIDTONES = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.99, 1.0]


@pytest.mark.parametrize("m", MIDTONES)
def test_mtf_fixed_points(m):
    assert midtones_transfer(0.0, m) == 0.0
    assert midtones_transfer(1.0, m) == 1.0
    if 0 < m < 1:
        assert midtones_transfer(m, m) == pytest.approx(0.5, abs=1e-12)


def test_mtf_half_is_identity_and_monotone():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(midtones_transfer(x, 0.5), x, atol=1e-15)
    assert np.all(np.diff(midtones_transfer(x, 0.1)) > 0)


def test_mtf_balance_that_maps_a_level_to_a_target():
    # AutoSTF relies on MTF(MTF(target, d), d) = target
    for d in (0.001, 0.02, 0.3):
        m = midtones_transfer(d, 0.25)  # = MTF(m=0.25, x=d) in PixInsight's order
        assert midtones_transfer(d, m) == pytest.approx(0.25, abs=1e-12)


def test_mtf_dtypes_and_nan():
    x = np.array([0.2, np.nan, -1.0, 2.0], dtype=np.float32)
    y = midtones_transfer(x, 0.3)
    assert y.dtype == np.float32
    assert np.isnan(y[1]) and y[2] == 0 and y[3] == 1
    assert isinstance(midtones_transfer(0.2, 0.3), float)


@pytest.mark.parametrize("m", [-0.1, 1.5, np.nan])
def test_mtf_rejects_bad_balance(m):
    with pytest.raises(ValueError, match="midtones balance"):
        midtones_transfer(0.5, m)


def test_stretched_background_lands_on_target():
    rng = np.random.default_rng(5)
    image = rng.normal(0.02, 0.002, (300, 400)).astype(np.float32)
    params = auto_stretch_parameters(image)
    stretched = apply_stretch(image, params)
    assert stretched.dtype == np.float32 and stretched.shape == image.shape
    assert np.median(stretched) == pytest.approx(0.25, abs=0.01)


def test_parameters_follow_the_autostf_formulae():
    rng = np.random.default_rng(6)
    image = rng.normal(0.05, 0.004, (3, 100, 120))
    image[1] *= 1.5
    median = np.median(image, axis=(1, 2))
    madn = 1.4826 * np.median(np.abs(image - median[:, None, None]), axis=(1, 2))
    c0 = np.clip(median - 2.8 * madn, 0, 1)
    unlinked = auto_stretch_parameters(image, linked=False)
    np.testing.assert_allclose(unlinked.shadows, c0, rtol=1e-9)
    np.testing.assert_allclose(
        unlinked.midtones, [midtones_transfer(d, 0.25) for d in median - c0], rtol=1e-9
    )
    assert unlinked.highlights == (1.0, 1.0, 1.0)
    linked = auto_stretch_parameters(image)
    c0_linked = np.clip(np.mean(median - 2.8 * madn), 0, 1)
    assert linked.shadows == pytest.approx((c0_linked,) * 3, rel=1e-9)
    assert linked.midtones == pytest.approx(
        (midtones_transfer(median.mean() - c0_linked, 0.25),) * 3, rel=1e-9
    )


def test_linked_keeps_colour_cast_unlinked_equalises():
    rng = np.random.default_rng(7)
    base = rng.normal(0.02, 0.002, (3, 200, 200)).astype(np.float32)
    image = base * np.array([1.0, 1.6, 0.7], dtype=np.float32)[:, None, None]
    linked = apply_stretch(image, auto_stretch_parameters(image, linked=True))
    unlinked = apply_stretch(image, auto_stretch_parameters(image, linked=False))
    m_linked = np.median(linked, axis=(1, 2))
    m_unlinked = np.median(unlinked, axis=(1, 2))
    # one shared stretch: the cast survives (the faint channel even sinks below c0)
    assert m_linked[1] > m_linked[0] > m_linked[2]
    assert np.ptp(m_linked) > 0.3
    np.testing.assert_allclose(m_unlinked, 0.25, atol=0.01)


def test_statistics_ignore_nan():
    rng = np.random.default_rng(8)
    image = rng.normal(0.02, 0.002, (200, 200))
    holed = image.copy()
    holed[:50] = np.nan
    a = auto_stretch_parameters(image[50:])
    b = auto_stretch_parameters(holed)
    assert a == b
    assert apply_stretch(holed, b)[:50].max() == 0.0  # NaN -> 0


def test_zero_madn_channel_contributes_no_shadows_term():
    image = np.stack([np.full((20, 20), 0.3), np.random.default_rng(9).normal(0.1, 0.01, (20, 20))])
    median = np.median(image, axis=(1, 2))
    madn = 1.4826 * np.median(np.abs(image[1] - median[1]))
    params = auto_stretch_parameters(image)
    assert params.shadows[0] == pytest.approx((0.0 + median[1] - 2.8 * madn) / 2, rel=1e-9)
    assert auto_stretch_parameters(image, linked=False).shadows[0] == 0.0


def test_background_lands_above_target_when_shadows_clip_high():
    # PixInsight's m ignores the 1/(1 - c0) rescale: documented, not a bug
    rng = np.random.default_rng(12)
    image = rng.normal(0.6, 0.01, (100, 100))
    stretched = apply_stretch(image, auto_stretch_parameters(image))
    assert np.median(stretched) > 0.3


def test_apply_stretch_single_set_for_all_channels_and_range():
    rng = np.random.default_rng(10)
    image = rng.uniform(0, 1, (3, 20, 30)).astype(np.float32)
    params = StretchParameters(shadows=(0.1,), midtones=(0.2,), highlights=(0.9,))
    out = apply_stretch(image, params)
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    expected = midtones_transfer(np.clip((image[2] - 0.1) / 0.8, 0, 1), 0.2)
    np.testing.assert_allclose(out[2], expected, atol=1e-6)
    assert np.all(out[image <= 0.1] == 0) and np.all(out[image >= 0.9] == 1)


def test_apply_stretch_channel_mismatch():
    params = StretchParameters(shadows=(0, 0), midtones=(0.5, 0.5), highlights=(1, 1))
    with pytest.raises(ValueError, match="channels"):
        apply_stretch(np.zeros((3, 4, 4)), params)


@pytest.mark.parametrize(
    "fields",
    [
        {"shadows": (0.5,), "midtones": (0.5,), "highlights": (0.4,)},
        {"shadows": (0.0,), "midtones": (1.5,), "highlights": (1.0,)},
        {"shadows": (0.0, 0.0), "midtones": (0.5,), "highlights": (1.0,)},
        {"shadows": (), "midtones": (), "highlights": ()},
    ],
)
def test_stretch_parameters_validation(fields):
    with pytest.raises(ValueError):
        StretchParameters(**fields)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"shadows_clipping": 1.0}, "shadows_clipping"), ({"target_background": 1.0}, "target")],
)
def test_auto_stretch_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        auto_stretch_parameters(np.full((4, 4), 0.1), **kwargs)


def test_auto_stretch_needs_data():
    with pytest.raises(ValueError, match="no finite pixel"):
        auto_stretch_parameters(np.full((4, 4), np.nan))


def test_normalize_to_unit():
    image = np.array([[10.0, 20.0], [np.nan, 50.0]], dtype=np.float32)
    scaled, (lo, hi) = normalize_to_unit(image)
    assert (lo, hi) == (10.0, 50.0) and scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, [[0.0, 0.25], [np.nan, 1.0]])


def test_normalize_to_unit_constant_and_infinite():
    scaled, bounds = normalize_to_unit(np.array([3.0, 3.0, np.nan]))
    np.testing.assert_array_equal(scaled, [0.0, 0.0, np.nan])
    assert bounds == (3.0, 3.0)
    scaled, bounds = normalize_to_unit(np.array([1.0, 3.0, np.inf, -np.inf]))
    assert bounds == (1.0, 3.0)
    np.testing.assert_array_equal(scaled, [0.0, 1.0, 1.0, 0.0])


def test_normalize_to_unit_without_data():
    with pytest.raises(ValueError, match="no finite pixel"):
        normalize_to_unit(np.full(3, np.nan))


def test_saturated_image_still_gives_valid_parameters():
    image = np.ones((10, 10))
    image[0, :3] = 0.0
    image[1, :3] = 0.5
    params = auto_stretch_parameters(image)
    assert params.shadows[0] < 1.0 and params.highlights[0] == 1.0
    assert np.isfinite(apply_stretch(image, params)).all()
