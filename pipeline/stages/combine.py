"""Colour combination stage: masters of different filters into one linear RGB image.

The masters come from different reference subs, so they are first registered onto one grid
(the luminance master's when there is one, else the green channel's). Then, all on linear
data: background extraction per channel, LinearFit of each colour channel to a reference
channel, channel combination, background neutralization and white balance, and the linked and
unlinked screen stretches (STF) of the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import sep
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from pipeline.config.models import (
    BackgroundExtractionConfig,
    ColourCalibrationConfig,
    CombineConfig,
    FactorsWhiteReference,
    LinearFitConfig,
    MeasurementConfig,
    PreviewConfig,
    RegionWhiteReference,
    RegistrationConfig,
    StarsWhiteReference,
)
from pipeline.errors import RegistrationError
from pipeline.kernels import background as kbackground
from pipeline.kernels import colour as kcolour
from pipeline.kernels.linearfit import LinearFitResult, apply_linear_fit, linear_fit
from pipeline.kernels.stretch import StretchParameters, auto_stretch_parameters, normalize_to_unit
from pipeline.stages.measure import detect_stars
from pipeline.stages.register import solve_transform, warp_to_reference

__all__ = [
    "COLOUR_ROLES",
    "ChannelMaster",
    "ColourCalibration",
    "CombinedImage",
    "ExtractedBackground",
    "Stretches",
    "combine_channels",
    "palette_filters",
]

VERSION = "1"

COLOUR_ROLES = ("red", "green", "blue")
_STAR_MASK_SIGMA = 3.0
_STAR_MASK_GROWTH = 3
_PHOTOMETRY_APERTURE_FWHM = 2.0
_ANNULUS_INNER_PX, _ANNULUS_OUTER_PX = 3.0, 8.0
_ON_SKY_SIGMA = 1.0


@dataclass(frozen=True)
class ChannelMaster:
    """One filter's linear master, as read from its FITS file.

    Attributes
    ----------
    filter
        The FILTER of the master (e.g. ``"R"``, ``"Ha"``).
    image
        (H, W) linear data; NaN is no data.
    source
        Where it came from (file name), for the records.
    grid
        Masters with the same non-None grid share one pixel grid already (the planes of a
        colour master) and are never resampled onto each other.
    """

    filter: str
    image: np.ndarray
    source: str
    grid: str | None = None


@dataclass(frozen=True)
class ExtractedBackground:
    """The background model of one channel and the samples it went through."""

    model: NDArray[np.float32]
    samples: kbackground.BackgroundSamples
    level: float


@dataclass(frozen=True)
class ColourCalibration:
    """What background neutralization and white balance did.

    ``out_c = level_c + factor_c (x_c - background_c)`` for each channel ``c``.
    """

    backgrounds: tuple[float, ...]
    levels: tuple[float, ...]
    factors: tuple[float, ...]
    white_reference: str
    stars: NDArray[np.float64] = field(repr=False)
    """(n, 5) x, y, red, green, blue flux of the stars used for the white balance."""


@dataclass(frozen=True)
class Stretches:
    """Linked and unlinked STF of the combined image, on data scaled by ``(x - lo)/(hi - lo)``."""

    linked: StretchParameters
    unlinked: StretchParameters
    lo: float
    hi: float


@dataclass(frozen=True)
class CombinedImage:
    """The colour image and everything that was done to make it.

    Attributes
    ----------
    rgb
        (3, H, W) float32 linear image on the reference grid; NaN where any channel lacks data.
    luminance
        (H, W) registered (and background-extracted) luminance, or None.
    reference
        Filter whose master defines the grid.
    registrations
        Role -> (matrix 3x3 onto the reference grid, matched stars, rms px).
    backgrounds
        Role -> extracted background (empty when extraction is off).
    linear_fits
        Role -> fit onto the reference channel (empty when LinearFit is off); the reference
        channel has intercept 0, slope 1.
    linear_fit_reference
        The LinearFit reference role, or None.
    background_levels
        Step name -> (3,) background of red, green, blue after that step.
    colour
        The colour calibration, or None when off.
    stretches
        Linked and unlinked STF parameters of ``rgb``.
    """

    rgb: NDArray[np.float32]
    luminance: NDArray[np.float32] | None
    reference: str
    registrations: dict[str, tuple[np.ndarray, int, float]]
    backgrounds: dict[str, ExtractedBackground]
    linear_fits: dict[str, LinearFitResult]
    linear_fit_reference: str | None
    background_levels: dict[str, tuple[float, float, float]]
    colour: ColourCalibration | None
    stretches: Stretches


def palette_filters(config: CombineConfig) -> dict[str, str]:
    """The filter of each channel role (red, green, blue, and luminance when set)."""
    palette = config.palette
    if palette.method == "rgb":
        roles = {"red": palette.red, "green": palette.green, "blue": palette.blue}
    elif palette.method == "sho":
        roles = {"red": palette.sii, "green": palette.ha, "blue": palette.oiii}
    else:
        roles = {"red": palette.ha, "green": palette.oiii, "blue": palette.oiii}
    if config.luminance:
        roles["luminance"] = config.luminance
    return roles


def combine_channels(
    masters: Mapping[str, ChannelMaster],
    config: CombineConfig,
    *,
    registration: RegistrationConfig,
    measurement: MeasurementConfig,
    preview: PreviewConfig,
) -> CombinedImage:
    """Register, extract backgrounds, LinearFit, combine and colour-calibrate masters.

    Parameters
    ----------
    masters
        Role (``red``, ``green``, ``blue``, optionally ``luminance``) -> master. Roles may share
        one master (HOO puts OIII in green and blue).
    config
        The combination settings.
    registration, measurement
        Star detection and transform settings used to register the masters.
    preview
        STF settings (shadows clipping, target background).

    Returns
    -------
    CombinedImage
        The RGB image, the luminance and the record of each step.

    Raises
    ------
    ValueError
        If a colour role is missing.
    RegistrationError
        If a master cannot be registered onto the reference.
    """
    missing = [role for role in COLOUR_ROLES if role not in masters]
    if missing:
        raise ValueError(f"no master for the {', '.join(missing)} channel; give one per channel")
    reference = masters.get("luminance", masters["green"])
    aligned, registrations = _register(masters, reference, registration, measurement)
    planes = _common_coverage(aligned)
    star_mask = _star_mask(planes)
    backgrounds: dict[str, ExtractedBackground] = {}
    levels: dict[str, tuple[float, float, float]] = {}
    levels["registered"] = _levels(planes, star_mask)
    if config.background is not None:
        planes, backgrounds = _extract_backgrounds(planes, star_mask, config.background)
        levels["background_extracted"] = _levels(planes, star_mask)
    fits: dict[str, LinearFitResult] = {}
    fit_reference = None
    if config.linear_fit is not None:
        latest = list(levels.values())[-1]
        planes, fits, fit_reference = _linear_fit(planes, star_mask, config.linear_fit, latest)
        levels["linear_fit"] = _levels(planes, star_mask)
    rgb = np.stack([planes[role] for role in COLOUR_ROLES]).astype(np.float32, copy=False)
    colour = None
    if config.colour_calibration is not None:
        rgb, colour = _calibrate_colour(rgb, star_mask, config.colour_calibration, measurement)
        levels["colour_calibrated"] = _levels(dict(zip(COLOUR_ROLES, rgb, strict=True)), star_mask)
    return CombinedImage(
        rgb=rgb,
        luminance=planes.get("luminance"),
        reference=reference.filter,
        registrations=registrations,
        backgrounds=backgrounds,
        linear_fits=fits,
        linear_fit_reference=fit_reference,
        background_levels=levels,
        colour=colour,
        stretches=_stretches(rgb, preview),
    )


# --------------------------------------------------------------------------- registration
def _register(
    masters: Mapping[str, ChannelMaster],
    reference: ChannelMaster,
    registration: RegistrationConfig,
    measurement: MeasurementConfig,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, int, float]]]:
    """Each distinct master resampled onto the reference grid (the reference as it is)."""
    reference_stars = detect_stars(reference.image, measurement).stars
    done: dict[int, tuple[np.ndarray, tuple[np.ndarray, int, float]]] = {
        id(reference): (reference.image, (np.eye(3), len(reference_stars), 0.0))
    }
    for master in masters.values():
        if master.grid is not None and master.grid == reference.grid:
            done.setdefault(id(master), (master.image, (np.eye(3), len(reference_stars), 0.0)))
        if id(master) not in done:
            done[id(master)] = _registered(
                master, reference, reference_stars, registration, measurement
            )
    aligned = {role: done[id(master)][0] for role, master in masters.items()}
    solutions = {role: done[id(master)][1] for role, master in masters.items()}
    return aligned, solutions


def _registered(
    master: ChannelMaster,
    reference: ChannelMaster,
    reference_stars: np.ndarray,
    registration: RegistrationConfig,
    measurement: MeasurementConfig,
) -> tuple[np.ndarray, tuple[np.ndarray, int, float]]:
    """``master`` resampled onto the reference grid and its (matrix, matched, rms)."""
    stars = detect_stars(master.image, measurement).stars
    try:
        solution = solve_transform(stars, reference_stars, registration)
    except RegistrationError as exc:
        raise RegistrationError(
            f"{master.source}: cannot register the {master.filter} master onto the "
            f"{reference.filter} master ({reference.source}): {exc}"
        ) from exc
    image = warp_to_reference(
        master.image,
        solution.matrix,
        reference_shape=reference.image.shape,
        interpolation=registration.interpolation,
    )
    return image, (solution.matrix, solution.matched, solution.rms)


def _common_coverage(aligned: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float32 copies with NaN wherever any channel has no data (a plane given for two roles,
    as OIII for green and blue in HOO, stays one array, so later steps do it once)."""
    missing = np.zeros(next(iter(aligned.values())).shape, dtype=bool)
    for plane in aligned.values():
        missing |= ~np.isfinite(plane)
    copies: dict[int, np.ndarray] = {}
    for plane in aligned.values():
        if id(plane) not in copies:
            copies[id(plane)] = np.array(plane, dtype=np.float32)
            copies[id(plane)][missing] = np.nan
    return {role: copies[id(plane)] for role, plane in aligned.items()}


