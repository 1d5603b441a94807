"""Geometric resampling of images by affine or projective transforms.

Pixel convention: ``x`` is the column and ``y`` the row, pixel centres sit at integer
coordinates, so an image of shape (H, W) covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
NaN is "no data": output pixels without a source are NaN (the no-data footprint),
never zeros.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from pipeline.kernels._common import float_array, require_ndim, result_dtype

__all__ = ["INTERPOLATIONS", "footprint", "warp_image"]

#: Supported values of ``warp_image(interpolation=...)``.
INTERPOLATIONS = ("lanczos3", "bicubic", "bilinear", "nearest")

_BAND_PIXELS = 1 << 18  # output pixels per band: bounds the (band, 6, 6) temporaries
_LANCZOS_A = 3
_SPLINE_PAD = 12  # edge padding before the cubic-spline prefilter (as scipy does)


def footprint(image: ArrayLike) -> np.ndarray:
    """Boolean mask of the no-data (NaN) pixels of an image.

    Parameters
    ----------
    image : array_like
        (H, W) or (C, H, W) image.

    Returns
    -------
    ndarray of bool
        (H, W) mask, True where the pixel is NaN (in any channel, for (C, H, W)).
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (2, 3))
    nan = np.isnan(array)
    return nan.any(axis=0) if array.ndim == 3 else nan


def _validate_matrix(matrix: ArrayLike) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise ValueError(
            f"matrix has shape {m.shape} (or non-finite entries); pass a finite 3x3 "
            "matrix mapping output (x, y, 1) to input coordinates"
        )
    return m


def _validate_shape(output_shape: tuple[int, int]) -> tuple[int, int]:
    shape = tuple(output_shape)
    if len(shape) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in shape):
        raise ValueError(f"output_shape={output_shape!r}; pass (rows, columns), both >= 1")
    return int(shape[0]), int(shape[1])


