"""Dark frame optimization: the dark-current scale that minimises a light's noise."""

from __future__ import annotations

import math

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

from pipeline.kernels._common import float_array, require_ndim, require_same_shape
from pipeline.kernels.stats import MAD_TO_SIGMA, SUBSAMPLE_TARGET

__all__ = ["optimal_dark_scale"]

_MIN_SELECTED = 1000  # fewer dark-structure samples than this: use all samples


def _mad_sigma(values: np.ndarray) -> float:
    center = bn.median(values)
    return MAD_TO_SIGMA * float(bn.median(np.abs(values - center)))


def _row_sample(image: np.ndarray, target: int) -> np.ndarray:
    """Every k-th row (k odd, so both CFA row parities are kept) down to ~target pixels."""
    if image.size <= target:
        return image
    stride = math.ceil(image.size / target)
    stride += 1 - stride % 2
    return image[::stride]


def optimal_dark_scale(
    light_minus_bias: ArrayLike,
    dark_thermal: ArrayLike,
    *,
    bounds: tuple[float, float] = (0.0, 2.0),
    threshold: float = 3.0,
) -> float:
    """Scale ``k`` of the thermal dark that minimises the noise of ``light - k * dark``.

    Parameters
    ----------
    light_minus_bias : array_like
        (H, W) bias-subtracted light frame (mono or CFA mosaic). NaN is ignored.
    dark_thermal : array_like
        (H, W) bias-subtracted master dark (thermal signal only). NaN is ignored.
    bounds : (float, float), optional
        Search interval for ``k`` (default ``(0, 2)``).
    threshold : float, optional
        Only pixels where the dark has structure are evaluated: those whose dark
        high-pass deviates from its median by more than ``threshold`` robust sigmas
        (default 3). Falls back to all pixels when fewer than 1000 qualify.

    Returns
    -------
    float
        The optimal factor, within ``bounds``.

    Raises
    ------
    ValueError
        On shape mismatch, invalid bounds or threshold, or no finite pixel pairs.

    Notes
    -----
    PixInsight's dark frame optimization (ImageCalibration; J. Conejero, "Dark
    Frame Optimization Algorithm", PixInsight forum 2015) models the light as
    ``I = I0 + k D + B`` and finds ``k`` by minimising a noise evaluation of the
    calibrated frame, ``I - B - k D``, with a golden-section search. Its noise
    function is a k-sigma clipped standard deviation of the first wavelet layer,
    and its *optimization threshold* restricts the evaluation to dark pixels above
    ``median + T sigma``, where dark current is well above the read noise. This
    function follows the same design:

    * High-pass: the difference of pixels two columns apart,
      ``x[:, 2:] - x[:, :-2]``. It removes sky, gradients and amp glow (constant
      offsets in the difference), and on a Bayer mosaic it only ever compares
      pixels of the same colour, so it needs no pattern.
    * Evaluation set: samples where the dark's high-pass is beyond ``threshold``
      MAD-sigmas (hot and warm pixels, strong fixed-pattern structure). Over all
      pixels a robust noise estimate would treat the hot-pixel residuals as
      outliers and barely react to ``k`` on a modern low-dark-current sensor.
    * Noise: MAD-sigma of ``hp(light) - k hp(dark)`` over that set, robust to
      stars and cosmic rays that happen to fall on it. A clipped standard
      deviation (PixInsight's choice) was tested and rejected: hot pixels carry
      extra shot noise, so clipping them away by mis-scaling the dark *lowers* the
      clipped deviation and biases ``k`` (by 13-36 % on synthetic frames like those
      of the tests, against < 0.5 % here).
    * Minimisation: :func:`scipy.optimize.minimize_scalar` (bounded Brent,
      golden section with parabolic steps), ``xatol = 1e-4 (hi - lo)``.

    Frames above 4 Mpx are evaluated on every k-th row (k odd, so both CFA row
    parities remain); the minimisation then takes a few dozen evaluations on the
    selected samples: ~0.35 s for a 12 Mpx frame on the 2-core development machine.
    """
    light = float_array(light_minus_bias, "light_minus_bias")
    dark = float_array(dark_thermal, "dark_thermal")
    require_ndim(light, "light_minus_bias", (2,))
    require_same_shape(light, dark, "light_minus_bias", "dark_thermal")
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds={bounds!r}; pass finite (low, high) with low < high")
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold={threshold} must be a non-negative number of sigmas")
    if light.shape[1] < 3:
        raise ValueError(f"frames have shape {light.shape}; need at least 3 columns")

    light_rows = _row_sample(light, SUBSAMPLE_TARGET).astype(np.float64)
    dark_rows = _row_sample(dark, SUBSAMPLE_TARGET).astype(np.float64)
    hp_light = (light_rows[:, 2:] - light_rows[:, :-2]).ravel()
    hp_dark = (dark_rows[:, 2:] - dark_rows[:, :-2]).ravel()
    finite = np.isfinite(hp_light) & np.isfinite(hp_dark)
    hp_light, hp_dark = hp_light[finite], hp_dark[finite]
    if hp_light.size == 0:
        raise ValueError("light and dark have no finite pixel pairs to evaluate")

    spread = _mad_sigma(hp_dark)
    if spread > 0:
        structure = np.abs(hp_dark - bn.median(hp_dark)) > threshold * spread
        if np.count_nonzero(structure) >= _MIN_SELECTED:
            hp_light, hp_dark = hp_light[structure], hp_dark[structure]

    def noise(k: float) -> float:
        return _mad_sigma(hp_light - k * hp_dark)

    result = minimize_scalar(
        noise, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4 * (hi - lo)}
    )
    return float(min(max(result.x, lo), hi))