def _star_mask(planes: Mapping[str, np.ndarray]) -> NDArray[np.bool_]:
    """True on and around every object detected in any channel (sep segmentation, grown)."""
    mask = np.zeros(next(iter(planes.values())).shape, dtype=bool)
    for plane in {id(p): p for p in planes.values()}.values():
        data = np.ascontiguousarray(plane, dtype=np.float32)
        nodata = ~np.isfinite(data)
        filled = np.where(nodata, np.nanmedian(data), data).astype(np.float32)
        background = sep.Background(filled, mask=nodata, bw=64, bh=64)
        _, segments = sep.extract(
            filled - background.back(),
            _STAR_MASK_SIGMA,
            err=background.globalrms,
            mask=nodata,
            minarea=5,
            segmentation_map=True,
        )
        mask |= segments > 0
    return ndimage.binary_dilation(mask, iterations=_STAR_MASK_GROWTH)


def _levels(planes: Mapping[str, np.ndarray], star_mask: np.ndarray) -> tuple[float, ...]:
    """Median of the star-free pixels of red, green and blue."""
    free = ~star_mask
    return tuple(float(np.nanmedian(planes[role][free])) for role in COLOUR_ROLES)


# --------------------------------------------------------------------------- background
def _extract_backgrounds(
    planes: dict[str, np.ndarray],
    star_mask: np.ndarray,
    config: BackgroundExtractionConfig,
) -> tuple[dict[str, np.ndarray], dict[str, ExtractedBackground]]:
    """Fit and remove each distinct plane's background model."""
    corrected: dict[str, np.ndarray] = {}
    models: dict[str, ExtractedBackground] = {}
    done: dict[int, tuple[np.ndarray, ExtractedBackground]] = {}
    for role, plane in planes.items():
        if id(plane) not in done:
            done[id(plane)] = _extract_background(plane, star_mask, config)
        corrected[role], models[role] = done[id(plane)]
    return corrected, models


