"""Subframe weights: PixInsight's PSF Signal Weight and PSF SNR, SNR/noise weights, WBPP.

Typical use for one calibrated sub (mono, or one CFA/colour channel)::

    fits = fit_psf(image, x, y)                       # pipeline.kernels.psf
    sigma = mrs_noise(image)                          # pipeline.kernels.noise
    m_star, _ = background_residual_estimates(image)
    good = fits.ok
    psfsw = psf_signal_weight(fits.signal[good], fits.signal_area[good],
                              noise=sigma, m_star=m_star)
    psfsnr = psf_snr(fits.signal[good], noise=sigma)

Each weight here is a number per sub; only their ratios between subs matter. PSFSW,
PSF SNR and the SNR weight are invariant to a common scaling of a sub's pixel values
(they are ratios of like powers of flux and noise), so they can be computed before
normalisation and in any units. :func:`noise_weight` is not: normalise first or pass
the normalisation ``scale``. :func:`background_residual_estimates` takes ~0.3 s on a
12 Mpx frame (2-core machine); everything else is instantaneous.
"""

from __future__ import annotations

import math

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.special import erfc

from pipeline.kernels._common import float_array, require_ndim
from pipeline.kernels.stats import SUBSAMPLE_TARGET, subsample

__all__ = [
    "NSTAR_MAD_FACTOR",
    "PSFSNR_CONSTANT",
    "PSFSW_CONSTANT",
    "WBPP_DEFAULT_ECCENTRICITY_WEIGHT",
    "WBPP_DEFAULT_FWHM_WEIGHT",
    "WBPP_DEFAULT_PEDESTAL",
    "WBPP_DEFAULT_SNR_WEIGHT",
    "average_deviation",
    "background_residual_estimates",
    "noise_weight",
    "psf_signal_weight",
    "psf_snr",
    "snr_weight",
    "star_count_weight",
    "wbpp_formula_weight",
]

#: PCL ``PSFSignalEstimator::PSFSignalWeight`` scale, 5.326e-6 / 9.0e6.
PSFSW_CONSTANT = 5.326e-6 / 9.0e6
#: PCL ``PSFSignalEstimator::PSFSNR`` scale, 1.316e-7 / 4.987e6.
PSFSNR_CONSTANT = 1.316e-7 / 4.987e6
#: Makes the MAD of a half-normal residual consistent with the Gaussian sigma (PCL
#: ``NStar_MAD``).
NSTAR_MAD_FACTOR = 2.48308

#: WBPP's default formula coefficients (its default "Nebula" preset).
WBPP_DEFAULT_FWHM_WEIGHT = 5.0
WBPP_DEFAULT_ECCENTRICITY_WEIGHT = 10.0
WBPP_DEFAULT_SNR_WEIGHT = 20.0
WBPP_DEFAULT_PEDESTAL = 65.0

_BACKGROUND_SCALES = (32, 64, 128, 192, 256, 384, 512, 768, 1024)
_BACKGROUND_FILTER = 7  # median filter over 7 x 7 tiles of scale / 8 px


def _positive_scalar(value: float, name: str, hint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; {hint}") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name}={value!r} must be a positive finite number; {hint}")
    return number


def _star_arrays(signal: ArrayLike, signal_area: ArrayLike | None = None):
    flux = np.asarray(signal, dtype=np.float64).reshape(-1)
    if signal_area is None:
        return flux[np.isfinite(flux)], None
    area = np.asarray(signal_area, dtype=np.float64).reshape(-1)
    if area.shape != flux.shape:
        raise ValueError(
            f"signal has {flux.size} values but signal_area has {area.size}; "
            f"pass one area per star (PSFFits.signal_area)"
        )
    keep = np.isfinite(flux) & np.isfinite(area) & (area > 0)
    return flux[keep], area[keep]


