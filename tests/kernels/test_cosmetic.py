"""Tests for pipeline.kernels.cosmetic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.kernels.cfa import channel_index, mosaic
from pipeline.kernels.cosmetic import correct_defects, find_defects, find_defects_in_frame

SHAPE = (256, 320)
NOISE = 5.0


def _background(shape=SHAPE):
    """Gradient plus a strong amp-glow corner (smooth: its source lies off-frame)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return 200 + 0.3 * xx + 0.2 * yy + 800 * np.exp(-np.hypot(xx + 20, yy + 20) / 40)


def _plant(rng, shape, n_hot=40, n_cold=20, margin=0):
    """Random distinct defect positions with amplitudes >= 20 noise sigmas."""
    flat = rng.choice(shape[0] * shape[1], n_hot + n_cold, replace=False)
    ys, xs = np.unravel_index(flat, shape)
    hot = np.zeros(shape, dtype=bool)
    cold = np.zeros(shape, dtype=bool)
    hot[ys[:n_hot], xs[:n_hot]] = True
    cold[ys[n_hot:], xs[n_hot:]] = True
    offsets = np.zeros(shape)
    offsets[hot] = rng.uniform(100, 3000, n_hot)
    offsets[cold] = -rng.uniform(100, 150, n_cold)
    return hot, cold, offsets


@pytest.fixture(scope="module")
def mono_dark():
    rng = np.random.default_rng(7)
    clean = _background() + rng.normal(0, NOISE, SHAPE)
    hot, cold, offsets = _plant(rng, SHAPE)
    return (clean + offsets).astype(np.float32), clean.astype(np.float32), hot, cold


def test_find_defects_finds_exactly_the_planted_pixels(mono_dark):
    dark, _, hot, cold = mono_dark
    found_hot, found_cold = find_defects(dark, hot_sigma=10, cold_sigma=10)
    np.testing.assert_array_equal(found_hot, hot)
    np.testing.assert_array_equal(found_cold, cold)


def test_find_defects_defaults_have_a_small_false_positive_rate(mono_dark):
    dark, _, hot, cold = mono_dark
    found_hot, found_cold = find_defects(dark)  # 3 sigma each side
    assert found_hot[hot].all() and found_cold[cold].all()
    assert (found_hot & ~hot).mean() < 0.005
    assert (found_cold & ~cold).mean() < 0.005
    # The amp-glow corner is not a cluster of "hot" pixels.
    assert (found_hot & ~hot)[:40, :40].mean() < 0.01


def test_find_defects_sides_can_be_disabled(mono_dark):
    dark, _, hot, _ = mono_dark
    found_hot, found_cold = find_defects(dark, hot_sigma=10, cold_sigma=None)
    np.testing.assert_array_equal(found_hot, hot)
    assert not found_cold.any()


def test_find_defects_ignores_nan(mono_dark):
    dark, _, hot, cold = mono_dark
    holed = dark.copy()
    holed[100:104, 100:104] = np.nan
    found_hot, found_cold = find_defects(holed, hot_sigma=10, cold_sigma=10)
    keep = np.isfinite(holed)
    assert not (found_hot | found_cold)[~keep].any()
    np.testing.assert_array_equal(found_hot[keep], hot[keep])
    np.testing.assert_array_equal(found_cold[keep], cold[keep])


def test_correction_restores_the_true_value_within_noise(mono_dark):
    dark, clean, hot, cold = mono_dark
    fixed = correct_defects(dark, hot | cold)
    assert fixed.dtype == np.float32
    error = fixed[hot | cold] - clean[hot | cold]
    assert np.all(np.abs(error) < 4 * NOISE)
    np.testing.assert_array_equal(fixed[~(hot | cold)], dark[~(hot | cold)])


def test_correction_does_not_modify_its_input(mono_dark):
    dark, _, hot, _ = mono_dark
    before = dark.copy()
    correct_defects(dark, hot)
    np.testing.assert_array_equal(dark, before)


# ----------------------------------------------------------------------------- CFA

LEVELS = np.array([1000.0, 3000.0, 500.0])  # R, G, B: very different


@pytest.fixture(scope="module")
def cfa_dark():
    rng = np.random.default_rng(8)
    rgb = LEVELS[:, None, None] * np.ones((3,) + SHAPE)
    ramp = 0.2 * np.arange(SHAPE[1])[None, :]
    clean = mosaic(rgb, "GBRG") + ramp + rng.normal(0, NOISE, SHAPE)
    hot, cold, offsets = _plant(rng, SHAPE)
    truth = LEVELS[channel_index("GBRG", SHAPE)] + ramp
    return (clean + offsets).astype(np.float32), truth, hot, cold


def test_find_defects_cfa_finds_exactly_the_planted_pixels(cfa_dark):
    dark, _, hot, cold = cfa_dark
    found_hot, found_cold = find_defects(dark, hot_sigma=10, cold_sigma=10, pattern="GBRG")
    np.testing.assert_array_equal(found_hot, hot)
    np.testing.assert_array_equal(found_cold, cold)
    # Without the pattern the colour levels themselves look like defects.
    mono_hot, mono_cold = find_defects(dark, hot_sigma=10, cold_sigma=10)
    assert (mono_hot | mono_cold).sum() > 1000


def test_cfa_correction_uses_same_colour_neighbours_only(cfa_dark):
    dark, truth, hot, cold = cfa_dark
    defects = hot | cold
    fixed = correct_defects(dark, defects, pattern="GBRG")
    error = fixed[defects] - truth[defects]
    assert np.all(np.abs(error) < 4 * NOISE)  # R ~1000, G ~3000, B ~500: never mixed


