"""Calibration stage: stack master calibration frames and calibrate light frames.

Pure functions on arrays; the engine reads frames (in row bands when memory requires) and
writes the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config.models import CalibrationConfig, Rejection
from pipeline.kernels import calibration as kcal
from pipeline.kernels import combine as kcombine
from pipeline.stages.rejection import rejection_masks

__all__ = ["CalibrationMasters", "MasterBand", "calibrate_light", "stack_master_band"]

VERSION = "1"


@dataclass(frozen=True)
class MasterBand:
    """One band of a stacked master and what rejection removed."""

    image: np.ndarray
    rejected_low: int
    rejected_high: int


@dataclass(frozen=True)
class CalibrationMasters:
    """The master frames applied to one light group (any may be absent).

    ``dark`` is the raw master dark (bias included); with ``dark_scale`` set, the bias is
    subtracted from it and the remainder is scaled by ``dark_scale`` (light/dark exposure).
    ``flat`` is normalised to a median of 1.
    """

    bias: np.ndarray | None = None
    dark: np.ndarray | None = None
    dark_scale: float | None = None
    flat: np.ndarray | None = None


def stack_master_band(stack: np.ndarray, rejection: Rejection) -> MasterBand:
    """Combine a band of calibration frames (N, rows, cols) with rejection into their mean.

    Parameters
    ----------
    stack
        Frames already in the form to combine (bias/dark-subtracted, normalised for flats).
    rejection
        The configured rejection method.
    """
    low, high = rejection_masks(stack, rejection)
    image, _ = kcombine.weighted_mean(
        stack, weights=np.ones(stack.shape[0], dtype=np.float32), rejected=low | high
    )
    return MasterBand(image.astype(np.float32), int(low.sum()), int(high.sum()))


def calibrate_light(
    raw: np.ndarray, masters: CalibrationMasters, config: CalibrationConfig
) -> np.ndarray:
    """Calibrate one light: subtract bias and (scaled) dark, divide by the flat.

    Flat pixels below ``config.flat_min`` become NaN (no data) instead of infinities.
    """
    image = raw.astype(np.float32, copy=True)
    if masters.dark is not None and masters.dark_scale is not None:
        if masters.bias is None:
            raise ValueError("a scaled dark needs a master bias; the plan should not allow this")
        image = kcal.subtract_bias(image, masters.bias)
        thermal = kcal.subtract_bias(masters.dark, masters.bias)
        image = kcal.subtract_dark(
            image, thermal, dark_exposure=1.0, image_exposure=masters.dark_scale, scale=True
        )
    elif masters.dark is not None:
        image = image - masters.dark
    elif masters.bias is not None:
        image = kcal.subtract_bias(image, masters.bias)
    if masters.flat is not None:
        image = kcal.flat_correct(image, masters.flat, min_value=config.flat_min)
    if config.pedestal:
        image = image + np.float32(config.pedestal)
    return image.astype(np.float32, copy=False)
