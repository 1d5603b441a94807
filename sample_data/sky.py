"""Noise-free models of the sky and the optics for the synthetic night.

Every function here is deterministic: randomness is drawn by the caller
(:mod:`sample_data.night`) and passed in as parameters, so the truth object can
re-render exactly what was used to make a frame.

Conventions
-----------
``x`` is the column and ``y`` the row; pixel centres lie at integer
coordinates, so pixel ``image[y, x]`` covers ``[x - 0.5, x + 0.5)``.
Affine transforms are 3x3 homogeneous matrices acting on column vectors
``(x, y, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MOFFAT_BETA",
    "DustDonut",
    "NebulaBlob",
    "apply_affine",
    "dither_matrix",
    "dust_transmission",
    "flat_response",
    "fwhm_to_alpha",
    "moffat_peak",
    "pixel_grid",
    "psf_axes",
    "render_nebula",
    "render_stars",
    "render_trail",
    "sky_background",
    "trail_endpoints",
    "vignetting",
]

MOFFAT_BETA = 3.5

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class NebulaBlob:
    """One elongated Gaussian component of the nebula, in sky coordinates.

    Attributes
    ----------
    x, y : float
        Centre in sky pixels.
    sigma_major, sigma_minor : float
        Gaussian widths along and across the blob (sky pixels).
    angle : float
        Position angle of the major axis, radians from the +x axis.
    amplitude : float
        Peak value relative to the filter's nebula rate.
    """

    x: float
    y: float
    sigma_major: float
    sigma_minor: float
    angle: float
    amplitude: float


@dataclass(frozen=True)
class DustDonut:
    """Shadow of a dust mote: a soft-edged disc, darkest at its rim.

    Attributes
    ----------
    x, y : float
        Centre on the sensor (pixels).
    radius : float
        Outer radius (pixels).
    depth : float
        Fractional light loss at the rim (0.05 = 5 % darker).
    """

    x: float
    y: float
    radius: float
    depth: float


def pixel_grid(shape: tuple[int, int]) -> tuple[FloatArray, FloatArray]:
    """Return broadcastable ``(x, y)`` pixel-centre coordinates for ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(height, width)``.

    Returns
    -------
    x, y : ndarray
        ``x`` has shape ``(1, width)``, ``y`` has shape ``(height, 1)``.
    """
    height, width = shape
    x = np.arange(width, dtype=np.float64)[None, :]
    y = np.arange(height, dtype=np.float64)[:, None]
    return x, y


def dither_matrix(
    centre: tuple[float, float], angle: float, shift: tuple[float, float]
) -> FloatArray:
    """Build a sky -> sensor transform: rotate about ``centre``, then shift.

    Parameters
    ----------
    centre : tuple of float
        Rotation centre ``(cx, cy)``, the same point in sky and sensor pixels.
    angle : float
        Rotation in radians (``x' = cos*x - sin*y``, ``y' = sin*x + cos*y``).
    shift : tuple of float
        Translation ``(dx, dy)`` applied after the rotation (sensor pixels).

    Returns
    -------
    ndarray
        3x3 matrix ``T`` with ``sensor = T @ (x_sky, y_sky, 1)``.
    """
    cx, cy = centre
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + shift[0]], [0.0, 1.0, cy + shift[1]], [0.0, 0.0, 1.0]])
    return back @ rot @ to_origin


def apply_affine(
    matrix: FloatArray, x: NDArray[np.floating], y: NDArray[np.floating]
) -> tuple[FloatArray, FloatArray]:
    """Apply a 3x3 affine matrix to coordinate arrays (broadcasting).

    Parameters
    ----------
    matrix : ndarray
        3x3 homogeneous affine matrix.
    x, y : ndarray
        Input coordinates.

    Returns
    -------
    tuple of ndarray
        Transformed ``(x, y)``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


