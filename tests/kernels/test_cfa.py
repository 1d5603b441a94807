"""Tests for pipeline.kernels.cfa."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels import cfa as cfa_module
from pipeline.kernels.cfa import (
    PATTERNS,
    channel_index,
    channel_masks,
    debayer,
    effective_pattern,
    mosaic,
    normalize_flat_cfa,
)

METHODS = ("bilinear", "vng")


def _constant_scene(shape, values=(100.0, 200.0, 50.0), dtype=np.float32):
    return np.stack([np.full(shape, v) for v in values]).astype(dtype)


def _smooth_scene(h=64, w=80):
    """Band-limited colour image: luminance waves times slowly varying colour."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    lum = (
        1000
        + 300 * np.sin(2 * np.pi * xx / 23 + 0.3) * np.cos(2 * np.pi * yy / 31)
        + 100 * np.sin(2 * np.pi * (xx + yy) / 41)
    )
    red = lum * (1 + 0.1 * np.sin(2 * np.pi * xx / 50))
    blue = 0.8 * lum * (1 + 0.1 * np.cos(2 * np.pi * yy / 45))
    return np.stack([red, lum, blue]).astype(np.float32)


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


# ------------------------------------------------------------------------ patterns


def test_channel_index_and_masks_follow_the_pattern():
    index = channel_index("GRBG", (3, 5))
    expected = np.array([[1, 0, 1, 0, 1], [2, 1, 2, 1, 2], [1, 0, 1, 0, 1]])
    assert index.dtype == np.int8
    np.testing.assert_array_equal(index, expected)
    masks = channel_masks("GRBG", (3, 5))
    assert masks.shape == (3, 3, 5) and masks.dtype == bool
    np.testing.assert_array_equal(masks.sum(axis=0), 1)
    np.testing.assert_array_equal(masks[0], expected == 0)


def test_mosaic_keeps_the_filtered_channel():
    rgb = np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
    cfa = mosaic(rgb, "RGGB")
    assert cfa[0, 0] == rgb[0, 0, 0] and cfa[0, 1] == rgb[1, 0, 1]
    assert cfa[1, 0] == rgb[1, 1, 0] and cfa[1, 1] == rgb[2, 1, 1]


@pytest.mark.parametrize(
    ("bayerpat", "x_offset", "y_offset", "expected"),
    [
        ("RGGB", 0, 0, "RGGB"),
        ("RGGB", 1, 0, "GRBG"),
        ("RGGB", 0, 1, "GBRG"),
        ("RGGB", 1, 1, "BGGR"),
        ("RGGB", 2, 4, "RGGB"),
        ("GBRG", 1, 0, "BGGR"),
        ("BGGR", 1, 1, "RGGB"),
        (" rggb ", 0, 0, "RGGB"),
    ],
)
def test_effective_pattern_offsets(bayerpat, x_offset, y_offset, expected):
    assert effective_pattern(bayerpat, x_offset=x_offset, y_offset=y_offset) == expected
    assert (
        effective_pattern(bayerpat, x_offset=x_offset, y_offset=y_offset, row_order="TOP-DOWN")
        == expected
    )


@pytest.mark.parametrize(
    ("bayerpat", "height", "x_offset", "y_offset", "expected"),
    [
        ("RGGB", 4, 0, 0, "GBRG"),  # even height: the cell's rows swap
        ("RGGB", 5, 0, 0, "RGGB"),  # odd height: unchanged
        ("GRBG", 3000, 0, 0, "BGGR"),
        ("GRBG", 3001, 0, 0, "GRBG"),
        ("RGGB", 4, 0, 1, "RGGB"),  # flip and y offset cancel
        ("RGGB", 5, 1, 0, "GRBG"),
        ("RGGB", 4, 1, 0, "BGGR"),
    ],
)
def test_effective_pattern_bottom_up(bayerpat, height, x_offset, y_offset, expected):
    got = effective_pattern(
        bayerpat, x_offset=x_offset, y_offset=y_offset, row_order="BOTTOM-UP", height=height
    )
    assert got == expected