def _extract_background(
    plane: np.ndarray, star_mask: np.ndarray, config: BackgroundExtractionConfig
) -> tuple[np.ndarray, ExtractedBackground]:
    samples = kbackground.background_samples(
        plane, grid=config.grid, box=config.box or _tile(plane.shape, config.grid), mask=star_mask
    )
    model = config.model
    surface, samples = kbackground.fit_background(
        samples,
        plane.shape,
        model=model.method,
        order=getattr(model, "order", 2),
        smoothing=getattr(model, "smoothing", 1.0),
        rejection_sigma=config.rejection_sigma,
    )
    if config.correction == "divide":
        corrected = kbackground.divide_background(plane, surface)
    else:
        corrected = kbackground.subtract_background(plane, surface)
    level = float(np.nanmedian(surface))
    return np.asarray(corrected, dtype=np.float32), ExtractedBackground(surface, samples, level)


def _tile(shape: tuple[int, ...], grid: int) -> int:
    """Sample boxes as wide as the sample spacing: they tile the image, every sky pixel counts.

    Half-spacing boxes (the kernel's default) left residual gradients of up to 0.30 % of the
    sky on the R, G, B sample nights (seeds 7, 11, 23); tiles 0.03-0.10 %.
    """
    return max(5, min(round(max(shape) / grid), *shape))