def fwhm_to_alpha(fwhm: float, beta: float = MOFFAT_BETA) -> float:
    """Convert a Moffat FWHM to its core width ``alpha``.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum (pixels).
    beta : float
        Moffat power index.

    Returns
    -------
    float
        ``alpha`` such that ``I(r) ~ (1 + r**2 / alpha**2) ** -beta``.
    """
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_peak(flux: FloatArray | float, fwhm: float, beta: float = MOFFAT_BETA) -> FloatArray:
    """Central surface brightness of a Moffat star of total ``flux``.

    Parameters
    ----------
    flux : float or ndarray
        Total flux.
    fwhm : float
        Full width at half maximum (pixels).
    beta : float
        Moffat power index.

    Returns
    -------
    ndarray
        Peak value per pixel area (an upper bound for the brightest pixel).
    """
    alpha = fwhm_to_alpha(fwhm, beta)
    return np.asarray(flux, dtype=np.float64) * (beta - 1.0) / (math.pi * alpha**2)


def psf_axes(fwhm: float, eccentricity: float = 0.0) -> tuple[float, float]:
    """Major- and minor-axis FWHM of an elliptical PSF of (geometric-mean) ``fwhm``.

    Parameters
    ----------
    fwhm : float
        Geometric mean ``sqrt(fwhm_major * fwhm_minor)`` of the two axis FWHMs (pixels);
        for a round PSF simply its FWHM.
    eccentricity : float
        ``e = sqrt(1 - (fwhm_minor / fwhm_major) ** 2)``, in ``[0, 1)``.

    Returns
    -------
    tuple of float
        ``(fwhm_major, fwhm_minor)``; both equal ``fwhm`` when ``eccentricity`` is 0.

    Raises
    ------
    ValueError
        If ``eccentricity`` is outside ``[0, 1)``.
    """
    if not 0.0 <= eccentricity < 1.0:
        raise ValueError(f"eccentricity must be in [0, 1), got {eccentricity!r}")
    if eccentricity == 0.0:
        return fwhm, fwhm
    root_ratio = (1.0 - eccentricity**2) ** 0.25  # sqrt(minor / major)
    return fwhm / root_ratio, fwhm * root_ratio


def _stamp_radius(fwhm: float) -> int:
    """Half-size of the square stamp a star is rendered on (pixels)."""
    return int(math.ceil(4.0 * fwhm)) + 2


_CHUNK_SAMPLES = 1 << 22
"""Sub-pixel samples evaluated at once (bounds the memory of :func:`render_stars`)."""


@dataclass(frozen=True)
class _Psf:
    """Shape of the Moffat PSF being rendered: axis widths, angle and sampling."""

    alpha2_major: float
    alpha2_minor: float
    theta: float
    beta: float
    oversample: int
    legacy: bool  # round, fixed stamps: float64 and the original formula (same bits)