@pytest.mark.parametrize("bayerpat", PATTERNS)
@pytest.mark.parametrize("row_order", ["TOP-DOWN", "BOTTOM-UP"])
@pytest.mark.parametrize("height", [6, 7])
@pytest.mark.parametrize(("x_offset", "y_offset"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_effective_pattern_matches_a_simulated_file(
    bayerpat, row_order, height, x_offset, y_offset
):
    # Colours of the displayed image (row 0 = top), straight from the card meanings,
    # then stored in the file's row order; the pattern must describe the stored array.
    width = 5
    names = {"R": 0, "G": 1, "B": 2}
    displayed = np.array(
        [
            [names[bayerpat[2 * ((y + y_offset) % 2) + (x + x_offset) % 2]] for x in range(width)]
            for y in range(height)
        ]
    )
    stored = displayed if row_order == "TOP-DOWN" else displayed[::-1]
    pattern = effective_pattern(
        bayerpat, x_offset=x_offset, y_offset=y_offset, row_order=row_order, height=height
    )
    np.testing.assert_array_equal(channel_index(pattern, (height, width)), stored)


def test_effective_pattern_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="RGBG"):
        effective_pattern("RGBG")
    with pytest.raises(ValueError, match="SIDEWAYS"):
        effective_pattern("RGGB", row_order="SIDEWAYS")
    with pytest.raises(ValueError, match="height"):
        effective_pattern("RGGB", row_order="BOTTOM-UP")
    with pytest.raises(ValueError, match="x_offset"):
        effective_pattern("RGGB", x_offset=0.5)
    with pytest.raises(ValueError, match="XTRANS"):
        channel_index("XTRANS", (4, 4))


# ------------------------------------------------------------------------- flats


def test_normalize_flat_cfa_gives_each_channel_median_one():
    rng = np.random.default_rng(3)
    levels = np.array([0.55, 1.0, 0.4])  # flat panel colour: R, G, B
    rgb = levels[:, None, None] * rng.uniform(0.8, 1.1, (3, 40, 60)) * 30000
    flat = mosaic(rgb.astype(np.float32), "GBRG")
    flat[5, 7] = np.nan
    out = normalize_flat_cfa(flat, "GBRG")
    assert out.dtype == np.float32 and np.isnan(out[5, 7])
    for channel, mask in enumerate(channel_masks("GBRG", flat.shape)):
        assert np.nanmedian(out[mask]) == pytest.approx(1.0, abs=1e-6), channel
    # Each pixel is divided by its own channel's median only.
    ratio = out / flat
    for mask in channel_masks("GBRG", flat.shape):
        assert np.nanstd(ratio[mask]) < 1e-6 * np.nanmean(ratio[mask])


def test_normalize_flat_cfa_rejects_a_dead_channel():
    flat = mosaic(_constant_scene((8, 8), (1.0, 1.0, 0.0)), "RGGB")
    with pytest.raises(ValueError, match="channel B"):
        normalize_flat_cfa(flat, "RGGB")


# -------------------------------------------------------------------- debayering


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(8, 10), (7, 9), (2, 2), (3, 2)])
def test_constant_scene_is_recovered_exactly(pattern, method, shape):
    rgb = _constant_scene(shape)
    out = debayer(mosaic(rgb, pattern), pattern, method=method)
    assert out.dtype == np.float32 and out.shape == (3,) + shape
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_constant_scene_superpixel(pattern):
    rgb = _constant_scene((7, 9))
    out = debayer(mosaic(rgb, pattern), pattern, method="superpixel")
    np.testing.assert_array_equal(out, _constant_scene((3, 4)))


def test_constant_scene_non_dyadic_values():
    rgb = _constant_scene((12, 12), (0.3, 0.7, 0.11))
    for method in METHODS:
        out = debayer(mosaic(rgb, "BGGR"), "BGGR", method=method)
        np.testing.assert_allclose(out, rgb, rtol=1e-6)


def test_superpixel_shape_and_values():
    rng = np.random.default_rng(5)
    cfa = rng.uniform(0, 1000, (7, 9)).astype(np.float32)
    out = debayer(cfa, "GRBG", method="superpixel")
    assert out.shape == (3, 3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], cfa[0:6:2, 1:8:2])
    np.testing.assert_array_equal(out[2], cfa[1:6:2, 0:8:2])
    np.testing.assert_allclose(out[1], 0.5 * (cfa[0:6:2, 0:8:2] + cfa[1:6:2, 1:8:2]), rtol=1e-6)


