"""Calibration stage: stack master calibration frames and calibrate light frames.

Pure functions on arrays; the engine reads frames (in row bands when memory requires) and
writes the results. One-shot-colour frames are calibrated as mosaics (bias, dark, flat and
cosmetic correction all in CFA space) and debayered afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config.models import CalibrationConfig, DebayerConfig, Rejection
from pipeline.frames import FrameMetadata
from pipeline.kernels import calibration as kcal
from pipeline.kernels import cfa as kcfa
from pipeline.kernels import combine as kcombine
from pipeline.kernels import cosmetic as kcosmetic
from pipeline.kernels.darkopt import optimal_dark_scale
from pipeline.stages.rejection import rejection_masks

__all__ = [
    "CalibratedFrame",
    "CalibrationMasters",
    "MasterBand",
    "calibrate_light",
    "debayer_frame",
    "defect_map",
    "normalize_master_flat",
    "resolve_pattern",
    "stack_master_band",
]

VERSION = "3"


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
    ``flat`` is normalised to a median of 1 (per CFA channel for colour sensors).
    ``defects`` marks hot and cold pixels to replace; ``pattern`` is the CFA pattern or None.
    """

    bias: np.ndarray | None = None
    dark: np.ndarray | None = None
    dark_scale: float | None = None
    flat: np.ndarray | None = None
    defects: np.ndarray | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class CalibratedFrame:
    """A calibrated light (still a mosaic for colour sensors) and what was done to it."""

    image: np.ndarray
    notes: dict = field(default_factory=dict)


def resolve_pattern(metadata: FrameMetadata, config: DebayerConfig) -> str | None:
    """The CFA pattern of a frame's array, from the config override or its header cards."""
    if config.pattern != "auto":
        return config.pattern
    if metadata.bayer_pattern is None or len(metadata.shape) != 2:
        return None
    return kcfa.effective_pattern(
        metadata.bayer_pattern,
        x_offset=metadata.bayer_x_offset,
        y_offset=metadata.bayer_y_offset,
        row_order=metadata.row_order,
        height=metadata.shape[-2],
    )


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


def normalize_master_flat(flat: np.ndarray, pattern: str | None) -> np.ndarray:
    """Scale a master flat to a median of 1, per CFA channel when ``pattern`` is given."""
    if pattern is not None:
        return kcfa.normalize_flat_cfa(flat, pattern)
    return kcal.normalize_flat(flat)


def defect_map(
    master_dark: np.ndarray, config: CalibrationConfig, pattern: str | None
) -> np.ndarray:
    """Hot (1) and cold (2) pixels of a master dark as a uint8 map."""
    cosmetic = config.cosmetic_correction
    hot, cold = kcosmetic.find_defects(
        master_dark, hot_sigma=cosmetic.hot_sigma, cold_sigma=cosmetic.cold_sigma, pattern=pattern
    )
    defects = np.zeros(master_dark.shape, dtype=np.uint8)
    defects[hot] = 1
    defects[cold] = 2
    return defects


def calibrate_light(
    raw: np.ndarray,
    masters: CalibrationMasters,
    config: CalibrationConfig,
    *,
    optimize_dark: bool = False,
    saturation: float | None = None,
) -> CalibratedFrame:
    """Calibrate one light: bias, (scaled or optimised) dark, flat, cosmetic correction.

    Flat pixels below ``config.flat_min`` become NaN (no data) instead of infinities.
    With ``optimize_dark`` the bias-subtracted dark is scaled by the factor that minimises the
    calibrated frame's noise (needs a master bias). ``saturation`` is the raw clipping level
    from the header (see :func:`raw_saturation`); the calibrated frame's level, the lowest
    value a clipped pixel can have after calibration, is noted as ``notes["saturation"]``
    (None when unknown).
    """
    image = raw.astype(np.float32, copy=True)
    notes: dict = {}
    level = raw_saturation(raw, saturation)
    image = _subtract_dark_current(image, masters, optimize_dark, notes)
    if masters.flat is not None:
        image = kcal.flat_correct(image, masters.flat, min_value=config.flat_min)
    image = _cosmetic(image, masters, config, notes)
    if config.pedestal:
        image = image + np.float32(config.pedestal)
    notes["saturation"] = (
        None if level is None else calibrated_saturation(level, masters, config, notes)
    )
    return CalibratedFrame(image.astype(np.float32, copy=False), notes)