def render_stars(
    shape: tuple[int, int],
    x: FloatArray,
    y: FloatArray,
    flux: FloatArray,
    fwhm: float,
    beta: float = MOFFAT_BETA,
    *,
    eccentricity: float = 0.0,
    theta: float = 0.0,
    wing_limit: float | None = None,
) -> FloatArray:
    """Render Moffat stars, pixel-integrated, onto an empty image.

    Each star is evaluated on a small stamp (radius ``4 * fwhm_major + 2``) with 3x3
    sub-pixel sampling when the PSF is sharp (minor-axis FWHM under 5 px), then
    accumulated in star order (in chunks, so the memory stays bounded however many
    stars there are). Flux beyond the stamp (< 0.2 % for beta = 3.5) is dropped.
    Only stars whose stamp touches the frame are evaluated.

    Parameters
    ----------
    shape : tuple of int
        Output shape ``(height, width)``.
    x, y : ndarray
        Star centres on the sensor (pixels).
    flux : ndarray
        Total flux of each star (any unit; the image is in the same unit per pixel).
    fwhm : float
        PSF full width at half maximum (pixels); for an elliptical PSF the geometric
        mean ``sqrt(fwhm_major * fwhm_minor)`` of its axis FWHMs (see :func:`psf_axes`).
    beta : float
        Moffat power index.
    eccentricity : float
        ``sqrt(1 - (fwhm_minor / fwhm_major) ** 2)`` in ``[0, 1)``; 0 (default) is round.
    theta : float
        Position angle of the major axis, radians from +x towards +y (ignored when round).
    wing_limit : float, optional
        When given, a star whose profile at the stamp edge would still exceed
        ``wing_limit`` (image units) gets a larger stamp, out to where it falls below
        it, so that very bright (saturated) stars keep their wings instead of a square
        cut-off. None (default): every stamp has the fixed radius.

    Returns
    -------
    ndarray
        Float64 image of shape ``shape``.

    Raises
    ------
    ValueError
        If ``eccentricity`` is outside ``[0, 1)`` or ``wing_limit`` is not positive.

    Notes
    -----
    The elliptical Moffat is ``I(u, v) ~ (1 + u**2 / a**2 + v**2 / b**2) ** -beta`` with
    ``u`` along ``theta``; ``a`` and ``b`` are the core widths of the major and minor
    FWHMs. The round default keeps the original float64 evaluation (the bits of older
    nights); elliptical or ``wing_limit`` stars are evaluated in float32 (relative error
    ~1e-7, far below any photon noise), which is several times faster.
    """
    if wing_limit is not None and not wing_limit > 0.0:
        raise ValueError(f"wing_limit must be positive (image units), got {wing_limit!r}")
    height, width = shape
    fwhm_major, fwhm_minor = psf_axes(fwhm, eccentricity)
    psf = _Psf(
        alpha2_major=fwhm_to_alpha(fwhm_major, beta) ** 2,
        alpha2_minor=fwhm_to_alpha(fwhm_minor, beta) ** 2,
        theta=float(theta),
        beta=beta,
        oversample=3 if fwhm_minor < 5.0 else 1,
        legacy=eccentricity == 0.0 and wing_limit is None,
    )
    x, y, flux = (np.asarray(a, dtype=np.float64) for a in (x, y, flux))
    base = _stamp_radius(fwhm_major)
    if wing_limit is None:
        radii = np.full(x.shape, base, dtype=np.int64)
    else:
        radii = _wing_radii(flux, psf, base, wing_limit)
    keep = ((x > -radii) & (x < width - 1 + radii) & (y > -radii) & (y < height - 1 + radii)) & (
        flux > 0
    )
    image = np.zeros(height * width)
    for radius in np.unique(radii[keep]):
        group = keep & (radii == radius)
        _accumulate_stamps(image, shape, x[group], y[group], flux[group], int(radius), psf)
    return image.reshape(shape)


def _wing_radii(flux: FloatArray, psf: _Psf, base: int, wing_limit: float) -> NDArray[np.int64]:
    """Stamp radius per star: ``base``, or out to where the major axis drops below the limit.

    Radii above ``base`` are rounded up to a multiple of 4 px (fewer stamp sizes).
    """
    peak = (
        np.maximum(flux, 0.0)
        * (psf.beta - 1.0)
        / (math.pi * math.sqrt(psf.alpha2_major * psf.alpha2_minor))
    )
    ratio = np.maximum(peak / wing_limit, 1.0) ** (1.0 / psf.beta) - 1.0
    reach = np.sqrt(psf.alpha2_major * ratio)
    radii = np.maximum(base, 4 * np.ceil((reach + 1.0) / 4.0)).astype(np.int64)
    return radii


