"""Dispatch from a configured rejection method to its kernel."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

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

__all__ = ["auto_high_sigma", "expected_false_rates", "rejection_masks", "resolve_rejection"]


AUTO_FALSE_HIGH_PER_PIXEL = 0.005
"""``auto``: expected false high rejections per pixel over the whole stack (all subs)."""
AUTO_MIN_HIGH, AUTO_MAX_HIGH, AUTO_LOW = 3.0, 5.0, 4.0


def auto_high_sigma(frames: int) -> float:
    """The high threshold (sigmas) of ``auto`` for ``frames`` subs.

    ``Phi^-1(1 - 0.005 / N)`` bounded to [3, 5]: a pixel stack of ``N`` Gaussian samples then
    loses on average 0.005 good samples above the mean, whatever ``N`` (Chauvenet's idea):
    3.14 for 6 subs, 3.29 for 10, 3.66 for 40, 4.06 for 200. A fixed 3 sigma would throw
    away 0.135 % of every sub, all of it good data.
    """
    tail = AUTO_FALSE_HIGH_PER_PIXEL / max(int(frames), 1)
    return float(np.clip(ndtri(1.0 - tail), AUTO_MIN_HIGH, AUTO_MAX_HIGH))


def resolve_rejection(rejection: Rejection, frames: int, *, frame_type: str = "light") -> Rejection:
    """The concrete method for ``auto``, else the method as given.

    ``auto`` takes WBPP's choice by number of frames (:func:`pipeline.kernels.rejection.
    auto_method`) with one change for lights: from 6 subs on it is winsorized sigma
    clipping, whose thresholds are in units of the noise (the compiled kernel never lets the
    sigma fall below the subs' measured noise), with the high threshold of
    :func:`auto_high_sigma`. WBPP's linear fit clipping above 15 subs measures its
    tolerance from the spread of the sorted samples about a fitted line, which on pure
    noise rejects about 1.7 % of every sub high at its default 2.5 (a 2.5 sigma test
    would reject 0.6 %); local normalization already removes the sky differences that linear
    fit is meant to absorb.
    """
    if not isinstance(rejection, AutoRejection):
        return rejection
    chosen = krej.auto_method(frames, frame_type=frame_type)
    if chosen == "percentile_clip":
        return PercentileRejection()
    if frame_type != "light":
        return LinearFitRejection() if chosen == "linear_fit" else WinsorizedSigmaRejection()
    return WinsorizedSigmaRejection(low=AUTO_LOW, high=round(auto_high_sigma(frames), 2))


def expected_false_rates(rejection: Rejection) -> dict[str, float] | None:
    """One-sided Gaussian tail probabilities of a sigma-type method's thresholds.

    The fraction of a sub's pixels that pure noise would lose below and above (``low``,
    ``high``); None for methods whose thresholds are not in noise sigmas (percentile, linear
    fit, ESD, min/max, none).
    """
    if not isinstance(
        rejection, SigmaClipRejection | WinsorizedSigmaRejection | AveragedSigmaRejection
    ):
        return None
    return {"low": float(ndtr(-rejection.low)), "high": float(ndtr(-rejection.high))}


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
