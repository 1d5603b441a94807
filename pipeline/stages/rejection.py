"""Dispatch from a configured rejection method to its kernel."""

from __future__ import annotations

import numpy as np

from pipeline.config.models import (
    AutoRejection,
    AveragedSigmaRejection,
    ESDRejection,
    LinearFitRejection,
    MinMaxRejection,
    NoRejection,
    PercentileRejection,
    Rejection,
    SigmaClipRejection,
    WinsorizedSigmaRejection,
)
from pipeline.kernels import rejection as krej

__all__ = ["rejection_masks", "resolve_rejection"]


def resolve_rejection(rejection: Rejection, frames: int, *, frame_type: str = "light") -> Rejection:
    """The concrete method for ``auto`` (WBPP's choice by number of frames), else as given."""
    if not isinstance(rejection, AutoRejection):
        return rejection
    chosen = krej.auto_method(frames, frame_type=frame_type)
    return {
        "percentile_clip": PercentileRejection(),
        "winsorized_sigma": WinsorizedSigmaRejection(),
        "linear_fit": LinearFitRejection(),
    }[chosen]


def rejection_masks(stack: np.ndarray, rejection: Rejection) -> tuple[np.ndarray, np.ndarray]:
    """Low and high rejection masks of a (N, ...) stack for the configured method."""
    rejection = resolve_rejection(rejection, stack.shape[0])
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
    if isinstance(rejection, PercentileRejection):
        return krej.percentile_clip_mask(stack, low=rejection.low, high=rejection.high)
    if isinstance(rejection, AveragedSigmaRejection):
        return krej.averaged_sigma_clip_mask(
            stack, low=rejection.low, high=rejection.high, max_iterations=rejection.max_iterations
        )
    if isinstance(rejection, LinearFitRejection):
        return krej.linear_fit_clip_mask(
            stack, low=rejection.low, high=rejection.high, max_iterations=rejection.max_iterations
        )
    if isinstance(rejection, ESDRejection):
        return krej.esd_mask(
            stack,
            outlier_fraction=rejection.outlier_fraction,
            alpha=rejection.alpha,
            low_relaxation=rejection.low_relaxation,
        )
    raise TypeError(f"unknown rejection method {rejection!r}")