def test_superpixel_nan_green_uses_the_other_green():
    cfa = mosaic(_constant_scene((4, 4)), "RGGB")
    cfa[0, 1] = np.nan
    out = debayer(cfa, "RGGB", method="superpixel")
    assert out[1, 0, 0] == 200.0


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_smooth_scene_small_error_and_vng_no_worse(pattern):
    rgb = _smooth_scene()
    cfa = mosaic(rgb, pattern)
    errors = {m: _rms(debayer(cfa, pattern, method=m) - rgb) for m in METHODS}
    assert errors["bilinear"] < 0.01 * 1000  # < 1 % of the mean level
    assert errors["vng"] <= errors["bilinear"]


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG"])
def test_vng_beats_bilinear_at_a_step_edge(pattern):
    h, w = 40, 60
    xx = np.broadcast_to(np.arange(w), (h, w))
    lum = np.where(xx >= 30, 1000.0, 100.0)
    rgb = np.stack([lum, lum, lum]).astype(np.float32)
    cfa = mosaic(rgb, pattern)
    near_edge = (slice(None), slice(4, -4), slice(26, 34))
    err = {m: _rms((debayer(cfa, pattern, method=m) - rgb)[near_edge]) for m in METHODS}
    assert err["vng"] < 0.5 * err["bilinear"]
    far = (slice(None), slice(None), slice(0, 26))
    np.testing.assert_array_equal(debayer(cfa, pattern, method="vng")[far], rgb[far])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
@pytest.mark.parametrize("centre", [(30.3, 40.7), (31.77, 41.21), (30.5, 40.5)])
def test_neutral_star_has_no_colour_centroid_shift(method, pattern, centre):
    h, w = 64, 80
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    y0, x0 = centre
    star = 5000 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5**2))
    rgb = np.stack([star, star, star]).astype(np.float32)
    out = debayer(mosaic(rgb, pattern), pattern, method=method).astype(np.float64)
    centroids = np.array(
        [[(plane * xx).sum() / plane.sum(), (plane * yy).sum() / plane.sum()] for plane in out]
    )
    spread = centroids.max(axis=0) - centroids.min(axis=0)
    assert np.all(spread < 0.05), centroids
    np.testing.assert_allclose(centroids, [[x0, y0]] * 3, atol=0.05)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_star_colour_ratios_are_preserved(method, pattern):
    # Raw CFA data are not white balanced: a star with R/G = 0.87 and B/G = 0.72 on
    # a coloured sky. The paper's colour-difference VNG made it ~7 % too blue.
    rng = np.random.default_rng(21)
    h, w = 48, 48
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    colour = np.array([0.87, 1.0, 0.72])
    sky = np.array([300.0, 500.0, 200.0])
    ratios = []
    for _ in range(8):
        y0, x0 = rng.uniform(20, 28, 2)
        star = 10000 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5**2))
        rgb = colour[:, None, None] * star + sky[:, None, None]
        out = debayer(mosaic(rgb.astype(np.float32), pattern), pattern, method=method)
        aperture = np.hypot(xx - x0, yy - y0) < 8
        flux = (out - sky[:, None, None])[:, aperture].sum(axis=1)
        ratios.append(flux / flux[1])
    np.testing.assert_allclose(ratios, [colour] * 8, rtol=0.015)  # each star
    np.testing.assert_allclose(np.mean(ratios, axis=0), colour, rtol=0.003)  # no bias


@pytest.mark.parametrize("method", METHODS)
def test_nan_stays_local(method):
    rgb = _smooth_scene(48, 48)
    cfa = mosaic(rgb, "RGGB")
    clean = debayer(cfa, "RGGB", method=method)
    holed = cfa.copy()
    holed[10, 13] = np.nan
    holed[30:36, 20:27] = np.nan  # a block of dead pixels
    out = debayer(holed, "RGGB", method=method)
    nan = np.isnan(holed)
    assert np.all(np.isnan(out[:, nan]))
    assert np.all(np.isfinite(out[:, ~nan]))
    # Pixels more than 2 away from any NaN do not notice it (VNG: its colour slopes,
    # estimated over ~6 px, may shift slightly).
    near = np.zeros_like(nan)
    for y, x in zip(*np.nonzero(nan), strict=True):
        near[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] = True
    if method == "bilinear":
        np.testing.assert_array_equal(out[:, ~near], clean[:, ~near])
    else:
        np.testing.assert_allclose(out[:, ~near], clean[:, ~near], rtol=5e-3)
    # Next to the hole the values stay sensible (within the scene's range).
    ring = near & ~nan
    assert np.all(np.abs(out[:, ring] - rgb[:, ring]) < 0.1 * rgb[:, ring])