def _rcr_winsorize(values: np.ndarray) -> np.ndarray:
    """Winsorise ``values`` at the extremes kept by robust Chauvenet rejection.

    Bulk rejection (Maples et al. 2018): location = median, scale = 68.27th percentile
    of the absolute deviations; reject every point whose two-sided tail probability
    times the sample size is below 0.5; repeat until nothing is rejected. Rejected
    low (high) values are then replaced by the lowest (highest) kept value, as PCL's
    PSF signal estimator does with its mean-flux sample.
    """
    if values.size < 3:
        return values
    keep = np.ones(values.size, dtype=bool)
    while True:
        kept = values[keep]
        if kept.size < 3:
            break
        centre = float(np.median(kept))
        deviation = np.abs(kept - centre)
        scale = float(np.percentile(deviation, 68.27))
        if not scale > 0:
            break
        reject = kept.size * erfc(deviation / (scale * math.sqrt(2.0))) < 0.5
        if not reject.any():
            break
        index = np.flatnonzero(keep)
        keep[index[reject]] = False
    low, high = float(values[keep].min()), float(values[keep].max())
    return np.clip(values, low, high)


def psf_signal_weight(
    signal: ArrayLike, signal_area: ArrayLike, *, noise: float, m_star: float
) -> float:
    """PixInsight's PSF Signal Weight (PSFSW) of one sub.

    Parameters
    ----------
    signal : array_like
        Per-star PSF signal: flux above the local background inside the FWTM ellipse
        of the fitted PSF (:attr:`PSFFits.signal <pipeline.kernels.psf.PSFFits>`),
        for the well-fitted stars (``fits.ok``). Non-finite entries are ignored.
    signal_area : array_like
        Area (px^2) of each star's FWTM ellipse (``PSFFits.signal_area``).
    noise : float
        Standard deviation of the noise, ``sigma_N``: PixInsight uses the MRS noise
        estimate of the calibrated sub (:func:`pipeline.kernels.noise.mrs_noise`)
        and falls back to ``N*`` (:func:`background_residual_estimates`).
    m_star : float
        ``M*`` of :func:`background_residual_estimates` for the same sub.

    Returns
    -------
    float
        ``PSFSW = 5.326e-6 * F * M / (9.0e6 * sigma_N * M*)``; 0.0 when no star is
        given. Same units-free value as PixInsight's for the same measurements.

    Raises
    ------
    ValueError
        If ``noise`` or ``m_star`` is not a positive finite number, or the arrays'
        lengths differ.

    Notes
    -----
    PSFSW was introduced with PixInsight 1.8.9 (Conejero et al., "New Image Weighting
    Algorithms in PixInsight") for ImageIntegration, SubframeSelector and WBPP. Its
    exact expression is the one in the PixInsight Class Library
    (``PSFSignalEstimator::PSFSignalWeight`` and ``EstimateSignal``, identical in
    PCL 2.6.4 and the January 2025 release):

    * ``F = sum_i S_i``: total PSF flux, ``S_i`` the signal of star ``i`` (flux above
      the local background over the elliptical region where the fitted PSF exceeds
      a tenth of its peak, growth factor 1);
    * ``M = sum_i S_i / A_i``: total *mean* flux, ``A_i = pi/4 FWTM_x FWTM_y`` the
      area of that region. The mean fluxes are winsorised at the bounds of a robust
      Chauvenet rejection first (PCL does so to neutralise fits with abnormally
      small regions; here :func:`_rcr_winsorize`);
    * ``sigma_N``: noise standard deviation; ``M*``: see
      :func:`background_residual_estimates`.

    ``F`` grows with transparency and exposure, ``M`` additionally with sharpness
    (the same flux in a smaller area), and the denominator penalises noise. The
    weight is invariant to a common scaling of the image (numerator and denominator
    both scale with its square). It is not invariant to the number of stars, so
    compare subs of the same field measured with the same star list or detector.

    Uncertainties: the constants ``5.326e-6 / 9.0e6`` are PCL's (chosen there for a
    convenient numeric range; they cancel in relative weights). PixInsight's stars
    come from its own detector and PSF fits (Moffat beta = 4 by default, saturated
    stars excluded, stars closer than 1 px to another dropped); this function only
    combines the measurements it is given, so absolute values match PixInsight's
    only as far as the star lists and fits do. The paper [1] presents the
    estimator, but only its introduction could be consulted for this
    implementation; the expression and constants are those of the PCL source [2],
    which PixInsight itself runs.

    References
    ----------
    .. [1] Conejero, J., Radice, E. L. & Sartori, R., "New Image Weighting Algorithms
       in PixInsight", https://pixinsight.com/doc/docs/ImageWeighting/ImageWeighting.html
    .. [2] PixInsight Class Library, include/pcl/PSFSignalEstimator.h and
       src/pcl/PSFSignalEstimator.cpp (PCL 2.6.4), Pleiades Astrophoto.
    .. [3] Maples, M. P. et al. (2018), "Robust Chauvenet Outlier Rejection",
       ApJS 238, 2.
    """
    sigma = _positive_scalar(noise, "noise", "pass the sub's noise sigma (e.g. mrs_noise)")
    mstar = _positive_scalar(m_star, "m_star", "pass M* from background_residual_estimates")
    flux, area = _star_arrays(signal, signal_area)
    if flux.size == 0:
        return 0.0
    mean_flux = _rcr_winsorize(np.sort(flux / area))
    total_flux = math.fsum(flux)
    total_mean_flux = math.fsum(mean_flux)
    return PSFSW_CONSTANT * total_flux * total_mean_flux / (sigma * mstar)


