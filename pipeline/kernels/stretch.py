"""PixInsight-style screen stretch (STF AutoStretch) for previews of linear images.

Images are (H, W) or (C, H, W) arrays normalised to [0, 1] (see
:func:`normalize_to_unit`). NaN means "no data" and is ignored by the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike

from pipeline.kernels._common import float_array, require_ndim, result_dtype
from pipeline.kernels.stats import robust_location_scale

__all__ = [
    "StretchParameters",
    "apply_stretch",
    "auto_stretch_parameters",
    "midtones_transfer",
    "normalize_to_unit",
]


def midtones_transfer(x: ArrayLike, m: ArrayLike) -> np.ndarray | float:
    """PixInsight midtones transfer function ``MTF(m, x)``.

    Parameters
    ----------
    x : array_like
        Values in [0, 1]; values <= 0 map to 0 and >= 1 map to 1. NaN stays NaN.
    m : array_like
        Midtones balance in [0, 1] (broadcastable against ``x``).

    Returns
    -------
    float or ndarray
        ``(m - 1) x / ((2m - 1) x - m)``; float32 for float32/integer ``x``, float64
        for float64 ``x``, a Python float for scalar input. ``MTF(m, 0) = 0``,
        ``MTF(m, 1) = 1`` and ``MTF(m, m) = 0.5``.

    References
    ----------
    .. [1] PixInsight HistogramTransformation / ScreenTransferFunction
       documentation; PCL ``HistogramTransformation::MTF``.
    """
    scalar = np.ndim(x) == 0 and np.ndim(m) == 0
    xs = float_array(x, "x")
    ms = np.asarray(m, dtype=np.float64)
    if np.any(~((ms >= 0) & (ms <= 1))):
        raise ValueError(f"midtones balance m={m} must lie in [0, 1]")
    ms = ms.astype(xs.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (ms - 1.0) * xs / ((2.0 * ms - 1.0) * xs - ms)
    y = np.where(xs <= 0, 0, np.where(xs >= 1, 1, y))
    if scalar:
        return float(y)
    return y.astype(result_dtype(xs), copy=False)


@dataclass(frozen=True)
class StretchParameters:
    """Per-channel screen-transfer parameters (one tuple entry per channel).

    Attributes
    ----------
    shadows : tuple of float
        Shadows clipping point ``c0`` in [0, 1].
    midtones : tuple of float
        Midtones balance ``m`` in [0, 1].
    highlights : tuple of float
        Highlights clipping point ``c1`` in [0, 1], ``c1 > c0``.
    """

    shadows: tuple[float, ...]
    midtones: tuple[float, ...]
    highlights: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.shadows)
        if n == 0 or len(self.midtones) != n or len(self.highlights) != n:
            raise ValueError(
                f"StretchParameters needs equally long, non-empty tuples; got "
                f"{len(self.shadows)} shadows, {len(self.midtones)} midtones, "
                f"{len(self.highlights)} highlights"
            )
        for c0, m, c1 in zip(self.shadows, self.midtones, self.highlights, strict=True):
            if not (0.0 <= c0 < c1 <= 1.0 and 0.0 <= m <= 1.0):
                raise ValueError(
                    f"invalid stretch (shadows={c0}, midtones={m}, highlights={c1}); "
                    "need 0 <= shadows < highlights <= 1 and 0 <= midtones <= 1"
                )

    @property
    def channels(self) -> int:
        """Number of channels described."""
        return len(self.shadows)


def _channel_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median and MAD-sigma (1.4826 MAD) of a (C, H, W) image."""
    stats = np.array([robust_location_scale(channel) for channel in image])
    if np.isnan(stats).any():
        raise ValueError("a channel of image has no finite pixel; cannot derive a stretch")
    return stats[:, 0], stats[:, 1]


def _shadows(median: np.ndarray, madn: np.ndarray, shadows_clipping: float) -> np.ndarray:
    """Per-channel ``median + shadows_clipping * MADN`` (0 where MADN is 0), unclipped."""
    return np.where(madn > 0, median + shadows_clipping * madn, 0.0)


def _unlinked(median: float, madn: float, shadows_clipping: float, target: float):
    """(c0, m) of PixInsight's AutoSTF for one channel."""
    c0 = float(np.clip(_shadows(median, madn, shadows_clipping), 0.0, 1.0))
    return c0, float(midtones_transfer(median - c0, target))


def _linked(median: np.ndarray, madn: np.ndarray, shadows_clipping: float, target: float):
    """(c0, m) shared by all channels, as in PixInsight's linked AutoSTF."""
    c0 = float(np.clip(_shadows(median, madn, shadows_clipping).mean(), 0.0, 1.0))
    return c0, float(midtones_transfer(median.mean() - c0, target))


