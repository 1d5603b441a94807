"""Cosmetic correction: find hot and cold pixels and replace them from their neighbours.

Mono images use the 8 surrounding pixels; Bayer (CFA) mosaics, given their pattern
(see :mod:`pipeline.kernels.cfa`), only ever compare and mix pixels of the same colour.
NaN is "no data": never a defect candidate, never used as a neighbour.

Timings on a 4000 x 3000 float32 frame (2-core development machine): ``find_defects``
~4.7 s (four 5x5 median filters), ``find_defects_in_frame`` ~3.6 s for a CFA and
~2.6 s for mono, ``correct_defects`` ~0.07 s for 0.5 % defective pixels.
"""

from __future__ import annotations

import math

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from pipeline.kernels._common import float_array, require_ndim, require_same_shape
from pipeline.kernels.cfa import channel_index
from pipeline.kernels.stats import background_noise, robust_location_scale

__all__ = ["ISOLATION_FACTOR", "correct_defects", "find_defects", "find_defects_in_frame"]

#: A defect found in a light must stand this many times higher above its background
#: than any other pixel of its 5x5 neighbourhood (:func:`find_defects_in_frame`).
ISOLATION_FACTOR = 3.0

_DARK_WINDOW = 5  # local-median window (same-colour samples) for master darks
_FRAME_WINDOW = 3  # local-median window (same-colour samples) for lights


def _planes(shape: tuple[int, int], pattern: str | None):
    """Same-colour sample lattices: ``[(channel, (row_slice, col_slice)), ...]``.

    Mono: the whole image (channel 0). CFA: the four parity sub-planes ``[r::2, c::2]``
    with their channel index (the two green lattices are separate planes).
    """
    if pattern is None:
        return [(0, (slice(None), slice(None)))]
    index = channel_index(pattern, (2, 2))
    return [
        (int(index[r, c]), (slice(r, None, 2), slice(c, None, 2)))
        for r in range(2)
        for c in range(2)
        if r < shape[0] and c < shape[1]
    ]


def _filled(plane: np.ndarray) -> np.ndarray:
    """``plane`` with NaN replaced by its median, for order-statistic filters."""
    nan = np.isnan(plane)
    if not nan.any():
        return plane
    fill = float(bn.nanmedian(plane)) if not nan.all() else 0.0
    return np.where(nan, plane.dtype.type(fill), plane)


def _robust_sigma(residual: np.ndarray) -> tuple[float, float]:
    """Median and Gaussian-equivalent sigma of the finite residuals.

    MAD-sigma; when the MAD is zero (quantised, nearly noiseless data) the mean
    absolute deviation times sqrt(pi/2) is used instead. Returns (loc, 0.0) when
    both are zero and (nan, nan) when there is no finite value.
    """
    loc, sigma = robust_location_scale(residual)
    if math.isnan(loc) or sigma > 0:
        return loc, sigma
    finite = residual[np.isfinite(residual)]
    return loc, float(np.mean(np.abs(finite - loc))) * math.sqrt(math.pi / 2)


