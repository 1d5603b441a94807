"""Preview stage: the PixInsight STF auto-stretch of a linear master as 8-bit pixels."""

from __future__ import annotations

import numpy as np

from pipeline.config.models import PreviewConfig
from pipeline.kernels.stretch import (
    StretchParameters,
    apply_stretch,
    auto_stretch_parameters,
    normalize_to_unit,
)

__all__ = ["render_preview"]

VERSION = "1"


def render_preview(
    image: np.ndarray, config: PreviewConfig, *, linked: bool | None = None
) -> tuple[np.ndarray, StretchParameters]:
    """Stretch a linear image (H, W) or (C, H, W) to 8-bit (H, W) or (H, W, C) pixels.

    Parameters
    ----------
    image
        Linear data, any positive scale; NaN is no data.
    config
        Preview settings (shadows clipping, target background, linked).
    linked
        Overrides ``config.linked`` when given.
    """
    unit, _ = normalize_to_unit(image)
    parameters = auto_stretch_parameters(
        unit,
        shadows_clipping=config.shadows_clipping,
        target_background=config.target_background,
        linked=config.linked if linked is None else linked,
    )
    stretched = apply_stretch(unit, parameters)
    pixels = np.round(np.clip(stretched, 0.0, 1.0) * 255.0).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = np.moveaxis(pixels, 0, -1)
    return pixels, parameters