def psf_snr(signal: ArrayLike, *, noise: float) -> float:
    """PixInsight's PSF SNR estimator of one sub.

    Parameters
    ----------
    signal : array_like
        Per-star PSF signal (``PSFFits.signal`` of the good fits); non-finite entries
        are ignored.
    noise : float
        Noise standard deviation of the sub (MRS noise, as for
        :func:`psf_signal_weight`).

    Returns
    -------
    float
        ``PSFSNR = 1.316e-7 * F**2 / (4.987e6 * sigma_N**2)`` with ``F`` the total PSF
        signal; 0.0 without stars.

    Raises
    ------
    ValueError
        If ``noise`` is not a positive finite number.

    Notes
    -----
    The squared ratio of the total PSF flux to the noise, i.e. an SNR-squared weight
    measured on stars only, invariant to a common scaling of the image. Expression
    and constants from PCL ``PSFSignalEstimator::PSFSNR`` (PCL 2.6.4 and the January
    2025 release); introduced with PixInsight 1.8.9 alongside PSFSW. ``F`` is the
    same total PSF signal as in :func:`psf_signal_weight`.

    References
    ----------
    .. [1] Conejero, J., Radice, E. L. & Sartori, R., "New Image Weighting Algorithms
       in PixInsight", https://pixinsight.com/doc/docs/ImageWeighting/ImageWeighting.html
    .. [2] PixInsight Class Library, include/pcl/PSFSignalEstimator.h (PCL 2.6.4).
    """
    sigma = _positive_scalar(noise, "noise", "pass the sub's noise sigma (e.g. mrs_noise)")
    flux, _ = _star_arrays(signal)
    if flux.size == 0:
        return 0.0
    total_flux = math.fsum(flux)
    return PSFSNR_CONSTANT * total_flux * total_flux / (sigma * sigma)


def _tile_edges(n: int, block: int) -> np.ndarray:
    """Edges of ``round(n / block)`` nearly equal tiles covering ``0..n``."""
    count = max(1, int(round(n / block)))
    return np.rint(np.linspace(0, n, count + 1)).astype(np.int64)


def _tile_medians(image: np.ndarray, row_edges: np.ndarray, col_edges: np.ndarray):
    """NaN-aware median of every tile."""
    grid = np.empty((row_edges.size - 1, col_edges.size - 1), dtype=np.float64)
    for i in range(grid.shape[0]):
        band = image[row_edges[i] : row_edges[i + 1]]
        for j in range(grid.shape[1]):
            grid[i, j] = bn.nanmedian(band[:, col_edges[j] : col_edges[j + 1]])
    return grid


