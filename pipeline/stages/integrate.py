"""Integration stage: normalize, reject and average a band of registered subs.

The engine feeds bands of rows with the sub axis whole; this module never sees files.
Sigma and winsorized sigma clipping (and no rejection) run as one compiled pass per pixel
that rejects and averages without building masks; the other methods build the rejection
masks with their kernels and then average what survives. Either way every pixel depends
only on its own samples, so any banding of the image gives bit-identical masters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.config.models import (
    LargeScaleRejection,
    NoRejection,
    Rejection,
    SigmaClipRejection,
    WinsorizedSigmaRejection,
)
from pipeline.kernels import _clip_numba as clip
from pipeline.kernels import psfmatch
from pipeline.kernels.combine import MAX_FRAMES
from pipeline.kernels.localnorm import evaluate_background
from pipeline.kernels.rejection import grow_rejection
from pipeline.stages.normalize import LocalNormalization, Normalization
from pipeline.stages.rejection import expected_false_rates, rejection_masks, resolve_rejection

__all__ = [
    "IntegratedBand",
    "PsfMatch",
    "Scratch",
    "autocrop_box",
    "halo_rows",
    "integrate_band",
    "expected_false_rates",
    "is_compiled",
    "psf_match_equations",
    "psf_match_rows",
    "resolve_rejection",
]

VERSION = "4"


@dataclass(frozen=True)
class PsfMatch:
    """Each sub's seeing difference from the stack, modelled for rejection.

    Attributes
    ----------
    sigmas
        Widths (pixels) of the Gaussians of the model's terms
        (:mod:`pipeline.kernels.psfmatch`).
    coefficients
        (channels, N, len(sigmas)) fitted coefficients (:func:`psf_match_equations`,
        summed over the image, then :func:`pipeline.kernels.psfmatch.solve_coefficients`).
    """

    sigmas: tuple[float, ...]
    coefficients: np.ndarray


@dataclass(frozen=True)
class IntegratedBand:
    """A band of the master and its diagnostics.

    Attributes
    ----------
    image
        Weighted mean of the surviving pixels (NaN where no sub has data), float32.
    count
        Number of subs contributing to each pixel.
    low, high
        Number of pixels rejected low / high per pixel.
    noise
        Noise estimate of the master per pixel: ``sqrt(sum w_i^2 s_i^2) / sum w_i`` over
        the contributing subs, ``s_i`` the normalized noise of sub i.
    rejected_per_sub
        (N, 2) counts of low and high rejected pixels of each sub in this band.
    psf_match
        The seeing-difference model rejection used (None: none).
    """

    image: np.ndarray
    count: np.ndarray
    low: np.ndarray
    high: np.ndarray
    noise: np.ndarray
    rejected_per_sub: np.ndarray
    psf_match: PsfMatch | None = None


class Scratch:
    """Reusable working arrays of one worker.

    A fresh multi-hundred-megabyte array costs a page fault per 4 KiB page the first time
    it is written; bands of the same size reuse the same memory instead.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` (valid until the next request)."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < size:
            buffer = self._buffers[name] = np.empty(size, dtype=np.uint8)
        return buffer[:size].view(dtype).reshape(shape)


_COMPILED = {
    NoRejection: clip.METHOD_NONE,
    SigmaClipRejection: clip.METHOD_SIGMA,
    WinsorizedSigmaRejection: clip.METHOD_WINSORIZED,
}


def is_compiled(rejection: Rejection, frames: int) -> bool:
    """Whether ``rejection`` of ``frames`` subs runs as the fused compiled pass (no masks)."""
    return type(resolve_rejection(rejection, frames)) in _COMPILED


def integrate_band(
    stack: np.ndarray,
    *,
    normalizations: Sequence[Normalization | LocalNormalization],
    weights: np.ndarray,
    rejection: Rejection,
    sub_noise: Sequence[float] | None = None,
    pivot: Sequence[float] | None = None,
    large_scale: LargeScaleRejection | None = None,
    rows: slice | None = None,
    keep: slice | None = None,
    overwrite: bool = False,
    scratch: Scratch | None = None,
    psf_match: PsfMatch | None = None,
) -> IntegratedBand:
    """Normalize each sub of a band, reject outliers, and take the weighted mean.

    Parameters
    ----------
    stack
        (N, rows, cols) or (N, channels, rows, cols) float32 band of the registered subs;
        NaN is no data (outside a sub's footprint).
    normalizations
        Per sub: a global linear map, or a local normalization (whose background model
        is evaluated on this band's rows).
    weights
        One weight per sub (>= 0).
    rejection
        The configured rejection method (``auto`` resolved by the number of subs).
    sub_noise
        Noise sigma of each sub before normalization (for the noise map); default 1.
    pivot
        Background level per channel of the normalized subs (the reference's). When given
        with ``sub_noise``, rejection compares the subs scaled about it to equal noise,
        ``s * (x - pivot) + pivot`` with ``s = median(noise') / noise'`` (``noise'`` the
        normalized noise of the sub), so that a noisy sub neither hides outliers of the
        others nor loses good samples; the average uses the normalized values. Sigma and
        winsorized sigma clipping then never take a pixel's sigma below that common noise:
        a few samples that happen to agree closely must not get good samples rejected.
    large_scale
        Grow the high rejections of bright structures (trails) into their edges; it needs
        :func:`halo_rows` extra rows on each side of the rows kept.
    rows
        Which rows of the full image the band holds (needed for local normalization);
        default: the band is the whole image.
    keep
        The rows of the band whose results are returned (default all); the others are
        the halo that large-scale rejection needs.
    overwrite
        Normalize ``stack`` in place (saves one copy of the band) instead of a copy.
    scratch
        Reusable working memory for the rejection masks (one per worker).
    psf_match
        Test each sample after taking off its sub's modelled seeing difference from the
        stack (:class:`PsfMatch`), so that the wings of a blurrier sub's stars are not
        rejected; it needs :func:`psf_match_rows` more rows of halo. The average uses
        the samples as they are.
    """
    frames = stack.shape[0]
    data, combinations = _prepared(
        stack, normalizations, weights, rejection, sub_noise, pivot, rows, overwrite, scratch
    )
    channels, height = data.shape[1], data.shape[2]
    keep = keep if keep is not None else slice(0, height)
    kept_shape = (len(range(height)[keep]), data.shape[3])
    outputs = [_allocate(kept_shape, frames) for _ in range(channels)]
    for channel, combine in enumerate(combinations):
        if large_scale is None and psf_match is None:
            combine.fused(data[:, channel, keep].reshape(frames, -1), outputs[channel])
            continue
        match = None
        if psf_match is not None:
            channel_coefficients = psf_match.coefficients
            match = (
                channel_coefficients[min(channel, len(channel_coefficients) - 1)],
                psf_match.sigmas,
            )
        combine.masked(data[:, channel], keep, large_scale, match, outputs[channel])
    per_sub = sum(out[5] for out in outputs)
    image, count, low, high, noise_map = (
        np.stack([out[k].reshape(kept_shape) for out in outputs]) for k in range(5)
    )
    if stack.ndim == 3:
        image, count, low, high, noise_map = (a[0] for a in (image, count, low, high, noise_map))
    return IntegratedBand(image, count, low, high, noise_map, per_sub)


def _prepared(
    stack: np.ndarray,
    normalizations: Sequence[Normalization | LocalNormalization],
    weights: np.ndarray,
    rejection: Rejection,
    sub_noise: Sequence[float] | None,
    pivot: Sequence[float] | None,
    rows: slice | None,
    overwrite: bool,
    scratch: Scratch | None,
) -> tuple[np.ndarray, list[_Combination]]:
    """The normalized (N, C, rows, cols) band and each channel's :class:`_Combination`."""
    frames = stack.shape[0]
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"{frames} subs given; integrate between 1 and {MAX_FRAMES} at once")
    data = stack if overwrite else stack.copy()
    if data.ndim == 3:
        data = data[:, None]
    rows = rows if rows is not None else slice(0, data.shape[2])
    for index, normalization in enumerate(normalizations):
        _normalize_sub(data[index], normalization, rows)
    weights = _checked_weights(weights, frames)
    noise = np.ones(frames) if sub_noise is None else np.asarray(sub_noise, dtype=np.float64)
    rejection = resolve_rejection(rejection, frames)
    combinations = []
    for channel in range(data.shape[1]):
        factor = np.array([_factor(n, channel) for n in normalizations])
        normalized_noise = noise * np.abs(factor)
        equalize = (np.ones(frames), 0.0, 0.0)
        if pivot is not None and sub_noise is not None:
            common = float(np.median(normalized_noise))
            level = float(pivot[min(channel, len(pivot) - 1)])
            equalize = (common / normalized_noise, level, common)
        combinations.append(_Combination(weights, normalized_noise, equalize, rejection, scratch))
    return data, combinations


def psf_match_equations(
    stack: np.ndarray,
    *,
    normalizations: Sequence[Normalization | LocalNormalization],
    weights: np.ndarray,
    rejection: Rejection,
    sigmas: Sequence[float],
    sub_noise: Sequence[float] | None = None,
    pivot: Sequence[float] | None = None,
    rows: slice | None = None,
    keep: slice | None = None,
    overwrite: bool = False,
    scratch: Scratch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal equations of the seeing-difference model of every sub, from one band.

    The band is normalized and rejected as :func:`integrate_band` does; each sub's
    difference from the stack at the stack's sources (rows ``keep``) is fitted on the
    model's terms (:func:`pipeline.kernels.psfmatch.normal_equations`). The band needs
    :func:`psf_match_rows` rows of halo on each side.

    Returns
    -------
    ata, atb
        (C, N, K, K) and (C, N, K): sum them over bands, then solve per channel with
        :func:`pipeline.kernels.psfmatch.solve_coefficients`.
    """
    data, combinations = _prepared(
        stack, normalizations, weights, rejection, sub_noise, pivot, rows, overwrite, scratch
    )
    keep = keep if keep is not None else slice(0, data.shape[2])
    equations = []
    for channel, combine in enumerate(combinations):
        band = data[:, channel]
        mean, signal, basis = combine.source_basis(band, sigmas)
        terms = basis[:, keep].reshape(basis.shape[0], -1)
        fit = psfmatch.fit_pixels(signal[keep].ravel() > 0, terms)
        differences = band[:, keep].reshape(band.shape[0], -1)[:, fit] - mean[keep].ravel()[fit]
        equations.append(psfmatch.normal_equations(differences, terms[:, fit]))
    return (
        np.stack([ata for ata, _ in equations]),
        np.stack([atb for _, atb in equations]),
    )


def halo_rows(large_scale: LargeScaleRejection | None) -> int:
    """Extra rows on each side of a band that large-scale rejection needs."""
    return 0 if large_scale is None else 2 * large_scale.growth


def psf_match_rows(sigmas: Sequence[float] | None) -> int:
    """Extra rows on each side of a band that the seeing-difference model needs."""
    return 0 if not sigmas else psfmatch.basis_radius(sigmas)


def _checked_weights(weights, frames: int) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (frames,):
        raise ValueError(f"weights has shape {array.shape}; pass one weight per sub, ({frames},)")
    if not np.all(np.isfinite(array)) or np.any(array < 0) or not np.any(array > 0):
        raise ValueError(
            f"weights {array.tolist()} must be finite, >= 0 and not all zero; "
            "check the weighting settings"
        )
    return array


def _factor(normalization: Normalization | LocalNormalization, channel: int) -> float:
    factors = normalization.factor
    return float(factors[min(channel, len(factors) - 1)])


def _normalize_sub(
    sub: np.ndarray, normalization: Normalization | LocalNormalization, rows: slice
) -> None:
    """``v' = factor * v + offset`` in place, per channel; the offset may be a local model."""
    for channel in range(sub.shape[0]):
        plane = sub[channel]
        plane *= np.float32(_factor(normalization, channel))
        if isinstance(normalization, LocalNormalization):
            grid = normalization.grids[min(channel, len(normalization.grids) - 1)]
            plane += evaluate_background(grid, normalization.shape, rows=rows)
        else:
            plane += np.float32(normalization.offset[min(channel, len(normalization.offset) - 1)])


def _allocate(shape: tuple[int, int], frames: int) -> tuple[np.ndarray, ...]:
    pixels = shape[0] * shape[1]
    return (
        np.empty(pixels, dtype=np.float32),
        np.empty(pixels, dtype=np.uint16),
        np.empty(pixels, dtype=np.uint16),
        np.empty(pixels, dtype=np.uint16),
        np.empty(pixels, dtype=np.float32),
        np.zeros((frames, 2), dtype=np.int64),
    )


@dataclass(frozen=True)
class _Combination:
    """How one channel's samples are rejected and averaged.

    ``equalize`` is ``(scales, pivot, noise)``: rejection sees ``scale * (x - pivot) +
    pivot``, whose noise is ``noise`` (0: unknown); the compiled clippers never use a
    smaller sigma. ``noise`` (attribute) is each sub's normalized noise, for the noise map.
    """

    weights: np.ndarray
    noise: np.ndarray
    equalize: tuple[np.ndarray, float, float]
    rejection: Rejection
    scratch: Scratch | None = None

    def _compiled(self, frames: int) -> tuple[int, tuple, np.ndarray] | None:
        method = _COMPILED.get(type(self.rejection))
        if method is None or frames < 3:
            return None
        settings = (
            float(getattr(self.rejection, "low", 0.0)),
            float(getattr(self.rejection, "high", 0.0)),
            int(getattr(self.rejection, "max_iterations", 1)),
            float(self.equalize[2]),
        )
        return method, settings, clip.sorting_network(frames)

    def fused(self, plane: np.ndarray, out: tuple) -> None:
        """Reject and average a (N, pixels) plane into ``out`` in one compiled pass."""
        scales, pivot = self.equalize[0], float(self.equalize[1])
        compiled = self._compiled(plane.shape[0])
        if compiled is not None:
            method, settings, pairs = compiled
            clip.clip_combine(
                plane, self.weights, self.noise, (scales, pivot), pairs, method, settings, out
            )
            return
        low, high = self.masks(plane)
        clip.masked_combine(plane, self.weights, self.noise, low, high, out)

    def masks(self, plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Low and high rejection masks of a (N, pixels) plane."""
        frames = plane.shape[0]
        scales, pivot = self.equalize[0], float(self.equalize[1])
        compiled = self._compiled(frames)
        if compiled is not None:
            method, settings, pairs = compiled
            scratch = self.scratch or Scratch()
            low = scratch.array("low", plane.shape, bool)
            high = scratch.array("high", plane.shape, bool)
            clip.clip_masks(plane, (scales, pivot), pairs, method, settings, low, high)
            return low, high
        if frames < 3 or isinstance(self.rejection, NoRejection):
            return np.zeros(plane.shape, dtype=bool), np.zeros(plane.shape, dtype=bool)
        if np.all(scales == 1.0):
            return rejection_masks(plane, self.rejection)
        # one float32 working copy in rejection space (not a float64 one twice its size)
        tested = (self.scratch or Scratch()).array("tested", plane.shape, plane.dtype)
        np.subtract(plane, plane.dtype.type(pivot), out=tested)
        tested *= scales.astype(plane.dtype)[:, None]
        tested += plane.dtype.type(pivot)
        return rejection_masks(tested, self.rejection)

    def source_basis(
        self, band: np.ndarray, sigmas: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stack mean (rejected as configured), its source signal and the model's terms.

        Sources are where the stack is 3 of its noise sigmas above the sky (the pivot).
        """
        frames, rows, cols = band.shape
        first = _allocate((rows, cols), frames)
        self.fused(band.reshape(frames, -1), first)
        mean = first[0].reshape(rows, cols)
        sky = float(self.equalize[1]) if self.equalize[2] > 0 else float(np.nanmedian(mean))
        threshold = 3.0 * float(np.median(self.noise)) / np.sqrt(frames)
        signal = psfmatch.source_signal(mean, sky, threshold)
        return mean, signal, psfmatch.blur_basis(signal, sigmas)

    def matched_masks(
        self, band: np.ndarray, coefficients: np.ndarray, sigmas: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks of a (N, rows, cols) band tested without each sub's modelled seeing
        difference (the band is restored afterwards, to float32 rounding)."""
        frames = band.shape[0]
        _, _, basis = self.source_basis(band, sigmas)
        flat_basis = basis.reshape(basis.shape[0], -1)
        samples = band.reshape(frames, -1)
        touched = np.flatnonzero(np.any(flat_basis != 0, axis=0))  # near the sources only
        sparse = touched.size < flat_basis.shape[1] // 4
        terms = flat_basis[:, touched] if sparse else flat_basis
        coefficients = coefficients.astype(np.float32)

        def shift(sign: float) -> None:
            for index in range(frames):
                correction = coefficients[index] @ terms
                correction *= np.float32(sign)
                if sparse:
                    samples[index, touched] += correction
                else:
                    samples[index] += correction

        shift(-1.0)
        try:
            return self.masks(band.reshape(frames, -1))
        finally:
            shift(1.0)

    def masked(
        self,
        band: np.ndarray,
        keep: slice,
        large_scale: LargeScaleRejection | None,
        match: tuple[np.ndarray, Sequence[float]] | None,
        out: tuple,
    ) -> None:
        """Reject a (N, rows, cols) band (seeing-matched if ``match``), grow each sub's high
        rejections (if ``large_scale``), average ``keep``."""
        frames, rows, cols = band.shape
        if match is None:
            low, high = self.masks(band.reshape(frames, -1))
        else:
            low, high = self.matched_masks(band, *match)
        low, high = low.reshape(frames, rows, cols), high.reshape(frames, rows, cols)
        if large_scale is not None:
            for index in range(frames):
                grown = grow_rejection(
                    high[index], growth=large_scale.growth, min_pixels=large_scale.min_pixels
                )
                np.logical_and(grown, ~low[index], out=high[index])
        # Combine the whole (contiguous) band, halo included, then keep the band proper:
        # the compiled loop vectorises only over contiguous rows.
        whole = _allocate((rows, cols), frames)
        clip.masked_combine(
            band.reshape(frames, -1),
            self.weights,
            self.noise,
            low.reshape(frames, -1),
            high.reshape(frames, -1),
            whole,
        )
        for target, source in zip(out[:5], whole[:5], strict=True):
            target[:] = source.reshape(rows, cols)[keep].ravel()
        out[5][:, 0] += np.count_nonzero(low[:, keep], axis=(1, 2))
        out[5][:, 1] += np.count_nonzero(high[:, keep], axis=(1, 2))


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