def raw_saturation(raw: np.ndarray, header_level: float | None) -> float | None:
    """The raw level at which a frame clips.

    The header's level (``SATURATE``, ``DATAMAX`` or the data type's largest value), lowered
    to the frame's own maximum where at least four pixels pile up there (a 12- or 14-bit
    sensor scaled to 16 bits clips below 65535; floating-point data say nothing).
    """
    top = float(np.nanmax(raw)) if raw.size else float("nan")
    if not np.isfinite(top):
        return header_level
    piled = np.count_nonzero(raw >= top) >= _CLIPPED_PIXELS
    if piled and (header_level is None or top < header_level):
        return top
    return header_level


_CLIPPED_PIXELS = 4
_SATURATION_STRIDE = 4
_SATURATION_PERCENTILE = 0.1


def calibrated_saturation(
    raw_level: float, masters: CalibrationMasters, config: CalibrationConfig, notes: dict
) -> float:
    """The lowest value (0.1th percentile over the frame) a clipped pixel takes after calibration.

    A clipped pixel becomes ``(level - bias - k dark) / flat + pedestal``; it varies over the
    frame with the flat (vignetting) and the dark, so a star is saturated wherever its peak
    reaches this lower envelope. ``k`` is the dark scale ``notes["dark_scale"]`` that the
    calibration used.
    """
    step = (slice(None, None, _SATURATION_STRIDE),) * 2
    offset: np.ndarray | float = 0.0
    if masters.dark is not None and masters.bias is not None:
        scale = float(notes.get("dark_scale", 1.0))
        offset = masters.bias[step] + scale * (masters.dark[step] - masters.bias[step])
    elif masters.dark is not None:
        offset = masters.dark[step]
    elif masters.bias is not None:
        offset = masters.bias[step]
    values = np.asarray(raw_level - offset, dtype=np.float64)
    if masters.flat is not None:
        flat = masters.flat[step]
        values = np.where(flat >= config.flat_min, values / flat, np.nan)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float(raw_level) + config.pedestal
    return float(np.percentile(values, _SATURATION_PERCENTILE)) + config.pedestal


def _subtract_dark_current(
    image: np.ndarray, masters: CalibrationMasters, optimize: bool, notes: dict
) -> np.ndarray:
    if masters.dark is None:
        return kcal.subtract_bias(image, masters.bias) if masters.bias is not None else image
    if masters.bias is None:
        if masters.dark_scale is not None:
            raise ValueError("a scaled dark needs a master bias; the plan should not allow this")
        notes["dark_scale"] = 1.0
        return image - masters.dark
    image = kcal.subtract_bias(image, masters.bias)
    thermal = kcal.subtract_bias(masters.dark, masters.bias)
    scale = 1.0 if masters.dark_scale is None else masters.dark_scale
    notes["dark_scale_by_exposure"] = scale
    if optimize:
        scale = optimal_dark_scale(image, thermal)
        notes["dark_scale_optimized"] = scale
    notes["dark_scale"] = scale
    return kcal.subtract_dark(image, thermal, dark_exposure=1.0, image_exposure=scale, scale=True)


def _cosmetic(
    image: np.ndarray, masters: CalibrationMasters, config: CalibrationConfig, notes: dict
) -> np.ndarray:
    cosmetic = config.cosmetic_correction
    if not cosmetic.enabled:
        return image
    defects = masters.defects > 0 if masters.defects is not None else np.zeros(image.shape, bool)
    if cosmetic.from_lights:
        found = kcosmetic.find_defects_in_frame(
            image, sigma=cosmetic.lights_sigma, pattern=masters.pattern
        )
        notes["defects_from_light"] = int(found.sum())
        defects = defects | found
    if not defects.any():
        return image
    notes["defects_corrected"] = int(defects.sum())
    return kcosmetic.correct_defects(image, defects, pattern=masters.pattern)


def debayer_frame(image: np.ndarray, pattern: str | None, config: DebayerConfig) -> np.ndarray:
    """Demosaic a calibrated CFA frame into (3, H, W) RGB (mono frames pass through)."""
    if pattern is None:
        return image
    return kcfa.debayer(image, pattern, method=config.method)