def _odd_pad(grid: np.ndarray, width: int) -> np.ndarray:
    """Pad by point reflection about the edge values (continues linear trends exactly)."""
    for axis in (0, 1):
        n = grid.shape[axis]
        k = min(width, n - 1)
        if k <= 0:
            grid = np.concatenate([np.take(grid, [0] * width, axis=axis), grid], axis=axis)
            grid = np.concatenate([grid, np.take(grid, [-1] * width, axis=axis)], axis=axis)
            continue
        first = np.take(grid, [0], axis=axis)
        last = np.take(grid, [n - 1], axis=axis)
        before = 2 * first - np.take(grid, np.arange(k, 0, -1), axis=axis)
        after = 2 * last - np.take(grid, np.arange(n - 2, n - 2 - k, -1), axis=axis)
        if k < width:  # tiny grids: repeat the outermost reflected value
            before = np.concatenate([np.take(before, [0] * (width - k), axis=axis), before], axis)
            after = np.concatenate([after, np.take(after, [-1] * (width - k), axis=axis)], axis)
        grid = np.concatenate([before, grid, after], axis=axis)
    return grid


def _linear_weights(coords: np.ndarray, centres: np.ndarray):
    """Indices and weights of linear interpolation/extrapolation between tile centres."""
    if centres.size == 1:
        zero = np.zeros(coords.size, dtype=np.int64)
        return zero, zero, np.zeros(coords.size)
    i0 = np.clip(np.searchsorted(centres, coords) - 1, 0, centres.size - 2)
    t = (coords - centres[i0]) / (centres[i0 + 1] - centres[i0])
    return i0, i0 + 1, t


def background_residual_estimates(image: ArrayLike, *, scale: int = 256) -> tuple[float, float]:
    """``M*`` and ``N*``: robust statistics of the pixels below a large-scale background.

    Parameters
    ----------
    image : array_like
        2-D image (H, W) of one channel; NaN is ignored.
    scale : int, optional
        Dimensional scale (px) of the background model: one of 32, 64, 128, 192,
        256 (default, as PixInsight), 384, 512, 768, 1024.

    Returns
    -------
    (m_star, n_star) : tuple of float
        ``M* = median(R)`` and ``N* = 2.48308 * MAD(R)`` of the residuals
        ``R = B - v`` of the pixels ``v`` below the background model ``B``; NaN when
        there are none. For a flat Gaussian background of deviation sigma,
        ``M* ~ 0.6745 sigma`` and ``N* ~ sigma``.

    Raises
    ------
    ValueError
        On a non-2-D image or an unsupported ``scale``.

    Notes
    -----
    PCL ``PSFSignalEstimator::LocalBackgroundResidual`` builds the background ``B``
    as the residual layer of a decimated multiscale median transform at ``scale``
    px, keeps the pixels below it, and takes ``M* = median(B - v)`` (the "M* robust
    mean background estimate" that divides PSFSW) and ``N* = 2.03636 Sn(B - v)``.
    Differences here, for speed: ``B`` is the median of tiles of ~``scale/8`` px,
    median-filtered over 7 x 7 tiles (the tile grid padded by point reflection so
    that trends continue to the borders) and interpolated bilinearly between tile
    centres, extrapolating linearly at the borders: a SExtractor-like background of
    the same ~``scale`` extent that reproduces linear gradients exactly. ``N*``
    uses PCL's MAD variant (``NStar_MAD``, ``2.48308 MAD``). PCL's name
    notwithstanding, ``M*`` measures how deep the below-background pixels go (a
    dispersion, ~0.67 sigma for pure noise), which is what makes PSFSW
    scale-invariant. Images above 4 Mpx are evaluated on every k-th row (k odd)
    against the full-resolution model.

    References
    ----------
    .. [1] PixInsight Class Library, src/pcl/PSFSignalEstimator.cpp and
       include/pcl/PSFSignalEstimator.h (PCL 2.6.4), Pleiades Astrophoto.
    .. [2] Bertin, E. & Arnouts, S. (1996), "SExtractor: Software for source
       extraction", A&AS 117, 393-404 (tile-median background).
    """
    array = float_array(image, "image")
    require_ndim(array, "image", (2,))
    if scale not in _BACKGROUND_SCALES:
        raise ValueError(f"scale={scale!r} is not supported; use one of {_BACKGROUND_SCALES}")
    block = scale // 8
    work = array.astype(np.float32, copy=False)
    work = np.where(np.isfinite(work), work, np.float32(np.nan))
    h, w = work.shape
    row_edges, col_edges = _tile_edges(h, block), _tile_edges(w, block)
    grid = _tile_medians(work, row_edges, col_edges)
    if np.all(np.isnan(grid)):
        return math.nan, math.nan
    grid = np.where(np.isnan(grid), float(np.nanmedian(grid)), grid)
    half = _BACKGROUND_FILTER // 2
    grid = ndimage.median_filter(_odd_pad(grid, half), size=_BACKGROUND_FILTER)
    grid = grid[half:-half, half:-half]
    stride = 1
    if work.size > SUBSAMPLE_TARGET:
        stride = math.ceil(work.size / SUBSAMPLE_TARGET)
        stride += 1 - stride % 2
    rows = np.arange(0, h, stride)
    row_centres = (row_edges[:-1] + row_edges[1:] - 1) / 2.0
    col_centres = (col_edges[:-1] + col_edges[1:] - 1) / 2.0
    y0, y1, ty = _linear_weights(rows.astype(np.float64), row_centres)
    along = grid[y0] * (1 - ty)[:, None] + grid[y1] * ty[:, None]
    x0, x1, tx = _linear_weights(np.arange(w, dtype=np.float64), col_centres)
    model = (along[:, x0] * (1 - tx)[None, :] + along[:, x1] * tx[None, :]).astype(np.float32)
    values = work[rows]
    with np.errstate(invalid="ignore"):
        below = values < model
    residual = (model - values)[below]
    if residual.size == 0:
        return math.nan, math.nan
    m_star = float(bn.median(residual))
    n_star = NSTAR_MAD_FACTOR * float(bn.median(np.abs(residual - m_star)))
    return m_star, n_star


