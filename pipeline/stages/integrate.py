"""Integration stage: normalize, reject and average a band of registered subs.

The engine feeds bands of rows with the sub axis whole; this module never sees files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.config.models import IntegrationConfig
from pipeline.kernels.combine import weighted_mean
from pipeline.stages.normalize import Normalization
from pipeline.stages.rejection import rejection_masks

__all__ = ["IntegratedBand", "autocrop_box", "integrate_band"]

VERSION = "1"


@dataclass(frozen=True)
class IntegratedBand:
    """A band of the master and its diagnostics.

    Attributes
    ----------
    image
        Weighted mean of the surviving pixels (NaN where no sub has data).
    count
        Number of subs contributing to each pixel.
    low, high
        Number of pixels rejected low / high per pixel.
    rejected_per_sub
        (N, 2) counts of low and high rejected pixels of each sub in this band.
    """

    image: np.ndarray
    count: np.ndarray
    low: np.ndarray
    high: np.ndarray
    rejected_per_sub: np.ndarray


def integrate_band(
    stack: np.ndarray,
    *,
    normalizations: Sequence[Normalization],
    weights: np.ndarray,
    config: IntegrationConfig,
) -> IntegratedBand:
    """Normalize each sub of a (N, rows, cols) band, reject outliers, and average."""
    factors = np.array([n.factor for n in normalizations], dtype=np.float32)
    offsets = np.array([n.offset for n in normalizations], dtype=np.float32)
    channels = stack.shape[1] if stack.ndim == 4 else 1
    shape = (len(normalizations), channels) + (1, 1) if stack.ndim == 4 else (-1, 1, 1)
    normalized = stack * np.broadcast_to(factors, (len(normalizations), channels)).reshape(shape)
    normalized += np.broadcast_to(offsets, (len(normalizations), channels)).reshape(shape)
    low, high = rejection_masks(normalized, config.rejection)
    image, count = weighted_mean(normalized, weights=weights, rejected=low | high)
    per_sub_axes = tuple(range(1, stack.ndim))
    rejected = np.column_stack([low.sum(axis=per_sub_axes), high.sum(axis=per_sub_axes)])
    return IntegratedBand(
        image=image.astype(np.float32),
        count=count,
        low=low.sum(axis=0).astype(np.uint16),
        high=high.sum(axis=0).astype(np.uint16),
        rejected_per_sub=rejected,
    )


def autocrop_box(count: np.ndarray, minimum: int) -> tuple[slice, slice]:
    """The largest-found rectangle whose every pixel has at least ``minimum`` contributing subs.

    Starting from the whole frame, the edge (top, bottom, left or right line) holding the most
    under-covered pixels is dropped until no edge holds any; with dithering, rotations and
    flips the under-covered area is a border, so this peels exactly that border.

    Parameters
    ----------
    count
        Contributing subs per pixel, (H, W) or (C, H, W) (the smallest channel count is used).
    minimum
        Required number of subs.

    Returns
    -------
    rows, cols
        Slices of the kept rectangle (empty slices if no pixel is covered well enough).
    """
    covered = (count.min(axis=0) if count.ndim == 3 else count) >= minimum
    top, bottom, left, right = 0, covered.shape[0], 0, covered.shape[1]
    while top < bottom and left < right:
        window = covered[top:bottom, left:right]
        bad = [
            (~window[0]).sum(),
            (~window[-1]).sum(),
            (~window[:, 0]).sum(),
            (~window[:, -1]).sum(),
        ]
        worst = int(np.argmax(bad))
        if bad[worst] == 0:
            break
        if worst == 0:
            top += 1
        elif worst == 1:
            bottom -= 1
        elif worst == 2:
            left += 1
        else:
            right -= 1
    return slice(top, bottom), slice(left, right)
