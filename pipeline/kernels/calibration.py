"""CCD calibration arithmetic: bias and dark subtraction, flat-field correction.

All functions take plain arrays (raw integer frames are accepted) and return float32
(float64 when the light frame is float64). NaN is "no data" and propagates.
"""

from __future__ import annotations

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike

from pipeline.kernels._common import float_array, require_same_shape, result_dtype

__all__ = ["flat_correct", "normalize_flat", "subtract_bias", "subtract_dark"]


def _pair(image: ArrayLike, master: ArrayLike, master_name: str):
    light = float_array(image, "image")
    calib = float_array(master, master_name)
    require_same_shape(light, calib, "image", master_name)
    dtype = result_dtype(light)
    return light.astype(dtype, copy=False), calib.astype(dtype, copy=False)


def subtract_bias(image: ArrayLike, master_bias: ArrayLike) -> np.ndarray:
    """Subtract a master bias: ``image - master_bias``.

    Parameters
    ----------
    image : array_like
        Raw or partially calibrated frame.
    master_bias : array_like
        Master bias frame of the same shape.

    Returns
    -------
    ndarray
        Bias-subtracted frame (float32, or float64 for a float64 ``image``).
    """
    light, bias = _pair(image, master_bias, "master_bias")
    return light - bias


def subtract_dark(
    image: ArrayLike,
    master_dark: ArrayLike,
    *,
    dark_exposure: float,
    image_exposure: float,
    scale: bool,
) -> np.ndarray:
    """Subtract a master dark, optionally scaled by the exposure-time ratio.

    Parameters
    ----------
    image : array_like
        Frame to calibrate (bias-subtracted when ``scale`` is True).
    master_dark : array_like
        Master dark of the same shape. With ``scale=True`` it must be
        bias-subtracted (pure thermal signal), since the bias does not scale.
    dark_exposure, image_exposure : float
        Exposure times (any common unit) of the master dark and of ``image``.
    scale : bool
        Scale the dark by ``image_exposure / dark_exposure`` (True) or subtract it
        as is (False; exposures then only need to be positive).

    Returns
    -------
    ndarray
        ``image - master_dark * image_exposure / dark_exposure`` (or
        ``image - master_dark``); float32, or float64 for a float64 ``image``.
    """
    for name, value in (("dark_exposure", dark_exposure), ("image_exposure", image_exposure)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be a positive exposure time")
    light, dark = _pair(image, master_dark, "master_dark")
    if not scale:
        return light - dark
    ratio = light.dtype.type(float(image_exposure) / float(dark_exposure))
    return light - dark * ratio


def flat_correct(
    image: ArrayLike, master_flat: ArrayLike, *, min_value: float = 1e-3
) -> np.ndarray:
    """Divide by a normalised master flat; unusable flat pixels give NaN.

    Parameters
    ----------
    image : array_like
        Bias/dark-calibrated frame.
    master_flat : array_like
        Master flat normalised to median 1 (see :func:`normalize_flat`).
    min_value : float, optional
        Flat pixels below this value (dead or vignetted to black, and NaN) cannot
        be corrected; the output there is NaN rather than inf or a huge value
        (default 1e-3).

    Returns
    -------
    ndarray
        ``image / master_flat`` (float32, or float64 for a float64 ``image``).

    Notes
    -----
    ``ccdproc.flat_correct`` instead raises such flat pixels to ``min_value`` and
    normalises the flat by its mean unless ``norm_value`` is given; with
    ``norm_value=1`` both agree on every pixel where the flat is >= ``min_value``.
    """
    if not (np.isfinite(min_value) and min_value > 0):
        raise ValueError(f"min_value={min_value} must be a positive flat level")
    light, flat = _pair(image, master_flat, "master_flat")
    usable = flat >= min_value  # False for NaN as well
    with np.errstate(divide="ignore", invalid="ignore"):
        out = light / flat
    out[~usable] = np.nan
    return out


def normalize_flat(flat: ArrayLike) -> np.ndarray:
    """Normalise a master flat to median 1: ``flat / nanmedian(flat)``.

    Parameters
    ----------
    flat : array_like
        Bias/dark-calibrated master flat. NaN pixels are ignored by the median and
        stay NaN.

    Returns
    -------
    ndarray
        Normalised flat (float32, or float64 for float64 input).

    Raises
    ------
    ValueError
        If the median is not a positive finite number (empty, all-NaN or
        non-positive flat).
    """
    array = float_array(flat, "flat")
    median = float(bn.nanmedian(array)) if array.size else float("nan")
    if not (np.isfinite(median) and median > 0):
        raise ValueError(
            f"flat has median {median}; pass a bias/dark-subtracted flat with a "
            "positive signal level"
        )
    return array / array.dtype.type(median)