def average_deviation(image: ArrayLike) -> float:
    """Mean absolute deviation from the median of the finite pixels (PixInsight ``avgDev``).

    Images above 4 Mpx use the deterministic strided subsample of
    :func:`pipeline.kernels.stats.subsample`. Returns NaN without finite pixels.
    """
    samples = subsample(image)
    if samples.size == 0:
        return math.nan
    samples = samples.astype(np.float64)
    return float(np.mean(np.abs(samples - np.median(samples))))


def snr_weight(image: ArrayLike, *, noise: float) -> float:
    """SubframeSelector / WBPP "SNR Weight": ``(average deviation / noise) ** 2``.

    Parameters
    ----------
    image : array_like
        The sub (one channel); NaN is ignored.
    noise : float
        Its noise standard deviation (MRS noise, :func:`pipeline.kernels.noise.mrs_noise`).

    Returns
    -------
    float
        ``(avgDev / sigma) ** 2`` with ``avgDev`` the mean absolute deviation from
        the median (:func:`average_deviation`). Invariant to a common scaling.

    Raises
    ------
    ValueError
        If ``noise`` is not a positive finite number.

    Notes
    -----
    WBPP 1.3 computes each light's SNR descriptor as
    ``Math.pow(image.avgDev(), 2) / Math.pow(noise, 2)`` with the MRS noise
    (WeightedBatchPreprocessing-engine.js, ``ImageDescriptor``). SubframeSelector's
    *SNRWeight* measurement is understood to be the same ratio (mean deviation over
    noise, squared), but its source could not be consulted for this
    implementation.
    The dispersion stands for the signal: it grows with everything in the frame
    that departs from the median (nebula, stars, but also gradients), so it is a
    coarse proxy; prefer :func:`psf_signal_weight`.

    References
    ----------
    .. [1] Sartori, R. & Rubechi, T., Weighted Batch Preprocessing script 1.3
       (PixInsight, 2018-2019), WeightedBatchPreprocessing-engine.js.
    """
    sigma = _positive_scalar(noise, "noise", "pass the sub's noise sigma (e.g. mrs_noise)")
    deviation = average_deviation(image)
    return (deviation / sigma) ** 2