def test_all_nan_input_gives_all_nan():
    for method in (*METHODS, "superpixel"):
        out = debayer(np.full((6, 6), np.nan, dtype=np.float32), "RGGB", method=method)
        assert np.all(np.isnan(out))


def test_dtypes_and_validation():
    cfa16 = mosaic(_constant_scene((6, 6)), "RGGB").astype(np.uint16)
    assert debayer(cfa16, "RGGB", method="bilinear").dtype == np.float32
    cfa64 = cfa16.astype(np.float64)
    for method in (*METHODS, "superpixel"):
        assert debayer(cfa64, "RGGB", method=method).dtype == np.float64
    with pytest.raises(ValueError, match="ahd"):
        debayer(cfa16, "RGGB", method="ahd")
    with pytest.raises(ValueError, match="2x2"):
        debayer(np.ones((1, 8)), "RGGB")
    with pytest.raises(ValueError, match="2-D"):
        debayer(np.ones((3, 4, 4)), "RGGB")


def test_input_is_not_modified():
    cfa = mosaic(_smooth_scene(16, 16), "RGGB")
    cfa[3, 3] = np.nan
    before = cfa.copy()
    for method in (*METHODS, "superpixel"):
        debayer(cfa, "RGGB", method=method)
    np.testing.assert_array_equal(cfa, before)


# ---------------------------------------------------------- VNG reference (loops)