# --------------------------------------------------------------------------- LinearFit
def _linear_fit(
    planes: dict[str, np.ndarray],
    star_mask: np.ndarray,
    config: LinearFitConfig,
    levels: tuple[float, ...],
) -> tuple[dict[str, np.ndarray], dict[str, LinearFitResult], str]:
    """Each colour channel fitted onto the reference channel (luminance untouched).

    ``levels`` are the current star-free backgrounds of red, green and blue (``auto`` takes
    the brightest as reference).
    """
    if config.reference == "auto":
        reference = COLOUR_ROLES[int(np.argmax(levels))]
    else:
        reference = config.reference
    target = planes[reference]
    done: dict[int, tuple[np.ndarray, LinearFitResult]] = {
        id(target): (target, LinearFitResult(0.0, 1.0, 0, 0.0))
    }
    for role in COLOUR_ROLES:
        plane = planes[role]
        if id(plane) in done:
            continue
        try:
            fit = linear_fit(
                target,
                plane,
                mask=star_mask,
                reject_low=config.reject_low,
                reject_high=config.reject_high,
            )
        except ValueError as exc:
            raise ValueError(f"LinearFit of the {role} channel onto {reference}: {exc}") from exc
        done[id(plane)] = (np.asarray(apply_linear_fit(plane, fit), dtype=np.float32), fit)
    fitted = dict(planes)
    fits: dict[str, LinearFitResult] = {}
    for role in COLOUR_ROLES:
        fitted[role], fits[role] = done[id(planes[role])]
    return fitted, fits, reference


# --------------------------------------------------------------------------- colour
def _calibrate_colour(
    rgb: np.ndarray,
    star_mask: np.ndarray,
    config: ColourCalibrationConfig,
    measurement: MeasurementConfig,
) -> tuple[np.ndarray, ColourCalibration]:
    """Background neutralization and white balance (``level + k (x - b)`` per channel)."""
    backgrounds = _sky_backgrounds(rgb, star_mask)
    if config.background_neutralization:
        levels = np.full(3, float(np.mean(backgrounds)))
    else:
        levels = backgrounds.copy()
    reference = config.white_reference
    stars = np.zeros((0, 5))
    if isinstance(reference, StarsWhiteReference):
        stars = _star_photometry(rgb, backgrounds, reference, measurement)
        balance = kcolour.stellar_white_factors(stars[:, 2:5], reference=1)
        stars = stars[balance.used]
        factors = balance.factors
    elif isinstance(reference, RegionWhiteReference):
        factors = kcolour.region_white_factors(rgb, reference.box, reference=1)
    else:
        assert isinstance(reference, FactorsWhiteReference)
        factors = np.array([reference.red, reference.green, reference.blue])
    out = kcolour.apply_colour_calibration(rgb, backgrounds, levels, factors)
    return out.astype(np.float32, copy=False), ColourCalibration(
        backgrounds=tuple(float(v) for v in backgrounds),
        levels=tuple(float(v) for v in levels),
        factors=tuple(float(v) for v in factors),
        white_reference=reference.method,
        stars=stars,
    )


def _sky_backgrounds(rgb: np.ndarray, star_mask: np.ndarray) -> np.ndarray:
    """Each channel's sky level: the median of the star-free sample boxes that are sky.

    Boxes on a nebula or galaxy (rejected above a constant fit in any channel) do not count,
    so the neutralized background is the sky, not the object.
    """
    used = None
    values = []
    for plane in rgb:
        samples = kbackground.background_samples(plane, grid=16, mask=star_mask)
        _, samples = kbackground.fit_background(samples, plane.shape, model="polynomial", order=0)
        used = samples.used if used is None else used & samples.used
        values.append(samples.value)
    assert used is not None
    if not used.any():
        return kcolour.channel_backgrounds(rgb, ~star_mask)
    return np.array([float(np.median(v[used])) for v in values])