def _source_coords(matrix, rows: slice, width: int, in_shape: tuple[int, int]):
    """Source (sx, sy) of the output pixels of ``rows`` plus the in-domain mask."""
    y, x = np.mgrid[rows, 0:width].astype(np.float64)
    u = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    v = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    w = matrix[2, 0] * x + matrix[2, 1] * y + matrix[2, 2]
    if not (matrix[2, 0] == 0 and matrix[2, 1] == 0 and matrix[2, 2] == 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = u / w, v / w
    h, wd = in_shape
    inside = (w > 0) & (u >= -0.5) & (u <= wd - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    sx = np.where(inside, u, 0.0).ravel()
    sy = np.where(inside, v, 0.0).ravel()
    return sx, sy, inside.ravel()


def _nearest_index(coord: np.ndarray, size: int) -> np.ndarray:
    """Index of the pixel whose centre is nearest (halves round up), clamped."""
    return np.clip(np.floor(coord + 0.5).astype(np.intp), 0, size - 1)


# ---------------------------------------------------------------------------- Lanczos


def _lanczos_table(steps: int) -> np.ndarray:
    """Normalised Lanczos-3 tap weights for ``t = i / steps``, shape (steps + 1, 6).

    Row ``i`` holds the weights of the six taps at distances ``t + 2 - k`` from a
    point with fractional offset ``t`` past tap 2; each row sums to 1 and row 0 is
    exactly ``(0, 0, 1, 0, 0, 0)``.
    """
    t = np.arange(steps + 1, dtype=np.float64) / steps
    d = t[:, None] + (2.0 - np.arange(6))
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.sinc(d) * np.sinc(d / _LANCZOS_A)
    w[np.abs(d) >= _LANCZOS_A] = 0.0
    w[0] = (0, 0, 1, 0, 0, 0)
    w[-1] = (0, 0, 0, 1, 0, 0)
    w /= w.sum(axis=1, keepdims=True)
    table = w.astype(np.float32)
    table.flags.writeable = False
    return table


_LANCZOS_STEPS = 4096
_LANCZOS_TABLE = _lanczos_table(_LANCZOS_STEPS)  # read-only constant


def _lanczos_weights(coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First tap index ``floor(c) - 2`` and normalised Lanczos-3 weights (P, 6).

    Weights are linearly interpolated from a 4096-step table of the exact,
    normalised kernel (interpolation error < 1e-7, rows still sum to 1). A point on
    the pixel grid (``t == 0``) gets exactly one unit weight, so integer positions
    reproduce the input bit for bit.
    """
    base = np.floor(coord)
    position = (coord - base) * _LANCZOS_STEPS
    index = position.astype(np.intp)
    frac = (position - index).astype(np.float32)[:, None]
    w = _LANCZOS_TABLE[index]
    w += frac * (_LANCZOS_TABLE[np.minimum(index + 1, _LANCZOS_STEPS)] - w)
    return base.astype(np.intp) - 2, w


def _lanczos_sample(padded, pad, x0, y0, wx, wy, clamp: bool) -> np.ndarray:
    """Lanczos-3 value of each point from 6x6 blocks of the edge-padded plane."""
    windows = np.lib.stride_tricks.sliding_window_view(padded, (6, 6))
    block = windows[y0 + pad, x0 + pad]  # (P, 6, 6) gather, rows j, columns k
    value = np.einsum("pj,pj->p", np.einsum("pjk,pk->pj", block, wx), wy)
    if clamp:  # the 2x2 nearest input pixels are taps 2 and 3 on both axes
        a, b, c, d = block[:, 2, 2], block[:, 2, 3], block[:, 3, 2], block[:, 3, 3]
        low = np.minimum(np.minimum(a, b), np.minimum(c, d))
        high = np.maximum(np.maximum(a, b), np.maximum(c, d))
        np.clip(value, low, high, out=value)
    return value


def _compiled_lanczos(
    padded: np.ndarray, sx: np.ndarray, sy: np.ndarray, clamp: bool
) -> np.ndarray:
    """Lanczos-3 sampling through the compiled loop (same arithmetic as the numpy path)."""
    data = np.ascontiguousarray(padded, dtype=np.float32)
    values = lanczos_sample(data, _LANCZOS_A, sx, sy, _LANCZOS_TABLE, _LANCZOS_STEPS, clamp)
    return values.astype(padded.dtype, copy=False)


try:  # numba compiles the hot loop; without it the vectorised numpy path is used
    from pipeline.kernels._lanczos_numba import lanczos_sample

    _COMPILED = True
except ImportError:  # pragma: no cover - numba is a declared dependency
    _COMPILED = False


# ------------------------------------------------------------------------- planes


class _Plane:
    """One input channel prepared for sampling (NaN-filled, padded, prefiltered)."""

    def __init__(self, plane: np.ndarray, interpolation: str) -> None:
        self.shape = plane.shape
        bad = ~np.isfinite(plane)  # NaN (and +-inf) are no data
        self.nan = bad if bad.any() else None
        if self.nan is not None and not self.nan.all():
            # nearest-valid fill, so no-data holes do not ring into their surroundings
            index = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
            plane = plane[tuple(index)]
        self.interpolation = interpolation
        if interpolation == "lanczos3":
            self.data = np.pad(plane, _LANCZOS_A, mode="edge")
        elif interpolation == "bicubic":
            padded = np.pad(plane, _SPLINE_PAD, mode="edge")
            self.data = ndimage.spline_filter(padded, order=3, mode="nearest")
        else:
            self.data = plane

    def sample(self, sx, sy, lanczos, clamp: bool) -> np.ndarray:
        """Interpolated values at the points (sx, sy), NaN where the nearest is NaN."""
        if self.nan is not None and self.nan.all():
            return np.full(sx.shape, np.nan)
        h, w = self.shape
        if self.interpolation == "lanczos3" and lanczos is None:
            value = _compiled_lanczos(self.data, sx, sy, clamp)
        elif self.interpolation == "lanczos3":
            (x0, wx), (y0, wy) = lanczos
            value = _lanczos_sample(self.data, _LANCZOS_A, x0, y0, wx, wy, clamp)
        elif self.interpolation == "nearest":
            value = self.data[_nearest_index(sy, h), _nearest_index(sx, w)]
        else:
            order, shift = (3, _SPLINE_PAD) if self.interpolation == "bicubic" else (1, 0)
            coords = np.stack([sy + shift, sx + shift])
            value = ndimage.map_coordinates(
                self.data, coords, order=order, mode="nearest", prefilter=False
            )
        if self.nan is not None:
            hole = self.nan[_nearest_index(sy, h), _nearest_index(sx, w)]
            value = np.where(hole, np.nan, value)
        return value


def warp_image(
    image: ArrayLike,
    matrix: ArrayLike,
    *,
    output_shape: tuple[int, int],
    interpolation: str = "lanczos3",
    clamp: bool = True,
) -> np.ndarray:
    """Resample an image through a 3x3 affine or projective transform.

    Parameters
    ----------
    image : array_like
        (H, W) or (C, H, W) input image; NaN pixels are no data.
    matrix : array_like
        3x3 matrix mapping OUTPUT pixel coordinates ``(x, y, 1)`` (x = column,
        y = row) to INPUT coordinates ``(u, v, w)``; the source point is
        ``(u / w, v / w)``.
    output_shape : tuple of int
        (rows, columns) of the output.
    interpolation : {"lanczos3", "bicubic", "bilinear", "nearest"}, optional
        ``"lanczos3"`` (default): separable 6x6 Lanczos-3 kernel evaluated per output
        pixel, weights normalised to sum 1 along each axis. ``"bicubic"``: cubic
        B-spline interpolation (``scipy.ndimage.map_coordinates(order=3)``).
        ``"bilinear"``: ``order=1``. ``"nearest"``: nearest pixel centre.
    clamp : bool, optional
        Lanczos-3 only: clamp each result to the [min, max] of its 2x2 nearest input
        pixels, which suppresses the ringing (dark halos) of the kernel's negative
        lobes around stars and hot pixels (default True).

    Returns
    -------
    ndarray
        Warped image of shape ``output_shape`` (or ``(C,) + output_shape``); float32
        (float64 for float64 input).

    Notes
    -----
    **Footprint.** An output pixel is NaN when its source point lies outside
    ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``, when ``w <= 0`` (behind the projective
    horizon), or when the input pixel nearest to the source point is NaN (or
    infinite, which is treated as no data too).
    Kernel taps that fall outside the input replicate the edge pixels; NaN input
    pixels are replaced by their nearest valid neighbour before interpolation, so
    no-data regions neither spread nor ring into valid data.

    **Clamping** trades ringing for peak fidelity: a smooth maximum that falls
    between pixel centres is flattened to the largest of the 4 nearest samples,
    e.g. the interpolated peak of an undersampled star is not raised above its
    brightest pixel. Use ``clamp=False`` for band-limited data.

    The output is processed in bands of rows, so temporaries stay bounded (a few
    tens of MB) on 12+ Mpx images.

    References
    ----------
    .. [1] Duchon, C. E. (1979), "Lanczos Filtering in One and Two Dimensions",
       J. Appl. Meteor. 18, 1016-1022.
    .. [2] Unser, M. (1999), "Splines: a perfect fit for signal and image
       processing", IEEE Signal Processing Magazine 16(6), 22-38 (``bicubic``).
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (2, 3))
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is unknown; use one of {INTERPOLATIONS}")
    m = _validate_matrix(matrix)
    rows, cols = _validate_shape(output_shape)
    channels = array if array.ndim == 3 else array[None]
    if channels.shape[1] == 0 or channels.shape[2] == 0:
        raise ValueError(f"image has shape {array.shape}; pass a non-empty image")
    planes = [_Plane(channel, interpolation) for channel in channels]
    out = np.empty((channels.shape[0], rows, cols), dtype=result_dtype(array))
    band = max(1, _BAND_PIXELS // cols)
    for r0 in range(0, rows, band):
        r1 = min(rows, r0 + band)
        sx, sy, inside = _source_coords(m, slice(r0, r1), cols, channels.shape[1:])
        lanczos = None
        if interpolation == "lanczos3" and not _COMPILED:
            lanczos = (_lanczos_weights(sx), _lanczos_weights(sy))
        for plane, target in zip(planes, out, strict=True):
            value = plane.sample(sx, sy, lanczos, clamp)
            target[r0:r1] = np.where(inside, value, np.nan).reshape(r1 - r0, cols)
    return out if array.ndim == 3 else out[0]
