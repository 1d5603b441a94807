"""Dispatch from a configured rejection method to its kernel."""

from __future__ import annotations

import numpy as np

from pipeline.config.models import (
    MinMaxRejection,
    NoRejection,
    Rejection,
    SigmaClipRejection,
    WinsorizedSigmaRejection,
)
from pipeline.kernels import rejection as krej

__all__ = ["rejection_masks"]


def rejection_masks(stack: np.ndarray, rejection: Rejection) -> tuple[np.ndarray, np.ndarray]:
    """Low and high rejection masks of a (N, ...) stack for the configured method."""
    if isinstance(rejection, NoRejection) or stack.shape[0] < 3:
        empty = np.zeros(stack.shape, dtype=bool)
        return empty, empty.copy()
    if isinstance(rejection, SigmaClipRejection):
        return krej.sigma_clip_mask(
            stack, low=rejection.low, high=rejection.high, max_iterations=rejection.max_iterations
        )
    if isinstance(rejection, WinsorizedSigmaRejection):
        return krej.winsorized_sigma_clip_mask(
            stack, low=rejection.low, high=rejection.high, max_iterations=rejection.max_iterations
        )
    if isinstance(rejection, MinMaxRejection):
        return krej.minmax_mask(stack, n_low=rejection.n_low, n_high=rejection.n_high)
    raise TypeError(f"unknown rejection method {rejection!r}")