def noise_weight(noise: ArrayLike, *, scale: ArrayLike = 1.0):
    """Inverse-variance weight ``1 / (scale * noise) ** 2``.

    Parameters
    ----------
    noise : float or array_like
        Noise standard deviation of each sub (positive).
    scale : float or array_like, optional
        Multiplicative normalisation factor that brings each sub to the reference's
        intensity scale (default 1, i.e. the subs are already normalised); the noise
        of the normalised sub is ``scale * noise``.

    Returns
    -------
    float or ndarray
        The weights (same shape as the broadcast inputs).

    Raises
    ------
    ValueError
        If any noise or scale is not positive and finite.

    Notes
    -----
    The minimum-variance weights of an average of unbiased estimates with variances
    ``sigma_i**2`` are ``1 / sigma_i**2``. PixInsight's classic ImageIntegration
    "noise evaluation" weighting has this form with the noise measured after
    normalisation (scale factor times MRS noise); the exact expression there was
    inferred by users from its console output and is not documented.

    References
    ----------
    .. [1] Bevington, P. R. & Robinson, D. K. (2003), *Data Reduction and Error
       Analysis for the Physical Sciences*, 3rd ed., McGraw-Hill, sec. 4.1.
    """
    sigma = np.asarray(noise, dtype=np.float64) * np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise ValueError(
            f"noise * scale = {sigma!r} has non-positive or non-finite values; "
            f"pass positive noise sigmas and scale factors"
        )
    weight = 1.0 / (sigma * sigma)
    return float(weight) if weight.ndim == 0 else weight


def star_count_weight(counts: ArrayLike) -> np.ndarray:
    """Relative star-count weight ``n_i / max(n)`` of a set of subs.

    Parameters
    ----------
    counts : array_like
        Number of detected (or well-fitted) stars per sub, >= 0.

    Returns
    -------
    ndarray
        float64 weights in [0, 1]; all zero when no sub has stars.

    Raises
    ------
    ValueError
        On negative or non-finite counts.

    Notes
    -----
    The number of stars above a fixed detection threshold drops with transparency,
    sky brightness and seeing, so it is a simple, unit-free quality proxy. This
    normalisation is ours; WBPP instead uses the min-max scaled count
    ``(n - n_min) / (n_max - n_min)`` as its "Stars" term (see the ``stars`` argument
    of :func:`wbpp_formula_weight`).
    """
    n = np.asarray(counts, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(n) & (n >= 0)):
        raise ValueError(f"counts={counts!r} must be finite and non-negative star counts")
    top = float(n.max()) if n.size else 0.0
    return n / top if top > 0 else np.zeros_like(n)


def _minmax_term(values: np.ndarray, *, higher_is_better: bool) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if high == low:
        return np.zeros_like(values)
    scaled = (values - low) / (high - low)
    return scaled if higher_is_better else 1.0 - scaled