def find_defects(
    master_dark: ArrayLike,
    *,
    hot_sigma: float | None = 3.0,
    cold_sigma: float | None = 3.0,
    pattern: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hot and cold pixels of a master calibration frame (normally the master dark).

    Parameters
    ----------
    master_dark : array_like
        (H, W) master dark (raw or bias-subtracted; a master flat works too for
        cold/dead pixels). NaN pixels are never flagged.
    hot_sigma, cold_sigma : float or None, optional
        Thresholds in robust sigmas of the local-median residual (default 3.0 each);
        None disables that side.
    pattern : str or None, optional
        CFA pattern of the array's ``[0, 0]`` cell; None (default) for mono.

    Returns
    -------
    (hot, cold) : tuple of ndarray of bool
        (H, W) masks.

    Notes
    -----
    The residual is ``dark - local median``, the median over a 5x5 window of
    same-colour samples (5x5 pixels for mono, the 5x5 pixels of the same parity
    sub-plane, i.e. a 10x10 pixel area, for CFA); it removes amp glow, gradients and
    the channel levels, so only pixel-scale deviations remain. For each CFA channel
    (both green lattices pooled; the whole image for mono) the residual's median
    ``m`` and MAD-sigma ``s`` are measured, and a pixel is hot when
    ``residual > m + hot_sigma * s`` and cold when ``residual < m - cold_sigma * s``.

    This follows Siril's cosmetic correction, which compares each pixel with the
    median of its neighbours in units of a global deviation (its average
    deviation; here the MAD-sigma of the residual, which hot pixels cannot
    inflate), and PixInsight CosmeticCorrection's auto-detection, whose hot and
    cold thresholds are likewise given in sigmas (3 is the customary hot sigma).
    At 3 sigma a master dark yields its warm-pixel tail plus ~0.15 % of purely
    Gaussian pixels per side, i.e. an aggressive map meant for correction before
    stacking; raise the thresholds for a conservative one.
    """
    dark = float_array(master_dark, "master_dark")
    require_ndim(dark, "master_dark", (2,))
    for name, value in (("hot_sigma", hot_sigma), ("cold_sigma", cold_sigma)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be a positive number of sigmas or None")
    residual = np.full(dark.shape, np.nan, dtype=dark.dtype)
    planes = _planes(dark.shape, pattern)
    for _, view in planes:
        plane = dark[view]
        local = ndimage.median_filter(_filled(plane), size=_DARK_WINDOW, mode="mirror")
        residual[view] = plane - local
    hot = np.zeros(dark.shape, dtype=bool)
    cold = np.zeros(dark.shape, dtype=bool)
    for channel in sorted({c for c, _ in planes}):
        views = [view for c, view in planes if c == channel]
        loc, sigma = _robust_sigma(np.concatenate([residual[v].ravel() for v in views]))
        if not sigma > 0:
            continue
        for view in views:
            r = residual[view]
            if hot_sigma is not None:
                hot[view] = r > loc + hot_sigma * sigma
            if cold_sigma is not None:
                cold[view] = r < loc - cold_sigma * sigma
    return hot, cold


def find_defects_in_frame(
    image: ArrayLike, *, sigma: float = 10.0, pattern: str | None = None
) -> np.ndarray:
    """Isolated hot or cold single pixels in a light frame (no master dark needed).

    Parameters
    ----------
    image : array_like
        (H, W) calibrated (or raw) light, mono or CFA. NaN pixels are never flagged.
    sigma : float, optional
        Detection threshold in background-noise sigmas (default 10).
    pattern : str or None, optional
        CFA pattern of the array's ``[0, 0]`` cell; None (default) for mono.

    Returns
    -------
    ndarray of bool
        (H, W) mask of defects (hot and cold).

    Notes
    -----
    For every pixel the *elevation* ``e = value - b`` is taken above ``b``, the
    median of the 3x3 same-colour samples around it (its 8 nearest same-colour
    neighbours and itself: distance 1 for mono, distance 2 on a CFA). The noise
    ``n`` is :func:`pipeline.kernels.stats.background_noise` of each same-colour
    lattice. A pixel is a hot defect when

    1. ``e > sigma * n``: it stands far above its same-colour neighbours, and
    2. ``e > 3 * max(e')`` over the other 24 pixels ``e'`` of its 5x5
       neighbourhood (all colours, each relative to its own colour's background):
       nothing around it is raised by even a third as much.

    Condition 2 keeps stars out: a star's light also raises the pixels around its
    peak (by ~80 % of the peak at 1 px for a 1.5 px sigma PSF, ~40 % at 2 px on a
    same-colour CFA lattice), whereas a hot pixel is a lone spike on noise. Only
    badly undersampled stars (FWHM below ~2 px) can pass it. Cold defects are the
    mirror image (``-e``) and must in addition lie ``sigma * n`` below the median
    of their colour lattice (the sky level): a dead pixel reads below the sky,
    whereas the dip between two close bright stars, which also sits far below its
    neighbours, does not.

    This is deliberately conservative: a hot pixel on a star, or a pair of
    adjacent hot pixels, is left alone; use a master dark (:func:`find_defects`)
    for a complete map.
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (2,))
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma={sigma} must be a positive number of sigmas")
    elevation = np.full(array.shape, np.nan, dtype=array.dtype)
    threshold = np.full(array.shape, np.inf, dtype=array.dtype)
    below_sky = np.zeros(array.shape, dtype=bool)
    for _, view in _planes(array.shape, pattern):
        plane = array[view]
        local = ndimage.median_filter(_filled(plane), size=_FRAME_WINDOW, mode="mirror")
        elevation[view] = plane - local
        noise = background_noise(plane) if min(plane.shape) >= 2 else math.nan
        if noise > 0:
            threshold[view] = sigma * noise
            sky, _ = robust_location_scale(plane)
            below_sky[view] = plane < sky - sigma * noise
    ring = np.ones((5, 5), dtype=bool)
    ring[2, 2] = False
    finite = np.isfinite(elevation)
    defects = np.zeros(array.shape, dtype=bool)
    for sign in (1, -1):
        e = np.where(finite, sign * elevation, -np.inf)
        around = ndimage.maximum_filter(e, footprint=ring, mode="constant", cval=-np.inf)
        found = (e > threshold) & (e > ISOLATION_FACTOR * np.maximum(around, 0))
        defects |= found if sign > 0 else found & below_sky
    return defects


# Neighbour offsets used to replace a defect: mono 8-neighbourhood, CFA same colour.
_MONO_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
_CFA_OFFSETS = tuple((2 * dy, 2 * dx) for dy, dx in _MONO_OFFSETS)
_GREEN_EXTRA = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def correct_defects(
    image: ArrayLike, defects: ArrayLike, *, pattern: str | None = None
) -> np.ndarray:
    """Replace defect pixels by the median of their nearest same-colour neighbours.

    Parameters
    ----------
    image : array_like
        (H, W) frame (mono or CFA mosaic). Not modified.
    defects : array_like of bool
        (H, W) mask of the pixels to replace (e.g. ``hot | cold``).
    pattern : str or None, optional
        CFA pattern of the array's ``[0, 0]`` cell; None (default) for mono.

    Returns
    -------
    ndarray
        New array (float32, or float64 for float64 input) with every defect replaced.

    Notes
    -----
    Neighbours: mono, the 8 surrounding pixels; CFA, the 8 same-colour pixels at
    distance 2 (``(+-2, 0)``, ``(0, +-2)``, ``(+-2, +-2)``), plus for green the 4
    diagonal greens at distance 1. Neighbours that are outside the image, NaN or
    themselves defects are ignored. A defect with no usable neighbour (inside a
    cluster) is filled in a further pass from its already corrected neighbours;
    one with none even then (an image with no valid pixel around it) becomes NaN.
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (2,))
    mask = np.asarray(defects, dtype=bool)
    require_same_shape(array, mask, "image", "defects")
    out = array.copy()
    h, w = array.shape
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return out
    if pattern is None:
        offsets = np.array(_MONO_OFFSETS)
        extra = None
    else:
        offsets = np.array(_CFA_OFFSETS + _GREEN_EXTRA)
        is_green = channel_index(pattern, array.shape)[rows, cols] == 1
        extra = np.zeros((rows.size, len(offsets)), dtype=bool)
        extra[:, len(_CFA_OFFSETS) :] = True
        extra &= ~is_green[:, None]  # the distance-1 diagonals are green only for green
    pending = mask.copy()
    while rows.size:
        ny = rows[:, None] + offsets[None, :, 0]
        nx = cols[:, None] + offsets[None, :, 1]
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        if extra is not None:
            inside &= ~extra
        ny_c, nx_c = np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)
        values = out[ny_c, nx_c]
        usable = inside & ~pending[ny_c, nx_c] & np.isfinite(values)
        values = np.where(usable, values, np.nan)
        done = usable.any(axis=1)
        if not done.any():
            out[rows, cols] = np.nan
            break
        out[rows[done], cols[done]] = bn.nanmedian(values[done], axis=1)
        pending[rows[done], cols[done]] = False
        rows, cols = rows[~done], cols[~done]
        if extra is not None:
            extra = extra[~done]
    return out