def _star_photometry(
    rgb: np.ndarray,
    backgrounds: np.ndarray,
    reference: StarsWhiteReference,
    measurement: MeasurementConfig,
) -> np.ndarray:
    """(n, 5) x, y and per-channel aperture fluxes of the stars fit for a white balance.

    Kept: isolated stars (nothing else detected in the aperture or the background annulus),
    unsaturated in every channel, at ``min_snr`` or better in every channel, and on sky: a
    star on a nebula or galaxy, whose annulus is brighter than the sky by more than
    ``_ON_SKY_SIGMA`` pixel sigmas in some channel, is left out (the object's structure
    under the star would colour it).
    """
    signal = np.nansum(rgb - backgrounds[:, None, None], axis=0)
    signal[~np.all(np.isfinite(rgb), axis=0)] = np.nan
    detection = detect_stars(signal, measurement)
    if len(detection.stars) == 0:
        raise ValueError(
            "no star found for the stellar white balance; use a region or given factors "
            "(combine.colour_calibration.white_reference)"
        )
    aperture = _aperture_radius(signal, detection.stars[:, 0], detection.stars[:, 1])
    stars = _isolated(detection.stars, aperture + _ANNULUS_OUTER_PX)[: reference.max_stars * 2]
    x, y = stars[:, 0], stars[:, 1]
    annulus = (aperture + _ANNULUS_INNER_PX, aperture + _ANNULUS_OUTER_PX)
    fluxes, snrs, rejected = [], [], np.zeros(len(stars), dtype=bool)
    for plane, sky_level in zip(rgb, backgrounds, strict=True):
        data = np.ascontiguousarray(np.nan_to_num(plane, nan=float(np.nanmedian(plane))))
        noise = float(sep.Background(data, bw=64, bh=64).globalrms)
        flux, error, flag = sep.sum_circle(
            data, x, y, aperture, err=noise, bkgann=annulus, subpix=5
        )
        ring, _, _ = sep.sum_circann(data, x, y, *annulus, subpix=5)
        local = ring / (np.pi * (annulus[1] ** 2 - annulus[0] ** 2))
        fluxes.append(flux)
        snrs.append(flux / np.maximum(error, 1e-30))
        rejected |= _peaks(data, x, y, aperture) >= 0.95 * float(np.nanmax(plane))
        rejected |= (flag != 0) | (local - sky_level > _ON_SKY_SIGMA * noise)
    good = ~rejected & (np.min(snrs, axis=0) >= reference.min_snr)
    return np.column_stack([x, y, *fluxes])[good][: reference.max_stars]


def _isolated(stars: np.ndarray, radius: float) -> np.ndarray:
    """The stars with no other detected star within ``radius`` (aperture and annulus clean)."""
    if len(stars) < 2:
        return stars
    distance, _ = cKDTree(stars[:, :2]).query(stars[:, :2], k=2)
    return stars[distance[:, 1] > radius]


def _aperture_radius(signal: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Aperture radius: 2 x the median FWHM (2 x half-light radius) of the stars.

    The fraction of light outside it is the same for every star of a channel, so it cancels
    in the white balance; a wider aperture only adds noise.
    """
    data = np.ascontiguousarray(np.nan_to_num(signal, nan=0.0), dtype=np.float32)
    radius, _ = sep.flux_radius(data, x, y, np.full(len(x), 15.0), 0.5, subpix=5)
    fwhm = 2.0 * float(np.median(radius[np.isfinite(radius) & (radius > 0)]))
    return max(3.0, _PHOTOMETRY_APERTURE_FWHM * fwhm)


def _peaks(data: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Brightest pixel within ``radius`` of each position."""
    r = int(np.ceil(radius))
    height, width = data.shape
    peaks = np.empty(len(x))
    for i, (cx, cy) in enumerate(
        zip(np.round(x).astype(int), np.round(y).astype(int), strict=True)
    ):
        window = data[
            max(0, cy - r) : min(height, cy + r + 1), max(0, cx - r) : min(width, cx + r + 1)
        ]
        peaks[i] = float(np.max(window)) if window.size else np.nan
    return peaks


# --------------------------------------------------------------------------- STF
def _stretches(rgb: np.ndarray, preview: PreviewConfig) -> Stretches:
    """Linked and unlinked PixInsight AutoSTF of the combined image."""
    unit, (lo, hi) = normalize_to_unit(rgb)
    kwargs = {
        "shadows_clipping": preview.shadows_clipping,
        "target_background": preview.target_background,
    }
    return Stretches(
        linked=auto_stretch_parameters(unit, linked=True, **kwargs),
        unlinked=auto_stretch_parameters(unit, linked=False, **kwargs),
        lo=lo,
        hi=hi,
    )
