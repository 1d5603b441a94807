"""Sensor model for the synthetic night: bias, dark current, cosmic rays, read-out.

Electrons become ADU as ``adu = electrons / gain + bias``; read noise is added in
electrons before the conversion, and the result is rounded and clipped to uint16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CosmicRayPixel",
    "SensorModel",
    "bias_frame_model",
    "cosmic_rays",
    "dark_current_map",
    "draw_hot_pixels",
    "read_out",
]

CosmicRayPixel = tuple[int, int, float]
"""One pixel of a cosmic-ray hit: ``(x, y, adu)``."""


@dataclass(frozen=True)
class SensorModel:
    """Fixed electrical properties of the camera.

    Attributes
    ----------
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise (electrons RMS).
    bias_level : float
        Mean bias offset (ADU).
    column_sigma : float
        RMS of the fixed per-column bias offsets (ADU).
    dark_current : float
        Mean dark current of normal pixels (e-/s).
    n_hot_pixels : int
        Number of warm/hot pixels.
    hot_rate_range : tuple of float
        Hot-pixel dark rates are log-uniform in this range (e-/s).
    """

    gain: float = 0.8
    read_noise: float = 4.0
    bias_level: float = 1000.0
    column_sigma: float = 3.0
    dark_current: float = 0.005
    n_hot_pixels: int = 150
    hot_rate_range: tuple[float, float] = (2.0, 40.0)


def bias_frame_model(
    rng: np.random.Generator, shape: tuple[int, int], sensor: SensorModel
) -> NDArray[np.float32]:
    """Draw the fixed expected bias frame: level plus a per-column pattern.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    shape : tuple of int
        ``(height, width)``.
    sensor : SensorModel
        Camera properties.

    Returns
    -------
    ndarray
        Float32 expected bias (ADU) of shape ``shape``.
    """
    height, width = shape
    columns = rng.normal(0.0, sensor.column_sigma, width)
    return np.broadcast_to(sensor.bias_level + columns, (height, width)).astype(np.float32)


def draw_hot_pixels(
    rng: np.random.Generator, shape: tuple[int, int], sensor: SensorModel
) -> NDArray[np.float64]:
    """Draw distinct hot-pixel positions and their dark rates.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    shape : tuple of int
        ``(height, width)``.
    sensor : SensorModel
        Camera properties.

    Returns
    -------
    ndarray
        ``(n, 3)`` array of ``x, y, rate`` (e-/s), sorted by rate, brightest first.
    """
    height, width = shape
    flat = rng.choice(height * width, size=sensor.n_hot_pixels, replace=False)
    lo, hi = np.log(sensor.hot_rate_range[0]), np.log(sensor.hot_rate_range[1])
    rate = np.exp(rng.uniform(lo, hi, sensor.n_hot_pixels))
    table = np.column_stack([flat % width, flat // width, rate]).astype(np.float64)
    return table[np.argsort(-rate, kind="stable")]


def dark_current_map(
    shape: tuple[int, int], sensor: SensorModel, hot_pixels: NDArray[np.float64]
) -> NDArray[np.float32]:
    """Dark current per pixel (e-/s): uniform floor plus the hot pixels.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)``.
    sensor : SensorModel
        Camera properties.
    hot_pixels : ndarray
        ``(n, 3)`` table from :func:`draw_hot_pixels`.

    Returns
    -------
    ndarray
        Float32 map of shape ``shape``.
    """
    rate = np.full(shape, sensor.dark_current, dtype=np.float64)
    xs, ys = hot_pixels[:, 0].astype(np.int64), hot_pixels[:, 1].astype(np.int64)
    rate[ys, xs] += hot_pixels[:, 2]
    return rate.astype(np.float32)


def cosmic_rays(
    rng: np.random.Generator,
    shape: tuple[int, int],
    mean_count: float = 15.0,
    adu_range: tuple[float, float] = (2000.0, 20000.0),
) -> tuple[CosmicRayPixel, ...]:
    """Draw cosmic-ray hits of 1-4 adjacent pixels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    shape : tuple of int
        ``(height, width)``.
    mean_count : float
        Poisson mean of the number of hits.
    adu_range : tuple of float
        The primary pixel's deposit is log-uniform in this range (ADU); the
        others get 20-70 % of it.

    Returns
    -------
    tuple
        ``(x, y, adu)`` for every affected pixel (a pixel hit twice appears twice).
    """
    height, width = shape
    pixels: list[CosmicRayPixel] = []
    steps = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))
    for _ in range(int(rng.poisson(mean_count))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        primary = float(np.exp(rng.uniform(*np.log(adu_range))))
        hit = {(x, y): primary}
        for _ in range(int(rng.integers(0, 4))):
            dx, dy = steps[int(rng.integers(0, len(steps)))]
            x, y = min(max(x + dx, 0), width - 1), min(max(y + dy, 0), height - 1)
            hit.setdefault((x, y), primary * float(rng.uniform(0.2, 0.7)))
        pixels.extend((px, py, round(adu, 1)) for (px, py), adu in hit.items())
    return tuple(pixels)


def read_out(
    rng: np.random.Generator,
    electrons: NDArray[np.floating],
    bias: NDArray[np.floating],
    sensor: SensorModel,
    extra_adu: tuple[CosmicRayPixel, ...] = (),
    *,
    extra_electrons: NDArray[np.floating] | None = None,
    extra_rng: np.random.Generator | None = None,
) -> NDArray[np.uint16]:
    """Turn expected electrons into a raw uint16 frame.

    Applies Poisson noise, Gaussian read noise, the gain, the bias, any direct
    ADU deposits (cosmic rays), then rounds and clips to ``[0, 65535]``.

    ``extra_electrons`` (e.g. a satellite trail) get their own Poisson draw from
    ``extra_rng``, added to the counts before the read noise. Since
    ``Poisson(a) + Poisson(b)`` is ``Poisson(a + b)`` the statistics are those of
    ``electrons + extra_electrons``, but ``rng`` draws exactly what it would without the
    extra term (numpy's Poisson sampler uses a data-dependent number of draws), so the
    noise of a frame with and without the extra light is the same outside it.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    electrons : ndarray
        Expected photo- and dark electrons per pixel (non-negative).
    bias : ndarray
        Expected bias frame (ADU).
    sensor : SensorModel
        Camera properties.
    extra_adu : tuple
        ``(x, y, adu)`` deposits added after the gain.
    extra_electrons : ndarray, optional
        Further expected electrons per pixel (non-negative), same shape as ``electrons``.
    extra_rng : numpy.random.Generator, optional
        Random source of the ``extra_electrons`` Poisson draw; required with them.

    Returns
    -------
    ndarray
        uint16 raw frame.

    Raises
    ------
    ValueError
        If ``extra_electrons`` is given without ``extra_rng`` or with another shape.
    """
    counts = rng.poisson(electrons).astype(np.float64)
    if extra_electrons is not None:
        if extra_rng is None:
            raise ValueError("extra_electrons need their own extra_rng")
        if np.shape(extra_electrons) != np.shape(electrons):
            raise ValueError(
                f"extra_electrons shape {np.shape(extra_electrons)} differs from "
                f"electrons shape {np.shape(electrons)}"
            )
        counts += extra_rng.poisson(extra_electrons)
    counts += rng.normal(0.0, sensor.read_noise, electrons.shape)
    adu = counts / sensor.gain + bias
    if extra_adu:
        table = np.asarray(extra_adu, dtype=np.float64)
        np.add.at(adu, (table[:, 1].astype(np.int64), table[:, 0].astype(np.int64)), table[:, 2])
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)