def _vng_reference(cfa, pattern, slopes=None):
    """Per-pixel VNG transcribed from the tables of Chang et al. (1999).

    The 5x5 neighbourhood is numbered 1..25 row by row (13 is the centre), exactly
    as in the paper; edges are mirrored (numpy "reflect"). With ``slopes`` (3, H, W)
    a missing colour is ``k own + mean(other_d - k own_d)`` with ``k`` the ratio of
    the slopes of the two colours; without, ``k = 1`` (the paper).
    """
    h, w = cfa.shape
    padded = np.pad(cfa.astype(np.float64), 2, mode="reflect")
    index = channel_index(pattern, (h, w))
    out = np.zeros((3, h, w))
    for y in range(h):
        for x in range(w):
            p = {k + 1: v for k, v in enumerate(padded[y : y + 5, x : x + 5].ravel())}

            def d(i, j, p=p):
                return abs(p[i] - p[j])

            straight = {
                "N": d(8, 18) + d(3, 13) + (d(7, 17) + d(9, 19) + d(2, 12) + d(4, 14)) / 2,
                "E": d(14, 12) + d(15, 13) + (d(9, 7) + d(19, 17) + d(10, 8) + d(20, 18)) / 2,
                "S": d(18, 8) + d(23, 13) + (d(19, 9) + d(17, 7) + d(24, 14) + d(22, 12)) / 2,
                "W": d(12, 14) + d(11, 13) + (d(17, 19) + d(7, 9) + d(16, 18) + d(6, 8)) / 2,
            }
            c = index[y, x]
            if c != 1:  # R or B centre: (own, G, opposite) averages
                grads = straight | {
                    "NE": d(9, 17) + d(5, 13) + (d(8, 12) + d(14, 18) + d(4, 8) + d(10, 14)) / 2,
                    "SE": d(19, 7) + d(25, 13) + (d(14, 8) + d(18, 12) + d(24, 18) + d(20, 14)) / 2,
                    "NW": d(7, 19) + d(1, 13) + (d(12, 18) + d(8, 14) + d(6, 12) + d(2, 8)) / 2,
                    "SW": d(17, 9) + d(21, 13) + (d(18, 14) + d(12, 8) + d(22, 18) + d(16, 12)) / 2,
                }
                avg = {
                    "N": ((p[3] + p[13]) / 2, p[8], (p[7] + p[9]) / 2),
                    "E": ((p[13] + p[15]) / 2, p[14], (p[9] + p[19]) / 2),
                    "S": ((p[13] + p[23]) / 2, p[18], (p[17] + p[19]) / 2),
                    "W": ((p[11] + p[13]) / 2, p[12], (p[7] + p[17]) / 2),
                    "NE": ((p[5] + p[13]) / 2, (p[4] + p[8] + p[10] + p[14]) / 4, p[9]),
                    "SE": ((p[13] + p[25]) / 2, (p[14] + p[18] + p[20] + p[24]) / 4, p[19]),
                    "NW": ((p[1] + p[13]) / 2, (p[2] + p[6] + p[8] + p[12]) / 4, p[7]),
                    "SW": ((p[13] + p[21]) / 2, (p[12] + p[16] + p[18] + p[22]) / 4, p[17]),
                }
                colours = (c, 1, 2 - c)
            else:  # G centre: (G, row-neighbour colour, column-neighbour colour)
                grads = straight | {
                    "NE": d(9, 17) + d(5, 13) + d(4, 12) + d(10, 18),
                    "SE": d(19, 7) + d(25, 13) + d(20, 8) + d(24, 12),
                    "NW": d(7, 19) + d(1, 13) + d(6, 18) + d(2, 14),
                    "SW": d(17, 9) + d(21, 13) + d(22, 14) + d(16, 8),
                }
                avg = {
                    "N": ((p[3] + p[13]) / 2, (p[2] + p[4] + p[12] + p[14]) / 4, p[8]),
                    "E": ((p[13] + p[15]) / 2, p[14], (p[8] + p[10] + p[18] + p[20]) / 4),
                    "S": ((p[13] + p[23]) / 2, (p[12] + p[14] + p[22] + p[24]) / 4, p[18]),
                    "W": ((p[11] + p[13]) / 2, p[12], (p[6] + p[8] + p[16] + p[18]) / 4),
                    "NE": (p[9], (p[4] + p[14]) / 2, (p[8] + p[10]) / 2),
                    "SE": (p[19], (p[14] + p[24]) / 2, (p[18] + p[20]) / 2),
                    "NW": (p[7], (p[2] + p[12]) / 2, (p[6] + p[8]) / 2),
                    "SW": (p[17], (p[12] + p[22]) / 2, (p[16] + p[18]) / 2),
                }
                row_colour = index[y, x + 1] if x + 1 < w else index[y, x - 1]
                col_colour = index[y + 1, x] if y + 1 < h else index[y - 1, x]
                colours = (1, row_colour, col_colour)
            lo, hi = min(grads.values()), max(grads.values())
            threshold = 1.5 * lo + 0.5 * (hi - lo)
            chosen = [k for k, g in grads.items() if g <= threshold]
            sums = np.sum([avg[k] for k in chosen], axis=0)
            out[colours[0], y, x] = p[13]
            for role in (1, 2):
                k = 1.0 if slopes is None else slopes[colours[role], y, x] / slopes[c, y, x]
                out[colours[role], y, x] = k * p[13] + (sums[role] - k * sums[0]) / len(chosen)
    return out


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("shape", [(9, 12), (10, 7)])
def test_vng_core_matches_the_per_pixel_reference(pattern, shape):
    rng = np.random.default_rng(sum(map(ord, pattern)) + shape[0])
    cfa = rng.uniform(0, 100, shape)
    core = cfa_module._vng(cfa, cfa_module._codes(pattern), colour_slopes=False)
    np.testing.assert_allclose(core, _vng_reference(cfa, pattern), atol=1e-10)


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_vng_with_colour_slopes_matches_the_reference(pattern):
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:14, 0:16]
    star = 3000 * np.exp(-((xx - 7.3) ** 2 + (yy - 6.6) ** 2) / 4.5)
    rgb = np.stack([0.8 * star + 300, star + 500, 0.5 * star + 200])
    cfa = mosaic(rgb, pattern) + rng.normal(0, 5, (14, 16))
    slopes = cfa_module._colour_slopes(cfa, cfa_module._codes(pattern)).astype(np.float64)
    assert not np.allclose(slopes, 1.0)
    np.testing.assert_allclose(
        debayer(cfa, pattern, method="vng"), _vng_reference(cfa, pattern, slopes), rtol=1e-9
    )