def auto_stretch_parameters(
    image: ArrayLike,
    *,
    shadows_clipping: float = -2.8,
    target_background: float = 0.25,
    linked: bool = True,
) -> StretchParameters:
    """Automatic screen stretch, as PixInsight's STF AutoStretch.

    Parameters
    ----------
    image : array_like
        (H, W) or (C, H, W) image normalised to [0, 1]; NaN pixels are ignored.
    shadows_clipping : float, optional
        Shadows clipping point in MADN units relative to the median (default -2.8).
    target_background : float, optional
        Target median brightness of the stretched background (default 0.25).
    linked : bool, optional
        Use one set of parameters for all channels (default), which preserves the
        colour balance; otherwise stretch each channel independently.

    Returns
    -------
    StretchParameters
        One entry per channel (identical entries when linked).

    Notes
    -----
    With ``median`` and ``MADN = 1.4826 * MAD`` of each channel:
    ``c0 = clip(median + shadows_clipping * MADN, 0, 1)``,
    ``m = MTF(target_background, median - c0)`` (the midtones balance that maps
    ``median - c0`` to ``target_background``) and ``c1 = 1``. Linked: ``c0`` is the
    mean over channels of the unclipped per-channel terms (a channel with zero MADN
    contributes 0, as in PixInsight's script), then clipped, and ``m`` uses the mean
    of the channel medians. Since ``shadows_clipping <= 0``, ``c0 <= median`` and
    ``c0 < 1 = c1`` always.

    As in PixInsight, ``m`` ignores the ``1 / (1 - c0)`` rescaling that
    :func:`apply_stretch` applies before the MTF, so the stretched background lands
    at ``target_background`` only when ``c0`` is small (true of linear astro images
    normalised by their min/max, where ``c0`` is ~0.01); for an image whose
    background sits high in [0, 1] it lands above the target. PixInsight's special
    case for inverted images (median > 0.5) is not implemented: linear masters are
    never inverted. Statistics of images above 4 Mpx per channel use a
    deterministic subsample (see :func:`pipeline.kernels.stats.robust_location_scale`).

    References
    ----------
    .. [1] PixInsight AutoSTF script (``AutoSTF.js``) and ScreenTransferFunction
       documentation, Pleiades Astrophoto.
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (2, 3))
    if not (np.isfinite(shadows_clipping) and shadows_clipping <= 0):
        raise ValueError(f"shadows_clipping={shadows_clipping} must be a finite value <= 0")
    if not 0.0 < target_background < 1.0:
        raise ValueError(f"target_background={target_background} must lie in (0, 1)")
    channels = array if array.ndim == 3 else array[None]
    median, madn = _channel_stats(channels)
    if linked:
        rows = [_linked(median, madn, shadows_clipping, target_background)] * median.size
    else:
        rows = [
            _unlinked(md, mad, shadows_clipping, target_background)
            for md, mad in zip(median, madn, strict=True)
        ]
    c0s, ms = zip(*rows, strict=True)
    return StretchParameters(shadows=c0s, midtones=ms, highlights=(1.0,) * len(rows))


def apply_stretch(image: ArrayLike, params: StretchParameters) -> np.ndarray:
    """Apply a screen stretch: clip to [c0, c1], rescale to [0, 1], then MTF.

    Parameters
    ----------
    image : array_like
        (H, W) or (C, H, W) image normalised to [0, 1].
    params : StretchParameters
        One entry per channel, or a single entry applied to every channel.

    Returns
    -------
    ndarray of float32
        Stretched image in [0, 1], same shape as ``image``; NaN pixels become 0.
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (2, 3))
    channels = array if array.ndim == 3 else array[None]
    if params.channels not in (1, channels.shape[0]):
        raise ValueError(
            f"params describe {params.channels} channels but image has "
            f"{channels.shape[0]}; pass one set per channel or a single set"
        )
    out = np.empty(channels.shape, dtype=np.float32)
    for i, channel in enumerate(channels):
        k = i if params.channels > 1 else 0
        c0, m, c1 = params.shadows[k], params.midtones[k], params.highlights[k]
        scaled = (channel.astype(np.float32) - np.float32(c0)) / np.float32(c1 - c0)
        np.clip(scaled, 0.0, 1.0, out=scaled)
        stretched = midtones_transfer(scaled, m)
        out[i] = np.where(np.isnan(stretched), np.float32(0), stretched)
    return out.reshape(array.shape)


def normalize_to_unit(image: ArrayLike) -> tuple[np.ndarray, tuple[float, float]]:
    """Linearly rescale an image to [0, 1] using its finite minimum and maximum.

    Parameters
    ----------
    image : array_like
        Image of any shape (e.g. a linear master). NaN stays NaN.

    Returns
    -------
    scaled : ndarray
        ``(image - lo) / (hi - lo)`` clipped to [0, 1] (so ``+-inf`` map to 0/1);
        float32 (float64 for float64 input). A constant image maps to all zeros.
    (lo, hi) : tuple of float
        The finite minimum and maximum used, to undo the scaling.

    Raises
    ------
    ValueError
        If the image has no finite pixel.
    """
    array = float_array(image, "image")
    if array.size == 0:
        raise ValueError(f"image has shape {array.shape}; pass a non-empty array")
    lo, hi = float(bn.nanmin(array)), float(bn.nanmax(array))
    if not (np.isfinite(lo) and np.isfinite(hi)):  # all NaN, or +-inf present
        finite = array[np.isfinite(array)]
        if finite.size == 0:
            raise ValueError("image has no finite pixel; cannot normalise it to [0, 1]")
        lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo
    dtype = result_dtype(array)
    if span == 0:
        scaled = np.where(np.isnan(array), np.nan, 0.0).astype(dtype)
        return scaled, (lo, hi)
    with np.errstate(invalid="ignore"):  # inf - inf never happens: lo is finite
        scaled = ((array - dtype.type(lo)) / dtype.type(span)).astype(dtype, copy=False)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    return scaled, (lo, hi)