def test_cfa_correction_single_red_pixel():
    cfa = mosaic(LEVELS[:, None, None] * np.ones((3, 8, 8)), "RGGB").astype(np.float32)
    cfa[4, 4] = 60000.0  # an R site
    cfa[3, 3] = 50000.0  # a B site, its diagonal neighbour: must not leak into R
    defects = np.zeros(cfa.shape, dtype=bool)
    defects[4, 4] = True
    fixed = correct_defects(cfa, defects, pattern="RGGB")
    assert fixed[4, 4] == LEVELS[0]


def test_cfa_green_uses_its_diagonal_greens():
    cfa = mosaic(LEVELS[:, None, None] * np.ones((3, 9, 9)), "RGGB").astype(np.float64)
    defects = np.zeros(cfa.shape, dtype=bool)
    # A G site whose distance-2 greens are all defects: the distance-1 diagonals remain.
    y, x = 4, 5
    for dy, dx in [(-2, 0), (2, 0), (0, -2), (0, 2), (-2, -2), (-2, 2), (2, -2), (2, 2)]:
        defects[y + dy, x + dx] = True
    defects[y, x] = True
    cfa[defects] = 1e6
    cfa[y - 1, x - 1] = 3001.0
    cfa[y + 1, x + 1] = 2999.0
    fixed = correct_defects(cfa, defects, pattern="RGGB")
    assert fixed.dtype == np.float64
    assert fixed[y, x] == pytest.approx(3000.0)
    assert np.all(fixed[defects] < 3002)


def test_cluster_is_filled_from_the_outside_in():
    image = np.full((12, 12), 100.0, dtype=np.float32)
    defects = np.zeros(image.shape, dtype=bool)
    defects[4:8, 4:8] = True  # a 4x4 cluster: its core has no good neighbour at first
    image[defects] = 5000.0
    fixed = correct_defects(image, defects)
    np.testing.assert_array_equal(fixed, 100.0)


def test_nan_neighbours_are_ignored_and_hopeless_pixels_become_nan():
    image = np.full((5, 5), 10.0, dtype=np.float32)
    image[1, 2] = np.nan
    defects = np.zeros(image.shape, dtype=bool)
    defects[2, 2] = True
    image[2, 2] = 999.0
    assert correct_defects(image, defects)[2, 2] == 10.0
    everything = np.ones((3, 3), dtype=bool)
    assert np.isnan(correct_defects(np.ones((3, 3)), everything)).all()
    assert np.isnan(correct_defects(image, np.zeros_like(defects))[1, 2])


def test_validation():
    with pytest.raises(ValueError, match="shape"):
        correct_defects(np.ones((4, 4)), np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="hot_sigma"):
        find_defects(np.ones((4, 4)), hot_sigma=0)
    with pytest.raises(ValueError, match="sigma"):
        find_defects_in_frame(np.ones((4, 4)), sigma=-1)
    with pytest.raises(ValueError, match="XYZW"):
        find_defects(np.ones((4, 4)), pattern="XYZW")


def test_constant_dark_flags_nothing():
    hot, cold = find_defects(np.full((16, 16), 7.0))
    assert not hot.any() and not cold.any()


# ------------------------------------------------------------------ from the lights


def _star_field(rng, shape, n, sigma_psf):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.zeros(shape)
    for y0, x0, amp in zip(
        rng.uniform(5, h - 5, n), rng.uniform(5, w - 5, n), rng.uniform(100, 30000, n), strict=True
    ):
        ys = slice(max(int(y0) - 10, 0), int(y0) + 11)
        xs = slice(max(int(x0) - 10, 0), int(x0) + 11)
        r2 = (xx[ys, xs] - x0) ** 2 + (yy[ys, xs] - y0) ** 2
        image[ys, xs] += amp * np.exp(-r2 / (2 * sigma_psf**2))
    return image


@pytest.mark.parametrize("pattern", [None, "RGGB"])
@pytest.mark.parametrize("sigma_psf", [1.0, 1.5])
def test_find_defects_in_frame_skips_stars(pattern, sigma_psf):
    rng = np.random.default_rng(11)
    shape = (300, 400)
    stars = _star_field(rng, shape, 250, sigma_psf)
    if pattern is None:
        image = stars + 1000
    else:
        sky = np.array([900.0, 1500.0, 700.0])[:, None, None]
        image = mosaic(np.stack([1.3 * stars, stars, 0.5 * stars]) + sky, pattern)
    image = image + rng.normal(0, 10, shape)
    hot, cold, offsets = _plant(rng, shape, n_hot=35, n_cold=15)
    image = (image + 1.5 * offsets).astype(np.float32)
    found = find_defects_in_frame(image, sigma=10, pattern=pattern)
    planted = hot | cold
    assert not (found & ~planted).any()  # no star (or star pair) is taken for a defect
    # Defects with no star light in their 7x7 neighbourhood are all found.
    clear = planted & (ndimage.maximum_filter(stars, size=7) < 20)
    assert found[clear].all()
    assert clear.sum() >= 25  # (the check is not vacuous)


def test_find_defects_in_frame_nan_and_small_frames():
    rng = np.random.default_rng(2)
    image = rng.normal(100, 3, (64, 64)).astype(np.float32)
    image[10, 10] = 1000
    image[30:34, 30:34] = np.nan
    found = find_defects_in_frame(image)
    assert found[10, 10] and found.sum() == 1
    assert not find_defects_in_frame(np.ones((2, 2), dtype=np.float32)).any()
