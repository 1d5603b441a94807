"""Colour calibration of linear RGB images: background neutralization and white balance.

Everything stays linear: each channel ``c`` becomes ``level + k_c (x_c - b_c)``, where
``b_c`` is the channel's background, ``level`` the common background after neutralization and
``k_c`` the white-balance factor. Images are (C, H, W) float arrays; NaN means "no data".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clip
from numpy.typing import ArrayLike, NDArray

from pipeline.kernels._common import float_array, require_ndim

__all__ = [
    "StellarWhiteBalance",
    "apply_colour_calibration",
    "channel_backgrounds",
    "region_white_factors",
    "stellar_white_factors",
]


def channel_backgrounds(
    image: ArrayLike, background_mask: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Robust background level of each channel: the median of its background pixels.

    Parameters
    ----------
    image : array_like
        (C, H, W) linear image.
    background_mask : array_like of bool, optional
        (H, W), True where a pixel is sky background (no star, no nebula). Default: every
        finite pixel.

    Returns
    -------
    ndarray
        (C,) medians, float64.

    Raises
    ------
    ValueError
        If a channel has no finite background pixel.
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (3,))
    chosen = np.ones(array.shape[1:], dtype=bool)
    if background_mask is not None:
        chosen = np.asarray(background_mask, dtype=bool)
        if chosen.shape != array.shape[1:]:
            raise ValueError(
                f"background_mask has shape {chosen.shape}, image planes {array.shape[1:]}; "
                "pass a mask of one plane's shape"
            )
    levels = np.array([np.nanmedian(plane[chosen]) if chosen.any() else np.nan for plane in array])
    if not np.all(np.isfinite(levels)):
        raise ValueError(
            "a channel has no finite background pixel; check the mask and the image's NaN area"
        )
    return levels.astype(np.float64)


@dataclass(frozen=True)
class StellarWhiteBalance:
    """White-balance factors from star colours.

    Attributes
    ----------
    factors : ndarray
        (C,) multiplicative factors, 1 for the reference channel.
    used : ndarray of bool
        (n,) stars that survived the clipping of outlying colours.
    mean_ratios : ndarray
        (C,) mean colour (flux ratio to the reference channel) of the used stars before
        balancing; ``factors = 1 / mean_ratios``.
    """

    factors: NDArray[np.float64]
    used: NDArray[np.bool_]
    mean_ratios: NDArray[np.float64]


def stellar_white_factors(
    fluxes: ArrayLike, *, reference: int = 1, sigma: float = 3.0, min_stars: int = 5
) -> StellarWhiteBalance:
    """Factors that make the mean stellar colour neutral ("average star is white").

    Each star's colour is its flux ratios to the ``reference`` channel; the mean colour is
    the geometric mean of the ratios after sigma clipping of their logarithms (a red giant or
    a blue-white star does not pull the mean, neither does a bad measurement).

    Parameters
    ----------
    fluxes : array_like
        (n, C) background-subtracted star fluxes per channel.
    reference : int
        Channel whose factor is 1.
    sigma : float
        Clipping threshold on the log ratios (astropy ``sigma_clip``, median centred).
    min_stars : int
        Fewest stars with positive fluxes in every channel needed.

    Returns
    -------
    StellarWhiteBalance
        Factors, the stars used and the mean colour.

    Raises
    ------
    ValueError
        If fewer than ``min_stars`` stars have positive flux in every channel.
    """
    table = np.asarray(fluxes, dtype=np.float64)
    if table.ndim != 2 or not 0 <= reference < table.shape[1]:
        raise ValueError(
            f"fluxes must be (n, C) with reference < C; got shape {table.shape} and "
            f"reference {reference}"
        )
    positive = np.all(np.isfinite(table) & (table > 0), axis=1)
    if positive.sum() < min_stars:
        raise ValueError(
            f"only {int(positive.sum())} stars have a positive flux in every channel, "
            f"{min_stars} are needed for a stellar white balance; use a region or given "
            "factors as white reference, or lower min_snr"
        )
    logs = np.log(table[positive] / table[positive, reference : reference + 1])
    clipped = sigma_clip(logs, sigma=sigma, axis=0, maxiters=10, cenfunc="median")
    keep = ~np.any(np.ma.getmaskarray(clipped), axis=1)
    mean_ratios = np.exp(logs[keep].mean(axis=0))
    used = np.zeros(len(table), dtype=bool)
    used[np.flatnonzero(positive)[keep]] = True
    return StellarWhiteBalance(factors=1.0 / mean_ratios, used=used, mean_ratios=mean_ratios)


def region_white_factors(
    image: ArrayLike,
    box: tuple[int, int, int, int],
    *,
    reference: int = 1,
    border: int | None = None,
) -> NDArray[np.float64]:
    """Factors that make a chosen region (a G2V star, a spiral galaxy) neutral.

    The region's signal is its sum above the local background: the median of a frame of
    ``border`` pixels around the box (nebulosity or a gradient under the object is not
    counted as the object's colour).

    Parameters
    ----------
    image : array_like
        (C, H, W) linear image.
    box : tuple of int
        ``(x0, y0, x1, y1)``, pixels ``x0 <= x < x1``, ``y0 <= y < y1``.
    reference : int
        Channel whose factor is 1.
    border : int, optional
        Width of the background frame; default: half the box's longer side, at least 5.

    Returns
    -------
    ndarray
        (C,) factors.

    Raises
    ------
    ValueError
        If the box is empty or outside the image, or its signal is not positive in a channel.
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (3,))
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = array.shape[1:]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"white reference box {box} is empty or outside the {width}x{height} image; "
            "give x0 < x1 <= width and y0 < y1 <= height"
        )
    pad = border if border is not None else max(5, max(x1 - x0, y1 - y0) // 2)
    outer = array[:, max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad]
    ring = np.ones(outer.shape[1:], dtype=bool)
    ring[
        y0 - max(0, y0 - pad) : y1 - max(0, y0 - pad), x0 - max(0, x0 - pad) : x1 - max(0, x0 - pad)
    ] = False
    surroundings = outer[:, ring]
    inside = array[:, y0:y1, x0:x1]
    if not (
        np.isfinite(surroundings).any(axis=1).all() and np.isfinite(inside).any(axis=(1, 2)).all()
    ):
        raise ValueError(
            f"the white reference box {box} or its surroundings has no data (NaN) in some "
            "channel; choose a box inside the area every channel covers"
        )
    level = np.nanmedian(surroundings, axis=1)[:, None, None]
    signal = np.nansum(inside - level, axis=(1, 2))
    if not np.all(signal > 0):
        raise ValueError(
            f"the white reference box {box} has no signal above its surroundings in some "
            f"channel (sums {np.round(signal, 3).tolist()}); choose a box on a star or galaxy"
        )
    return signal[reference] / signal


def apply_colour_calibration(
    image: ArrayLike,
    backgrounds: ArrayLike,
    levels: ArrayLike,
    factors: ArrayLike,
) -> NDArray[np.floating]:
    """Neutralize the background and white-balance: ``level_c + k_c (x_c - b_c)``.

    Parameters
    ----------
    image : array_like
        (C, H, W) linear image (not modified).
    backgrounds : array_like
        (C,) background of each channel.
    levels : float or array_like
        Background level of each channel in the result: one value (the common level of a
        neutralized background) or (C,) values (each channel keeps its own).
    factors : array_like
        (C,) white-balance factors (ones to neutralize only).

    Returns
    -------
    ndarray
        Calibrated image, float32 for float32 input; NaN stays NaN.
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (3,))
    n = array.shape[0]
    b = np.asarray(backgrounds, dtype=np.float64)
    k = np.asarray(factors, dtype=np.float64)
    level = np.broadcast_to(np.asarray(levels, dtype=np.float64), (n,))
    if b.shape != (n,) or k.shape != (n,):
        raise ValueError(
            f"need one background and one factor per channel ({n}); got {b.shape} and {k.shape}"
        )
    out = np.empty_like(array)
    for channel in range(n):
        scale, offset = k[channel], level[channel] - k[channel] * b[channel]
        np.multiply(array[channel], array.dtype.type(scale), out=out[channel])
        out[channel] += array.dtype.type(offset)
    return out