def _accumulate_stamps(
    image: FloatArray,
    shape: tuple[int, int],
    x: FloatArray,
    y: FloatArray,
    flux: FloatArray,
    radius: int,
    psf: _Psf,
) -> None:
    """Add the stamps of stars sharing one stamp ``radius`` to the flat ``image``.

    ``np.add.at`` adds in star order, exactly as one ``bincount`` over all stars would,
    so chunking changes no bit.
    """
    height, width = shape
    offsets = np.arange(-radius, radius + 1)
    chunk = max(1, _CHUNK_SAMPLES // (offsets.size * psf.oversample) ** 2)
    for start in range(0, x.size, chunk):
        cx, cy, cf = (a[start : start + chunk] for a in (x, y, flux))
        ix, iy = np.rint(cx).astype(np.int64), np.rint(cy).astype(np.int64)
        stamps = _moffat_stamps(ix - cx, iy - cy, offsets, psf) * cf[:, None, None]
        rows = iy[:, None, None] + offsets[None, :, None]
        cols = ix[:, None, None] + offsets[None, None, :]
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        np.add.at(image, (rows * width + cols)[inside], stamps[inside])


def _moffat_stamps(
    frac_x: FloatArray, frac_y: FloatArray, offsets: NDArray[np.int64], psf: _Psf
) -> FloatArray:
    """Unit-flux Moffat stamps ``(n, size, size)`` averaged over sub-pixels.

    ``frac_x``/``frac_y`` are the stamp-centre pixel minus the star position.
    """
    oversample, beta = psf.oversample, psf.beta
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    grid = (offsets[:, None] + sub[None, :]).ravel()
    dx = frac_x[:, None] + grid[None, :]
    dy = frac_y[:, None] + grid[None, :]
    n, size = frac_x.size, offsets.size
    if psf.legacy:
        alpha2 = psf.alpha2_major
        r2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
        profile = (1.0 + r2 / alpha2) ** (-beta) * ((beta - 1.0) / (math.pi * alpha2))
        return profile.reshape(n, size, oversample, size, oversample).mean(axis=(2, 4))
    # q = (u / a)**2 + (v / b)**2 with u, v along and across theta, as a quadratic form.
    c, s = math.cos(psf.theta), math.sin(psf.theta)
    inv_a, inv_b = 1.0 / psf.alpha2_major, 1.0 / psf.alpha2_minor
    qxx, qyy = c * c * inv_a + s * s * inv_b, s * s * inv_a + c * c * inv_b
    qxy = 2.0 * c * s * (inv_a - inv_b)
    dx32, dy32 = dx.astype(np.float32), dy.astype(np.float32)
    q = (dy32 * dy32 * np.float32(qyy) + np.float32(1.0))[:, :, None] + (
        dx32 * dx32 * np.float32(qxx)
    )[:, None, :]
    if qxy != 0.0:
        q += (dy32 * np.float32(qxy))[:, :, None] * dx32[:, None, :]
    profile = q ** np.float32(-beta)
    norm = (beta - 1.0) / (math.pi * math.sqrt(psf.alpha2_major * psf.alpha2_minor))
    return _bin_subpixels(profile, n, size, oversample) * np.float32(norm / oversample**2)


def _bin_subpixels(
    profile: NDArray[np.float32], n: int, size: int, oversample: int
) -> NDArray[np.float32]:
    """Sum ``oversample x oversample`` sub-pixel blocks (faster than a strided mean)."""
    blocks = profile.reshape(n, size, oversample, size, oversample)
    across = blocks[..., 0].copy()
    for k in range(1, oversample):
        across += blocks[..., k]
    total = across[:, :, 0].copy()
    for k in range(1, oversample):
        total += across[:, :, k]
    return total


def render_nebula(
    shape: tuple[int, int], sensor_to_sky: FloatArray, blobs: tuple[NebulaBlob, ...]
) -> FloatArray:
    """Evaluate the nebula (sum of rotated Gaussians) on the sensor grid.

    Parameters
    ----------
    shape : tuple of int
        Output shape ``(height, width)``.
    sensor_to_sky : ndarray
        3x3 matrix mapping sensor pixels to sky pixels.
    blobs : tuple of NebulaBlob
        Nebula components in sky coordinates.

    Returns
    -------
    ndarray
        Unitless surface brightness (peak of order 1).
    """
    x, y = pixel_grid(shape)
    out = np.zeros(shape)
    # Row bands of ~64k pixels stay in cache; every pixel gets the same operations as
    # on the whole frame, so the values are the same bits.
    band = max(1, (1 << 16) // max(1, shape[1]))
    for top in range(0, shape[0], band):
        sx, sy = apply_affine(sensor_to_sky, x, y[top : top + band])
        rows = out[top : top + band]
        for blob in blobs:
            c, s = math.cos(blob.angle), math.sin(blob.angle)
            du, dv = sx - blob.x, sy - blob.y
            along = (c * du + s * dv) / blob.sigma_major
            across = (-s * du + c * dv) / blob.sigma_minor
            rows += blob.amplitude * np.exp(-0.5 * (along**2 + across**2))
    return out


def sky_background(
    shape: tuple[int, int], level: float, gradient: float, angle: float
) -> FloatArray:
    """Linear sky gradient around the frame centre.

    Parameters
    ----------
    shape : tuple of int
        Output shape ``(height, width)``.
    level : float
        Sky level at the frame centre.
    gradient : float
        Fractional change from the centre to a corner along ``angle``
        (the full frame spans about ``2 * gradient``).
    angle : float
        Direction of increasing sky, radians from the +x axis.

    Returns
    -------
    ndarray
        Sky image in the unit of ``level``.
    """
    height, width = shape
    x, y = pixel_grid(shape)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    half_diagonal = math.hypot(cx, cy)
    ramp = ((x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)) / half_diagonal
    return level * (1.0 + gradient * ramp)


def trail_endpoints(
    shape: tuple[int, int], point: tuple[float, float], angle: float
) -> tuple[float, float, float, float]:
    """Where a straight line through ``point`` meets the pixel-centre box.

    Parameters
    ----------
    shape : tuple of int
        Frame shape ``(height, width)``.
    point : tuple of float
        A point inside the frame.
    angle : float
        Direction of the line, radians from the +x axis.

    Returns
    -------
    tuple of float
        ``(x0, y0, x1, y1)`` on the border ``[0, width-1] x [0, height-1]``.
    """
    height, width = shape
    ux, uy = math.cos(angle), math.sin(angle)
    lo, hi = -math.inf, math.inf
    for p, u, top in ((point[0], ux, width - 1.0), (point[1], uy, height - 1.0)):
        if abs(u) < 1e-12:
            continue
        t_a, t_b = (0.0 - p) / u, (top - p) / u
        lo, hi = max(lo, min(t_a, t_b)), min(hi, max(t_a, t_b))
    return (point[0] + lo * ux, point[1] + lo * uy, point[0] + hi * ux, point[1] + hi * uy)


def render_trail(
    shape: tuple[int, int],
    endpoints: tuple[float, float, float, float],
    amplitude: float,
    sigma: float,
) -> FloatArray:
    """Render an infinitely long straight trail with a Gaussian cross-section.

    Parameters
    ----------
    shape : tuple of int
        Output shape ``(height, width)``.
    endpoints : tuple of float
        Two points ``(x0, y0, x1, y1)`` on the line.
    amplitude : float
        Peak value on the line's axis.
    sigma : float
        Gaussian sigma across the trail (pixels).

    Returns
    -------
    ndarray
        Trail image in the unit of ``amplitude``.
    """
    x0, y0, x1, y1 = endpoints
    length = math.hypot(x1 - x0, y1 - y0)
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length
    x, y = pixel_grid(shape)
    distance = (x - x0) * nx + (y - y0) * ny
    return amplitude * np.exp(-0.5 * (distance / sigma) ** 2)


def vignetting(
    shape: tuple[int, int], centre: tuple[float, float], corner_loss: float = 0.25
) -> FloatArray:
    """Smooth radial illumination falloff (``cos**4``-like), 1 at ``centre``.

    Parameters
    ----------
    shape : tuple of int
        Output shape ``(height, width)``.
    centre : tuple of float
        Optical axis on the sensor (pixels).
    corner_loss : float
        Fractional loss at the mean distance of the four corners.

    Returns
    -------
    ndarray
        Relative illumination.
    """
    height, width = shape
    x, y = pixel_grid(shape)
    corners = [(0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)]
    r_corner = float(np.mean([math.hypot(cx - centre[0], cy - centre[1]) for cx, cy in corners]))
    k = ((1.0 - corner_loss) ** -0.5 - 1.0) / r_corner**2
    r2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2
    return (1.0 + k * r2) ** -2.0


def dust_transmission(shape: tuple[int, int], donuts: tuple[DustDonut, ...]) -> FloatArray:
    """Multiplicative shadow of out-of-focus dust motes ("donuts").

    Parameters
    ----------
    shape : tuple of int
        Output shape ``(height, width)``.
    donuts : tuple of DustDonut
        The motes.

    Returns
    -------
    ndarray
        Transmission, 1 away from the motes.
    """
    x, y = pixel_grid(shape)
    out = np.ones(shape)
    for d in donuts:
        r = np.hypot(x - d.x, y - d.y)
        edge = 0.5 * (1.0 - np.tanh((r - d.radius) / 1.5))
        shape_in = 0.55 + 0.45 * np.minimum(r / d.radius, 1.0) ** 2
        out *= 1.0 - d.depth * edge * shape_in
    return out


def flat_response(vignette: FloatArray, dust: FloatArray, prnu: FloatArray) -> NDArray[np.float32]:
    """Combine the multiplicative terms and normalise to unit mean.

    Parameters
    ----------
    vignette, dust, prnu : ndarray
        Vignetting, dust transmission and pixel response (each ~1).

    Returns
    -------
    ndarray
        Float32 flat response with mean 1.
    """
    response = vignette * dust * prnu
    return (response / response.mean()).astype(np.float32)
