"""PSF matching of subs to their stack, for pixel rejection.

Subs of one night differ in seeing. Where the stack has a star, a blurrier sub is lower in
the core and higher in the wings than the stack, by far more than its noise out to many
pixels: a per-pixel test against the stack's median then rejects the wings of every star
of the blurriest subs, good data. Difference imaging (Alard & Lupton 1998) matches PSFs
with a convolution kernel built from Gaussians; here the difference of a sub from the
stack ``M`` is modelled with two such terms,

    x_i - M  ~  sum_k c_ik (G_k * S - S),

``S`` the stack's signal above the sky, ``G_k`` a Gaussian of width ``sigma_k`` and
``c_ik`` fitted per sub by least squares over the stack's sources (``c > 0`` blurs, ``c < 0``
sharpens). Rejection then tests ``x_i`` minus its modelled difference, so what it judges
is what the seeing cannot explain: cosmic rays, trails, hot pixels. (A photometric-scale
term ``a_i S``, the kernel's integral in difference imaging, is left out: on the sources
alone it is nearly collinear with the blur terms, and the subs' normalization already
matches their star fluxes.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from pipeline.kernels.stats import mad_sigma

__all__ = [
    "basis_radius",
    "blur_basis",
    "fit_pixels",
    "normal_equations",
    "solve_coefficients",
    "source_signal",
]

TRUNCATE = 4.0
"""Gaussian kernels are cut at this many sigmas (scipy's default)."""
CLIP_PASSES = 5
"""Fit, clip, refit: at most this many passes (they stop once the kept pixels repeat)."""
MIN_SOURCE_PIXELS = 50
"""Fewer usable source pixels than this (or a singular system): the sub is not matched."""
MAX_FIT_PIXELS = 50_000
"""Pixels of one part of an image used for the fit: the most informative ones."""


def basis_radius(sigmas: Sequence[float]) -> int:
    """Half-width (pixels) of the widest Gaussian: the rows a band needs on each side."""
    return max(int(TRUNCATE * float(s) + 0.5) for s in sigmas)


def source_signal(stack_mean: np.ndarray, sky: float, threshold: float) -> np.ndarray:
    """The stack's signal above ``sky`` where it exceeds ``threshold``, else 0 (float32).

    Parameters
    ----------
    stack_mean
        (rows, cols) stack (NaN: no data).
    sky
        Background level of the stack.
    threshold
        Least signal counted as a source (e.g. 3 noise sigmas of the stack): below it the
        model is zero, so the noise of the sky never enters the test.
    """
    signal = np.asarray(stack_mean, dtype=np.float32) - np.float32(sky)
    signal[~(signal > threshold)] = 0.0  # NaN and faint -> 0
    return signal


def blur_basis(signal: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """The model's terms ``G_k * S - S`` of a (rows, cols) signal, shape (K, rows, cols).

    Edges use the nearest pixel; a band with :func:`basis_radius` rows of its neighbours on
    each side gets the same terms as the whole image.
    """
    signal = np.asarray(signal, dtype=np.float32)
    basis = np.empty((len(sigmas),) + signal.shape, dtype=np.float32)
    for index, sigma in enumerate(sigmas):
        ndimage.gaussian_filter(
            signal, float(sigma), output=basis[index], mode="nearest", truncate=TRUNCATE
        )
        basis[index] -= signal
    return basis


def fit_pixels(sources: np.ndarray, basis: np.ndarray, limit: int = MAX_FIT_PIXELS) -> np.ndarray:
    """Indices of the source pixels the fit uses: all of them, or the ``limit`` with the
    largest widest term (star cores and wings, where the seeing shows; a smooth sky gradient
    above the threshold has terms near 0 and tells nothing).

    Parameters
    ----------
    sources
        (P,) bool: the stack's source pixels.
    basis
        (K, P) model terms (:func:`blur_basis`), the widest last.
    limit
        Most pixels returned.
    """
    candidates = np.flatnonzero(sources)
    if candidates.size <= limit:
        return candidates
    strength = np.abs(basis[-1, candidates])
    chosen = np.argpartition(-strength, limit - 1)[:limit]
    return np.sort(candidates[chosen])


def normal_equations(
    differences: np.ndarray, basis: np.ndarray, *, clip: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares normal equations of each sub's difference on the basis, outliers out.

    Parameters
    ----------
    differences
        (N, P) sub minus stack at P source pixels (NaN: no data).
    basis
        (K, P) model terms at the same pixels (:func:`blur_basis`).
    clip
        Pixels whose residual from the fit is beyond ``clip`` robust sigmas (cosmic rays,
        trails) are left out and the fit repeated, until the kept pixels stop changing
        (at most :data:`CLIP_PASSES` fits); the sums are over the pixels finally kept.

    Returns
    -------
    ata, atb
        (N, K, K) and (N, K) sums over the kept pixels: add them over parts of an image,
        then :func:`solve_coefficients`.
    """
    frames, terms = differences.shape[0], basis.shape[0]
    ata = np.zeros((frames, terms, terms))
    atb = np.zeros((frames, terms))
    design = basis.T.astype(np.float64)
    for index in range(frames):
        y = differences[index].astype(np.float64)
        kept = np.flatnonzero(np.isfinite(y))
        for _ in range(CLIP_PASSES):
            if kept.size < MIN_SOURCE_PIXELS:
                break
            fit, *_ = np.linalg.lstsq(design[kept], y[kept], rcond=None)
            residual = y - design @ fit
            scale = mad_sigma(residual[kept])
            if not scale > 0:
                break
            inside = np.flatnonzero(np.abs(residual) <= clip * scale)
            if np.array_equal(inside, kept):
                break
            kept = inside
        if kept.size < MIN_SOURCE_PIXELS:
            continue
        a, b = design[kept], y[kept]
        ata[index] = a.T @ a
        atb[index] = a.T @ b
    return ata, atb


def solve_coefficients(ata: np.ndarray, atb: np.ndarray) -> np.ndarray:
    """(N, K) model coefficients from summed normal equations (0 where unsolvable)."""
    coefficients = np.zeros(atb.shape)
    for index in range(atb.shape[0]):
        matrix = ata[index]
        if not np.all(np.isfinite(matrix)) or np.linalg.matrix_rank(matrix) < matrix.shape[0]:
            continue
        coefficients[index] = np.linalg.solve(matrix, atb[index])
    return coefficients