def wbpp_formula_weight(
    fwhm: ArrayLike,
    eccentricity: ArrayLike,
    snr: ArrayLike,
    *,
    fwhm_weight: float = WBPP_DEFAULT_FWHM_WEIGHT,
    eccentricity_weight: float = WBPP_DEFAULT_ECCENTRICITY_WEIGHT,
    snr_weight: float = WBPP_DEFAULT_SNR_WEIGHT,
    pedestal: float = WBPP_DEFAULT_PEDESTAL,
    stars: ArrayLike | None = None,
    stars_weight: float = 0.0,
    psf_signal: ArrayLike | None = None,
    psf_signal_weight: float = 0.0,
    psf_snr: ArrayLike | None = None,
    psf_snr_weight: float = 0.0,
    normalize: bool = False,
) -> np.ndarray:
    """WBPP's subframe weighting formula over a set of subs.

    Parameters
    ----------
    fwhm, eccentricity, snr : array_like
        Per-sub descriptors, 1-D of equal length ``n``: median star FWHM, median
        eccentricity, and SNR weight (:func:`snr_weight`).
    fwhm_weight, eccentricity_weight, snr_weight : float, optional
        Coefficients of the three terms; defaults 5, 10, 20 (WBPP's default preset).
    pedestal : float, optional
        Constant added to every weight (default 65).
    stars, psf_signal, psf_snr : array_like or None, optional
        Optional further descriptors of later WBPP versions (star count, PSF Signal
        Weight, PSF SNR), used only with a nonzero coefficient.
    stars_weight, psf_signal_weight, psf_snr_weight : float, optional
        Their coefficients (default 0).
    normalize : bool, optional
        Divide by the largest weight so the best sub gets 1 (later WBPP versions);
        default False returns the raw score, as WBPP 1.3 writes it.

    Returns
    -------
    ndarray
        float64 weights, one per sub.

    Raises
    ------
    ValueError
        On mismatched lengths, non-finite descriptors or negative coefficients.

    Notes
    -----
    ``w = pedestal + a fwhm_weight + b eccentricity_weight + c snr_weight`` with
    ``a = 1 - (FWHM - FWHM_min) / (FWHM_max - FWHM_min)``,
    ``b = 1 - (e - e_min) / (e_max - e_min)`` and
    ``c = (SNR - SNR_min) / (SNR_max - SNR_min)`` over the subs of the group; a term
    whose descriptor has no spread (max == min) is 0 (WBPP 1.3
    ``StackEngine.computeWeightForLight``). Default coefficients FWHM 5,
    eccentricity 10, SNR 20, pedestal 65 are ``DEFAULT_SUBFRAMEWEIGHTING_*`` of
    WBPP 1.3 (its "Nebula" preset; "Galaxy" is 20/15/25/40 and "Cluster"
    35/35/20/10). Later WBPP versions add ``s stars_weight`` with the min-max scaled
    star count, ``PSFSW / max(PSFSW) psf_signal_weight`` and
    ``PSFSNR / max(PSFSNR) psf_snr_weight``, and divide by the largest score
    (``normalize=True``); their default coefficients were not checked here.

    References
    ----------
    .. [1] Sartori, R. & Rubechi, T., Weighted Batch Preprocessing script 1.3
       (PixInsight, 2018-2019), WeightedBatchPreprocessing-engine.js and
       WeightedBatchPreprocessing-global.js.
    .. [2] PixInsight WBPP 2.x script source, ``computeWeightForLight`` with the
       stars / PSF Signal / PSF SNR terms (file and version not identified).
    """
    f = np.asarray(fwhm, dtype=np.float64).reshape(-1)
    e = np.asarray(eccentricity, dtype=np.float64).reshape(-1)
    s = np.asarray(snr, dtype=np.float64).reshape(-1)
    if not (f.size == e.size == s.size) or f.size == 0:
        raise ValueError(
            f"fwhm, eccentricity and snr have {f.size}, {e.size} and {s.size} values; "
            f"pass one of each per sub (at least one sub)"
        )
    coefficients = {
        "fwhm_weight": fwhm_weight,
        "eccentricity_weight": eccentricity_weight,
        "snr_weight": snr_weight,
        "pedestal": pedestal,
        "stars_weight": stars_weight,
        "psf_signal_weight": psf_signal_weight,
        "psf_snr_weight": psf_snr_weight,
    }
    for name, value in coefficients.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r} must be a finite coefficient >= 0")
    for name, values in (("fwhm", f), ("eccentricity", e), ("snr", s)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} has non-finite values; measure or drop those subs")
    weight = (
        pedestal
        + fwhm_weight * _minmax_term(f, higher_is_better=False)
        + eccentricity_weight * _minmax_term(e, higher_is_better=False)
        + snr_weight * _minmax_term(s, higher_is_better=True)
    )
    extras = (
        ("stars", stars, stars_weight, "minmax"),
        ("psf_signal", psf_signal, psf_signal_weight, "max"),
        ("psf_snr", psf_snr, psf_snr_weight, "max"),
    )
    for name, values, coefficient, kind in extras:
        if coefficient == 0:
            continue
        if values is None:
            raise ValueError(f"{name}_weight={coefficient} needs {name} values, one per sub")
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size != f.size or not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must hold {f.size} finite values, one per sub")
        if kind == "minmax":
            weight = weight + coefficient * _minmax_term(v, higher_is_better=True)
        else:
            top = float(v.max())
            weight = weight + coefficient * (v / top if top != 0 else np.zeros_like(v))
    if normalize:
        top = float(weight.max())
        weight = weight / top if top > 0 else weight
    return weight
