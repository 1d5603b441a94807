"""Generate a small, realistic raw night of mono FITS frames with ground truth.

The night is one target (NGC 7000) shot through two filters (L with N.I.N.A.,
Ha with Sequence Generator Pro), a meridian flip half-way, dusk flats, and
darks and bias taken with MaxIm DL after the session. See :func:`generate_night`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from sample_data import sky
from sample_data.sensor import (
    SensorModel,
    bias_frame_model,
    cosmic_rays,
    dark_current_map,
    draw_hot_pixels,
    read_out,
)
from sample_data.truth import (
    SATURATION_ADU,
    CalibrationFrameTruth,
    FilterTruth,
    LightTruth,
    NightTruth,
    SensorTruth,
    TrailTruth,
)

__all__ = [
    "FILTERS",
    "GENERATOR_VERSION",
    "GradientMode",
    "draw_truth",
    "generate_night",
    "write_frames",
]

GENERATOR_VERSION = "1.1.0"
FILTERS = (
    FilterTruth(
        "L",
        exposure=60.0,
        sky_rate=13.0,
        star_throughput=1.0,
        nebula_rate=0.5,
        flat_level=26000.0,
        flat_exposure=2.0,
    ),
    FilterTruth(
        "Ha",
        exposure=180.0,
        sky_rate=0.7,
        star_throughput=0.15,
        nebula_rate=0.1,
        flat_level=22000.0,
        flat_exposure=6.0,
    ),
)
FWHM = 2.8
STARS_IN_FRAME = 250
STAR_PEAK_LIMIT_ADU = 30000.0
STAR_DYNAMIC_RANGE = 800.0
STAR_COUNT_SLOPE = 0.7
FWHM_RANGE = (0.9, 1.1)
MAX_ECCENTRICITY = 0.95
PSF_ANGLE_JITTER_DEG = 3.0
PSF_WING_ADU = 0.5
COSMIC_RAY_COUNT = 15.0
DITHER_PX, DITHER_DEG, FLIP_SHIFT_PX = 15.0, 0.3, 20.0
N_BIAS, N_DARKS, N_FLATS = 12, 8, 8
DARK_EXPOSURES = (60.0, 300.0)
FLATS_START = datetime(2026, 11, 25, 16, 31, 40)
LIGHTS_START = datetime(2026, 11, 25, 21, 4, 12)
OBJECT = "NGC 7000"


@dataclass(frozen=True)
class _Program:
    """Header and naming habits of one capture program."""

    software: str
    exposure_keys: tuple[str, ...]
    imagetyp: str


NINA_LIGHT = _Program("N.I.N.A. 3.1.2.9001", ("EXPOSURE", "EXPTIME"), "LIGHT")
SGP_LIGHT = _Program("Sequence Generator Pro v4.3.0.1234", ("EXPTIME",), "Light Frame")
SGP_FLAT = _Program("Sequence Generator Pro v4.3.0.1234", ("EXPTIME",), "Flat Field")
MAXIM_BIAS = _Program("MaxIm DL Version 6.40", ("EXPTIME", "EXPOSURE"), "Bias Frame")
MAXIM_DARK = _Program("MaxIm DL Version 6.40", ("EXPTIME", "EXPOSURE"), "Dark Frame")
LIGHT_PROGRAMS = {"L": NINA_LIGHT, "Ha": SGP_LIGHT}
GradientMode = Literal["fixed", "rotating"]
GRADIENT_MODES: tuple[str, ...] = get_args(GradientMode)


class _Clock:
    """Wall clock of the session, advanced frame by frame."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += timedelta(seconds=float(seconds))

    def stamp(self) -> str:
        """ISO DATE-OBS with milliseconds, e.g. ``2026-11-25T21:04:12.345``."""
        return f"{self.now:%Y-%m-%dT%H:%M:%S}.{self.now.microsecond // 1000:03d}"


@dataclass(frozen=True)
class _LightPlan:
    """Night-wide choices shared by every light."""

    shape: tuple[int, int]
    specials: dict[int, str]
    flip_shift: tuple[float, float]
    gradient_angle: float
    n_lights: int
    gradient: GradientMode = "fixed"
    gradient_amplitude: float = 0.02
    transients: bool = True
    psf: _PsfPlan | None = None
    cosmic_ray_count: float = COSMIC_RAY_COUNT


@dataclass(frozen=True)
class _PsfPlan:
    """Seeing and optics of the night: FWHM per sub, and the PSF's elongation."""

    fwhm: float = FWHM
    fwhm_range: tuple[float, float] = FWHM_RANGE
    eccentricity: float = 0.0
    eccentricity_spread: float = 0.0
    angle: float = 0.0  # night-wide position angle of the major axis (sensor, radians)

    @property
    def elliptical(self) -> bool:
        """Whether the subs get an eccentricity (and angle) drawn at all."""
        return self.eccentricity > 0.0 or self.eccentricity_spread > 0.0


def generate_night(
    outdir: str | Path,
    *,
    rng: np.random.Generator | None = None,
    seed: int = 20261126,
    width: int = 640,
    height: int = 480,
    n_lights_per_filter: int = 10,
    stars_in_frame: int = STARS_IN_FRAME,
    gradient: GradientMode = "fixed",
    gradient_amplitude: float = 0.02,
    transients: bool = True,
    filters: Sequence[str | FilterTruth] = ("L", "Ha"),
    fwhm: float = FWHM,
    fwhm_range: tuple[float, float] = FWHM_RANGE,
    eccentricity: float = 0.0,
    eccentricity_spread: float = 0.0,
    star_peak_limit_adu: float = STAR_PEAK_LIMIT_ADU,
    star_dynamic_range: float = STAR_DYNAMIC_RANGE,
    star_count_slope: float = STAR_COUNT_SLOPE,
    n_bias: int = N_BIAS,
    n_darks: int = N_DARKS,
    n_flats: int = N_FLATS,
    dark_exposures: Sequence[float] = DARK_EXPOSURES,
    cosmic_ray_count: float = COSMIC_RAY_COUNT,
) -> NightTruth:
    """Write a synthetic raw night and its ground truth to ``outdir``.

    Every option at its default gives the same night, bit for bit, as before the option
    existed (no extra random number is drawn).

    Parameters
    ----------
    outdir : str or Path
        Destination folder (created; existing frames of the same name are overwritten).
    rng : numpy.random.Generator, optional
        Random source; when given, ``seed`` is ignored and recorded as None.
    seed : int
        Seed for ``numpy.random.default_rng`` when ``rng`` is None.
    width, height : int
        Sensor size in pixels (at least 128 each).
    n_lights_per_filter : int
        Lights per filter (at least 4); the later half is after the meridian flip.
    stars_in_frame : int
        Mean number of catalogue stars inside the frame (dense or sparse fields).
    gradient : {"fixed", "rotating"}
        Sky gradient of the lights. ``"fixed"``: one sky-fixed direction for the night
        (+/- 5 degrees per sub, turned by 180 degrees on the sensor after the flip) and an
        amplitude of ``gradient_amplitude * U(0.8, 1.2)``. ``"rotating"``: sub ``k`` of
        each filter gets exactly ``gradient_amplitude`` along ``2 pi k / n`` on the sky (turned
        by 180 degrees on the sensor after the flip), so the gradients of a filter sum to
        zero on the sky, as when moonlight or light pollution
        comes from a different direction in every sub. Both modes draw the same random
        numbers, so stars, dithers, seeing and special subs are identical between them.
    gradient_amplitude : float
        Fractional sky change from the frame centre to a corner, in ``[0, 1)``.
    transients : bool
        With False, the night's "twin" without transients: no satellite trail and no
        cosmic rays, everything else identical to the night with the same random source
        (stars, dithers, seeing, sky, calibration frames, and the noise of every pixel
        the trail and the cosmic rays do not touch). The trail and the cosmic rays are
        still drawn, then dropped, and the trail's photon noise comes from a separate
        generator (see :func:`write_frames`), so no other random number changes.
        Comparing the masters of a night and its twin isolates what the transients
        left behind.
    filters : sequence of str or FilterTruth
        Filters shot, in order: names from :data:`FILTERS` (``"L"``, ``"Ha"``) or
        :class:`FilterTruth` objects (e.g. L with another exposure). The cloudy, blurred
        and trail subs are L subs; a night without an ``"L"`` filter has none.
    fwhm : float
        Median seeing (pixels). Sub ``k`` gets ``fwhm * U(*fwhm_range)`` (x 2.5 for the
        blurred sub). For an elliptical PSF this is the geometric mean
        ``sqrt(fwhm_major * fwhm_minor)`` of the axis FWHMs, as recorded in
        :attr:`LightTruth.fwhm`.
    fwhm_range : tuple of float
        ``(lo, hi)`` factors around ``fwhm``, ``0 < lo <= hi``.
    eccentricity, eccentricity_spread : float
        Optics that elongate every star: each sub draws ``e ~ N(eccentricity,
        eccentricity_spread)`` clipped to ``[0, 0.95]``, with
        ``e = sqrt(1 - (fwhm_minor / fwhm_major) ** 2)``, and a major-axis position angle
        fixed on the sensor for the night (drawn once, uniform) +/- a 3-degree jitter per
        sub (recorded as ``LightTruth.eccentricity`` and ``psf_angle``). Both 0
        (default): round stars, nothing drawn.
    star_peak_limit_adu : float
        Analytic peak (ADU, above the sky) of the brightest possible star in the
        sharpest possible sub (``fwhm * lo``), at transmission 1, in the filter with the
        most star light. The default keeps every star well below the 16-bit ceiling;
        values above it (e.g. ``2e6``) make the bright end saturate: such pixels clip at
        65535 in the raw files, ``NightTruth.saturation_adu`` records the level, the
        light headers carry ``SATURATE``, and stars are rendered on stamps grown until
        their wings fall below 0.5 ADU (``NightTruth.psf_wing_adu``) so a saturated star
        has no square cut-off.
    star_dynamic_range : float
        Brightest over faintest possible star flux (at least 1).
    star_count_slope : float
        Slope of the star counts, ``N(>F) ~ F**-star_count_slope`` between the faintest
        and the brightest star (0.7 by default; shallower gives more bright stars per
        faint one).
    n_bias, n_darks, n_flats : int
        Bias frames; darks per dark exposure; flats per filter.
    dark_exposures : sequence of float
        Dark exposures (s), shot in this order after the lights.
    cosmic_ray_count : float
        Poisson mean of the cosmic-ray hits per light.

    Returns
    -------
    NightTruth
        The ground truth, also saved as ``outdir/truth/truth.json`` plus ``.npy`` arrays.

    Raises
    ------
    ValueError
        If the sensor is too small, there are too few lights for the special subs, the
        gradient settings are unknown or out of range, or any other option is out of
        range (every such problem is listed in one message).
    """
    _validate(width, height, n_lights_per_filter)
    root = Path(outdir)
    generator = rng if rng is not None else np.random.default_rng(seed)
    truth = draw_truth(
        generator,
        width,
        height,
        n_lights_per_filter,
        seed=None if rng is not None else seed,
        root=root,
        stars_in_frame=stars_in_frame,
        gradient=gradient,
        gradient_amplitude=gradient_amplitude,
        transients=transients,
        filters=filters,
        fwhm=fwhm,
        fwhm_range=fwhm_range,
        eccentricity=eccentricity,
        eccentricity_spread=eccentricity_spread,
        star_peak_limit_adu=star_peak_limit_adu,
        star_dynamic_range=star_dynamic_range,
        star_count_slope=star_count_slope,
        n_bias=n_bias,
        n_darks=n_darks,
        n_flats=n_flats,
        dark_exposures=dark_exposures,
        cosmic_ray_count=cosmic_ray_count,
    )
    write_frames(truth, generator)
    truth.save(root)
    return truth


def _validate(width: int, height: int, n_lights: int) -> None:
    """Reject settings the night cannot be built with."""
    if width < 128 or height < 128:
        raise ValueError(f"sensor must be at least 128x128 pixels, got {width}x{height}")
    if n_lights < 4:
        raise ValueError(
            f"n_lights_per_filter must be at least 4 (cloudy, blurred and trail subs "
            f"besides the reference), got {n_lights}"
        )


def _validate_gradient(gradient: str, amplitude: float) -> None:
    """Reject an unknown gradient mode or an amplitude that could make the sky negative."""
    if gradient not in GRADIENT_MODES:
        allowed = ", ".join(repr(m) for m in GRADIENT_MODES)
        raise ValueError(f"gradient must be one of {allowed}, got {gradient!r}")
    if not (math.isfinite(amplitude) and 0.0 <= amplitude < 1.0):
        raise ValueError(
            f"gradient_amplitude must be finite and in [0, 1) (fractional sky change from "
            f"centre to corner), got {amplitude!r}"
        )


def _resolve_filters(filters: Sequence[str | FilterTruth]) -> tuple[FilterTruth, ...]:
    """Filter names (looked up in :data:`FILTERS`) or filter truths, as filter truths."""
    known = {f.name: f for f in FILTERS}
    chosen: list[FilterTruth] = []
    for item in filters:
        if isinstance(item, FilterTruth):
            chosen.append(item)
        elif item in known:
            chosen.append(known[item])
        else:
            allowed = ", ".join(repr(name) for name in known)
            raise ValueError(f"unknown filter {item!r}: use one of {allowed} or pass a FilterTruth")
    names = [f.name for f in chosen]
    if not chosen or len(set(names)) != len(names):
        raise ValueError(f"filters must be one or more distinct filters, got {names}")
    return tuple(chosen)


def _validate_options(
    *,
    fwhm: float,
    fwhm_range: tuple[float, float],
    eccentricity: float,
    eccentricity_spread: float,
    star_peak_limit_adu: float,
    star_dynamic_range: float,
    star_count_slope: float,
    counts: dict[str, int],
    dark_exposures: Sequence[float],
    cosmic_ray_count: float,
) -> None:
    """Reject out-of-range seeing, optics, star and calibration options, all at once."""
    problems = []
    if not (math.isfinite(fwhm) and fwhm > 0.0):
        problems.append(f"fwhm must be a positive number of pixels, got {fwhm!r}")
    if len(fwhm_range) != 2 or not 0.0 < fwhm_range[0] <= fwhm_range[1] < math.inf:
        problems.append(f"fwhm_range must be (lo, hi) with 0 < lo <= hi, got {fwhm_range!r}")
    if not 0.0 <= eccentricity <= MAX_ECCENTRICITY:
        problems.append(f"eccentricity must be in [0, {MAX_ECCENTRICITY}], got {eccentricity!r}")
    if not (math.isfinite(eccentricity_spread) and eccentricity_spread >= 0.0):
        problems.append(f"eccentricity_spread must be >= 0, got {eccentricity_spread!r}")
    if not (math.isfinite(star_peak_limit_adu) and star_peak_limit_adu > 0.0):
        problems.append(f"star_peak_limit_adu must be positive, got {star_peak_limit_adu!r}")
    if not (math.isfinite(star_dynamic_range) and star_dynamic_range >= 1.0):
        problems.append(f"star_dynamic_range must be at least 1, got {star_dynamic_range!r}")
    if not (math.isfinite(star_count_slope) and star_count_slope > 0.0):
        problems.append(f"star_count_slope must be positive, got {star_count_slope!r}")
    for name, value in counts.items():
        if int(value) != value or value < 0:
            problems.append(f"{name} must be a whole number >= 0, got {value!r}")
    if any(not (math.isfinite(e) and e > 0.0) for e in dark_exposures):
        problems.append(f"dark_exposures must be positive seconds, got {tuple(dark_exposures)}")
    if not (math.isfinite(cosmic_ray_count) and cosmic_ray_count >= 0.0):
        problems.append(f"cosmic_ray_count must be >= 0, got {cosmic_ray_count!r}")
    if problems:
        raise ValueError("invalid night options: " + "; ".join(problems))


def draw_truth(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_lights: int,
    *,
    seed: int | None,
    root: Path | None,
    stars_in_frame: int = STARS_IN_FRAME,
    gradient: GradientMode = "fixed",
    gradient_amplitude: float = 0.02,
    transients: bool = True,
    filters: Sequence[str | FilterTruth] = ("L", "Ha"),
    fwhm: float = FWHM,
    fwhm_range: tuple[float, float] = FWHM_RANGE,
    eccentricity: float = 0.0,
    eccentricity_spread: float = 0.0,
    star_peak_limit_adu: float = STAR_PEAK_LIMIT_ADU,
    star_dynamic_range: float = STAR_DYNAMIC_RANGE,
    star_count_slope: float = STAR_COUNT_SLOPE,
    n_bias: int = N_BIAS,
    n_darks: int = N_DARKS,
    n_flats: int = N_FLATS,
    dark_exposures: Sequence[float] = DARK_EXPOSURES,
    cosmic_ray_count: float = COSMIC_RAY_COUNT,
) -> NightTruth:
    """Draw every random parameter of the night (no pixels rendered, nothing written).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    width, height : int
        Sensor size.
    n_lights : int
        Lights per filter.
    seed : int or None
        Seed to record.
    root : Path or None
        Night folder to record.
    stars_in_frame : int
        Mean number of catalogue stars inside the frame.
    gradient : {"fixed", "rotating"}
        Sky gradient mode of the lights (see :func:`generate_night`).
    gradient_amplitude : float
        Fractional sky change from the frame centre to a corner.
    transients : bool
        With False, the satellite trail and the cosmic rays are drawn (so every other
        random number is the same) but left out of the lights (``trail`` None,
        ``cosmic_rays`` empty).
    filters, fwhm, fwhm_range, eccentricity, eccentricity_spread : optional
        Filters shot and the seeing and optics (see :func:`generate_night`).
    star_peak_limit_adu, star_dynamic_range, star_count_slope : float
        Brightest star's peak, the flux range and the count slope of the stars (see
        :func:`generate_night`).
    n_bias, n_darks, n_flats, dark_exposures, cosmic_ray_count : optional
        Calibration counts, dark exposures and cosmic rays (see :func:`generate_night`).

    Returns
    -------
    NightTruth
        The complete truth.

    Raises
    ------
    ValueError
        If the gradient settings are unknown or out of range, or any other option is out
        of range (all such problems in one message).
    """
    _validate_gradient(gradient, gradient_amplitude)
    chosen = _resolve_filters(filters)
    _validate_options(
        fwhm=fwhm,
        fwhm_range=fwhm_range,
        eccentricity=eccentricity,
        eccentricity_spread=eccentricity_spread,
        star_peak_limit_adu=star_peak_limit_adu,
        star_dynamic_range=star_dynamic_range,
        star_count_slope=star_count_slope,
        counts={"n_bias": n_bias, "n_darks": n_darks, "n_flats": n_flats},
        dark_exposures=dark_exposures,
        cosmic_ray_count=cosmic_ray_count,
    )
    psf = _PsfPlan(
        float(fwhm),
        (float(fwhm_range[0]), float(fwhm_range[1])),
        float(eccentricity),
        float(eccentricity_spread),
    )
    saturating = star_peak_limit_adu != STAR_PEAK_LIMIT_ADU
    shape = (height, width)
    sensor = SensorModel()
    bias = bias_frame_model(rng, shape, sensor)
    hot = draw_hot_pixels(rng, shape, sensor)
    responses = _draw_flat_responses(rng, shape, chosen)
    per_flux = _peak_adu_per_flux(chosen, sharpest=psf.fwhm * psf.fwhm_range[0])
    stars = _draw_stars(
        rng,
        width,
        height,
        stars_in_frame,
        peak_adu_per_flux=per_flux,
        peak_limit_adu=star_peak_limit_adu,
        dynamic_range=star_dynamic_range,
        count_slope=star_count_slope,
    )
    nebula = _draw_nebula(rng, width, height)
    flats = _schedule_flats(rng, chosen, n_flats)
    lights, clock = _draw_lights(
        rng,
        shape,
        n_lights,
        gradient=gradient,
        gradient_amplitude=gradient_amplitude,
        transients=transients,
        filters=chosen,
        psf=psf,
        cosmic_ray_count=cosmic_ray_count,
    )
    darks, biases = _schedule_darks_and_bias(
        rng, clock, tuple(float(e) for e in dark_exposures), n_darks=n_darks, n_bias=n_bias
    )
    return _assemble_truth(
        GENERATOR_VERSION,
        seed,
        root,
        sensor,
        chosen,
        psf_wing_adu=PSF_WING_ADU if saturating else None,
        saturation_adu=SATURATION_ADU if saturating else None,
        nebula=nebula,
        light_frames=lights,
        bias_frames=biases,
        dark_frames=darks,
        flat_frames=flats,
        stars=stars,
        hot_pixels=hot,
        bias_pattern=bias,
        flat_responses=responses,
    )


def _assemble_truth(
    version: str,
    seed: int | None,
    root: Path | None,
    sensor: SensorModel,
    filters: tuple[FilterTruth, ...],
    **parts: Any,
) -> NightTruth:
    """Build the :class:`NightTruth` of a mono night from its drawn ``parts``.

    ``parts`` holds the remaining ``NightTruth`` fields except ``width``, ``height``
    (taken from ``bias_pattern``) and ``dark_current`` (derived from ``hot_pixels``).
    """
    shape = parts["bias_pattern"].shape
    return NightTruth(
        version=version,
        seed=seed,
        width=shape[1],
        height=shape[0],
        psf_beta=sky.MOFFAT_BETA,
        sensor=SensorTruth(sensor.gain, sensor.read_noise, sensor.bias_level, sensor.dark_current),
        filters={f.name: f for f in filters},
        dark_current=dark_current_map(shape, sensor, parts["hot_pixels"]),
        root=root,
        **parts,
    )


def _draw_flat_responses(
    rng: np.random.Generator,
    shape: tuple[int, int],
    filters: tuple[FilterTruth, ...] = FILTERS,
) -> dict[str, NDArray[np.float32]]:
    """Vignetting x dust x PRNU per filter (3 sensor motes + 1 per filter)."""
    height, width = shape
    centre = (
        (width - 1) / 2 + rng.uniform(-0.05, 0.05) * width,
        (height - 1) / 2 + rng.uniform(-0.05, 0.05) * height,
    )
    vignette = sky.vignetting(shape, centre, corner_loss=0.25)
    prnu = 1.0 + rng.normal(0.0, 0.005, shape)
    sensor_dust = sky.dust_transmission(shape, _draw_donuts(rng, shape, 3))
    return {
        f.name: sky.flat_response(
            vignette, sensor_dust * sky.dust_transmission(shape, _draw_donuts(rng, shape, 1)), prnu
        )
        for f in filters
    }


def _draw_donuts(
    rng: np.random.Generator, shape: tuple[int, int], n: int
) -> tuple[sky.DustDonut, ...]:
    """Random dust motes fully inside the frame."""
    height, width = shape
    donuts = []
    for _ in range(n):
        radius = float(rng.uniform(15.0, 40.0))
        donuts.append(
            sky.DustDonut(
                x=float(rng.uniform(radius + 5, width - radius - 5)),
                y=float(rng.uniform(radius + 5, height - radius - 5)),
                radius=radius,
                depth=float(rng.uniform(0.03, 0.08)),
            )
        )
    return tuple(donuts)


def _draw_stars(
    rng: np.random.Generator,
    width: int,
    height: int,
    stars_in_frame: int = STARS_IN_FRAME,
    *,
    peak_adu_per_flux: float | None = None,
    peak_limit_adu: float = STAR_PEAK_LIMIT_ADU,
    dynamic_range: float = STAR_DYNAMIC_RANGE,
    count_slope: float = STAR_COUNT_SLOPE,
) -> NDArray[np.float64]:
    """Stars on a sky disc that covers every dithered/flipped/rotated sub.

    Returns an ``(n, 3)`` array: sky ``x, y`` and L-band flux (e-/s), a truncated
    power law ``N(>F) ~ F**-count_slope`` over ``dynamic_range`` whose brightest possible star
    peaks at ``peak_limit_adu`` in the least favourable sub (sharpest seeing).
    ``peak_adu_per_flux`` (Moffat peak in ADU per e-/s of flux in that sub) defaults
    to :func:`_peak_adu_per_flux` of the L/Ha filters.
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    radius = math.hypot(cx, cy) + math.sqrt(2) * (DITHER_PX + FLIP_SHIFT_PX) + 20.0
    n = int(round(stars_in_frame * math.pi * radius**2 / (width * height)))
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, n))
    theta = rng.uniform(0.0, 2 * math.pi, n)
    per_flux = _peak_adu_per_flux() if peak_adu_per_flux is None else peak_adu_per_flux
    f_max = peak_limit_adu / per_flux
    f_min = f_max / dynamic_range
    tail = 1.0 - (f_min / f_max) ** count_slope
    flux = f_min * (1.0 - rng.uniform(0.0, 1.0, n) * tail) ** (-1.0 / count_slope)
    return np.column_stack([cx + r * np.cos(theta), cy + r * np.sin(theta), flux])


def _peak_adu_per_flux(
    filters: tuple[FilterTruth, ...] = FILTERS,
    colour: dict[str, float] | None = None,
    *,
    sharpest: float = FWHM * FWHM_RANGE[0],
) -> float:
    """Largest Moffat peak (ADU) per e-/s of tabulated flux over ``filters``.

    In the sharpest seeing (FWHM ``sharpest``), at transmission 1 and before the flat
    response; ``colour`` (filter name -> the star's colour factor, 1 where missing)
    scales each filter.
    """
    factor = colour or {}
    per_flux = [
        f.star_throughput * f.exposure / SensorModel().gain * factor.get(f.name, 1.0)
        for f in filters
    ]
    return float(sky.moffat_peak(max(per_flux), sharpest))


def _draw_nebula(rng: np.random.Generator, width: int, height: int) -> tuple[sky.NebulaBlob, ...]:
    """Three broad glows and three thin filaments around the field centre."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    blobs = []
    for major, minor in (((120, 260), (70, 150)),) * 3 + (((90, 220), (5, 14)),) * 3:
        blobs.append(
            sky.NebulaBlob(
                x=float(cx + rng.uniform(-0.45, 0.45) * width),
                y=float(cy + rng.uniform(-0.45, 0.45) * height),
                sigma_major=float(rng.uniform(*major)),
                sigma_minor=float(rng.uniform(*minor)),
                angle=float(rng.uniform(0.0, math.pi)),
                amplitude=float(rng.uniform(0.3, 1.0)),
            )
        )
    return tuple(blobs)


def _ccd_temp(rng: np.random.Generator) -> float:
    """Regulated sensor temperature as reported: -10 +/- 0.3 C."""
    return round(-10.0 + float(rng.uniform(-0.3, 0.3)), 2)


def _schedule_flats(
    rng: np.random.Generator, filters: tuple[FilterTruth, ...] = FILTERS, n_flats: int = N_FLATS
) -> tuple[CalibrationFrameTruth, ...]:
    """Dusk flats (SGP), filter by filter: all L, then all Ha by default."""
    clock = _Clock(FLATS_START + timedelta(milliseconds=int(rng.integers(0, 1000))))
    frames = []
    for filt in filters:
        for k in range(n_flats):
            frames.append(
                CalibrationFrameTruth(
                    path=f"Flats/{filt.name}/Flat_{filt.name}_{k + 1:04d}.fits",
                    kind="flat",
                    exposure=filt.flat_exposure,
                    date_obs=clock.stamp(),
                    ccd_temp=_ccd_temp(rng),
                    filter=filt.name,
                )
            )
            clock.advance(filt.flat_exposure + rng.uniform(2.0, 3.0))
        clock.advance(rng.uniform(40.0, 60.0))
    return tuple(frames)


def _schedule_darks_and_bias(
    rng: np.random.Generator,
    clock: _Clock,
    exposures: tuple[float, ...] = DARK_EXPOSURES,
    *,
    n_darks: int = N_DARKS,
    n_bias: int = N_BIAS,
) -> tuple[tuple[CalibrationFrameTruth, ...], tuple[CalibrationFrameTruth, ...]]:
    """Darks (60 s, then 300 s by default) and bias with the cover on, after the lights."""
    clock.advance(rng.uniform(900.0, 1200.0))
    darks = []
    for exposure in exposures:
        for k in range(n_darks):
            darks.append(
                CalibrationFrameTruth(
                    path=f"Darks/Dark_{exposure:.0f}s_{k + 1:04d}.fit",
                    kind="dark",
                    exposure=exposure,
                    date_obs=clock.stamp(),
                    ccd_temp=_ccd_temp(rng),
                )
            )
            clock.advance(exposure + rng.uniform(2.0, 3.0))
    biases = []
    for k in range(n_bias):
        biases.append(
            CalibrationFrameTruth(
                path=f"Bias/Bias_{k + 1:04d}.fit",
                kind="bias",
                exposure=0.0,
                date_obs=clock.stamp(),
                ccd_temp=_ccd_temp(rng),
            )
        )
        clock.advance(rng.uniform(1.5, 2.5))
    return tuple(darks), tuple(biases)


def _draw_lights(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_lights: int,
    *,
    gradient: GradientMode = "fixed",
    gradient_amplitude: float = 0.02,
    transients: bool = True,
    filters: tuple[FilterTruth, ...] = FILTERS,
    specials: bool = True,
    flip: bool = True,
    psf: _PsfPlan | None = None,
    cosmic_ray_count: float = COSMIC_RAY_COUNT,
) -> tuple[tuple[LightTruth, ...], _Clock]:
    """Lights in session order, filter by filter: L then Ha before the flip, L then Ha after.

    With ``specials`` False no cloudy, blurred or trailed L sub is chosen (and nothing
    drawn for them); with ``flip`` False there is no meridian flip (one block of subs,
    no flip shift drawn). ``psf`` (default: round, ``FWHM * U(0.9, 1.1)``) sets the
    seeing and optics; an elliptical one draws its night-wide angle after the gradient
    direction, so a round night draws exactly what it did before.
    """
    special_subs: dict[int, str] = {}
    if specials:
        chosen = rng.choice(np.arange(1, n_lights), size=3, replace=False)
        kinds = ("cloudy", "blurred", "trail")
        special_subs = {int(k): kind for k, kind in zip(chosen, kinds, strict=True)}
    flip_shift = rng.uniform(-FLIP_SHIFT_PX, FLIP_SHIFT_PX, 2) if flip else (0.0, 0.0)
    gradient_angle = float(rng.uniform(0.0, 2 * math.pi))
    psf = psf or _PsfPlan()
    if psf.elliptical:
        psf = dataclasses.replace(psf, angle=float(rng.uniform(0.0, math.pi)))
    plan = _LightPlan(
        shape=shape,
        specials=special_subs,
        flip_shift=tuple(float(v) for v in flip_shift),
        gradient_angle=gradient_angle,
        n_lights=n_lights,
        gradient=gradient,
        gradient_amplitude=gradient_amplitude,
        transients=transients,
        psf=psf,
        cosmic_ray_count=cosmic_ray_count,
    )
    clock = _Clock(LIGHTS_START + timedelta(milliseconds=int(rng.integers(0, 1000))))
    n_before = n_lights - n_lights // 2 if flip else n_lights
    blocks = [(range(n_before), False)]
    if flip:
        blocks.append((range(n_before, n_lights), True))
    lights: list[LightTruth] = []
    for block, flipped in blocks:
        if flipped:
            clock.advance(rng.uniform(200.0, 300.0))  # flip, plate solve, re-centre
        for filt in filters:
            for k in block:
                lights.append(_draw_light(rng, plan, filt, k, len(lights), flipped, clock))
                clock.advance(filt.exposure + rng.uniform(6.0, 12.0))
            clock.advance(rng.uniform(15.0, 25.0))  # filter change + refocus
    return tuple(lights), clock


def _draw_light(
    rng: np.random.Generator,
    plan: _LightPlan,
    filt: FilterTruth,
    k: int,
    index: int,
    flipped: bool,
    clock: _Clock,
) -> LightTruth:
    """Draw one light's pointing, seeing, sky and defects."""
    height, width = plan.shape
    special = plan.specials.get(k) if filt.name == "L" else None
    ccd_temp = _ccd_temp(rng)
    psf = plan.psf or _PsfPlan()
    seeing = psf.fwhm * float(rng.uniform(*psf.fwhm_range))
    fwhm = seeing * (2.5 if special == "blurred" else 1.0)
    transmission = 0.35 if special == "cloudy" else float(rng.uniform(0.93, 1.0))
    sky_rate = filt.sky_rate * float(rng.uniform(0.97, 1.05)) * (1.3 if special == "cloudy" else 1)
    angle = math.radians(rng.uniform(-DITHER_DEG, DITHER_DEG)) + (math.pi if flipped else 0.0)
    shift = rng.uniform(-DITHER_PX, DITHER_PX, 2) + (plan.flip_shift if flipped else 0.0)
    matrix = sky.dither_matrix(((width - 1) / 2, (height - 1) / 2), angle, tuple(shift))
    # The filter's turn and scale are exactly 0 and 1 in the L/Ha night (same bits as before).
    turn = math.radians(filt.gradient_turn_deg)
    gradient_angle = plan.gradient_angle + turn + math.radians(rng.normal(0.0, 5.0))
    # Drawn in both modes (same order as before) so that "rotating" changes nothing else.
    gradient_factor = float(rng.uniform(0.8, 1.2))
    if plan.gradient == "rotating":
        sky_gradient = plan.gradient_amplitude * filt.gradient_scale
        sky_direction = 2 * math.pi * k / plan.n_lights + turn  # on the sky: they sum to zero
        sky_gradient_angle = (sky_direction + (math.pi if flipped else 0.0)) % (2 * math.pi)
    else:
        sky_gradient = plan.gradient_amplitude * gradient_factor * filt.gradient_scale
        sky_gradient_angle = (gradient_angle + (math.pi if flipped else 0.0)) % (2 * math.pi)
    # Transients are drawn in both modes (same order) and only then dropped from the twin.
    trail = _draw_trail(rng, plan.shape) if special == "trail" else None
    hits = cosmic_rays(rng, plan.shape, plan.cosmic_ray_count)
    eccentricity, psf_angle = _draw_elongation(rng, psf) if psf.elliptical else (0.0, 0.0)
    return LightTruth(
        index=index,
        filter_index=k,
        path=_light_path(filt, k, clock.now, ccd_temp),
        filter=filt.name,
        exposure=filt.exposure,
        date_obs=clock.stamp(),
        ccd_temp=ccd_temp,
        matrix=tuple(tuple(float(v) for v in row) for row in matrix),
        fwhm=fwhm,
        transmission=transmission,
        sky_adu=sky_rate * filt.exposure / SensorModel().gain,
        sky_gradient=sky_gradient,
        sky_gradient_angle=sky_gradient_angle,
        flipped=flipped,
        cloudy=special == "cloudy",
        blurred=special == "blurred",
        trail=trail if plan.transients else None,
        cosmic_rays=hits if plan.transients else (),
        eccentricity=eccentricity,
        psf_angle=psf_angle,
    )


def _draw_elongation(rng: np.random.Generator, psf: _PsfPlan) -> tuple[float, float]:
    """One sub's PSF eccentricity (clipped normal) and major-axis angle (night's +/- jitter)."""
    drawn = rng.normal(psf.eccentricity, psf.eccentricity_spread)
    eccentricity = float(np.clip(drawn, 0.0, MAX_ECCENTRICITY))
    jitter = math.radians(float(rng.normal(0.0, PSF_ANGLE_JITTER_DEG)))
    return eccentricity, (psf.angle + jitter) % math.pi


def _draw_trail(rng: np.random.Generator, shape: tuple[int, int]) -> TrailTruth:
    """A satellite crossing the whole frame through its central region."""
    height, width = shape
    point = (float(rng.uniform(0.25, 0.75) * width), float(rng.uniform(0.25, 0.75) * height))
    x0, y0, x1, y1 = sky.trail_endpoints(shape, point, float(rng.uniform(0.0, math.pi)))
    return TrailTruth(x0, y0, x1, y1, amplitude=float(rng.uniform(2500.0, 5000.0)), sigma=1.5)


def _light_program(filter_name: str) -> _Program:
    """Capture program of a filter's lights: SGP for Ha, N.I.N.A. for every other filter."""
    return LIGHT_PROGRAMS.get(filter_name, NINA_LIGHT)


def _light_path(filt: FilterTruth, k: int, when: datetime, ccd_temp: float) -> str:
    """File name in the style of the program that shot this filter."""
    if _light_program(filt.name) is NINA_LIGHT:
        return (
            f"LIGHT/{when:%Y-%m-%d_%H-%M-%S}_{filt.name}_{ccd_temp:.2f}_"
            f"{filt.exposure:.2f}s_{k + 1:04d}.fits"
        )
    return (
        f"Lights/{OBJECT.replace(' ', '')}_Light_{filt.name}_{filt.exposure:.0f}s_Bin1_"
        f"{round(ccd_temp):d}C_{k + 1:04d}.fit"
    )


def write_frames(truth: NightTruth, rng: np.random.Generator) -> None:
    """Render, add noise to and write every frame of ``truth`` under ``truth.root``.

    Parameters
    ----------
    truth : NightTruth
        The night to render (``root`` must be set).
    rng : numpy.random.Generator
        Random source for the noise. A child generator is spawned from it once
        (``rng.spawn``, which does not advance ``rng``) for the photon noise of
        satellite trails; every other draw comes from ``rng`` itself, in an order that
        does not depend on the trails or the cosmic rays, so a night and its twin
        without transients get the same noise wherever no transient lands.
    """
    sensor = SensorModel()
    transient_rng = rng.spawn(1)[0]  # unconditionally: same main stream with or without
    for light in truth.light_frames:
        response = truth.flat_response(light.filter)
        electrons = (
            truth.clean_sky(light, trail=False) * sensor.gain * response
            + truth.dark_current * light.exposure
        )
        trail = None if light.trail is None else truth.trail_image(light) * sensor.gain * response
        data = read_out(
            rng,
            electrons,
            truth.bias_pattern,
            sensor,
            light.cosmic_rays,
            extra_electrons=trail,
            extra_rng=transient_rng,
        )
        _write(truth.path(light.path), data, _light_header(light, truth.saturation_adu))
    for frame in truth.bias_frames + truth.dark_frames + truth.flat_frames:
        electrons = truth.dark_current * frame.exposure
        if frame.kind == "flat":
            level = truth.filters[frame.filter].flat_level * (1.0 + rng.normal(0.0, 0.01))
            electrons = electrons + level * sensor.gain * truth.flat_response(frame.filter)
        data = read_out(rng, electrons, truth.bias_pattern, sensor)
        _write(truth.path(frame.path), data, _calibration_header(frame))


def _write(path: Path, data: NDArray[np.uint16], header: fits.Header) -> None:
    """Write a uint16 image (astropy stores it as BITPIX 16, BZERO 32768)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)


def _light_header(light: LightTruth, saturation_adu: float | None = None) -> fits.Header:
    """Header of a light in its program's style (``SATURATE`` when a level is given)."""
    header = _base_header(
        _light_program(light.filter), light.exposure, light.date_obs, light.ccd_temp
    )
    header["FILTER"] = (light.filter, "Filter used")
    header["OBJECT"] = (OBJECT, "Target")
    header["PIERSIDE"] = ("EAST" if light.flipped else "WEST", "Telescope side of pier")
    if saturation_adu is not None:
        header["SATURATE"] = (int(saturation_adu), "[ADU] Level at which pixels clip")
    return header


def _calibration_header(frame: CalibrationFrameTruth) -> fits.Header:
    """Header of a bias, dark or flat frame."""
    program = {"bias": MAXIM_BIAS, "dark": MAXIM_DARK, "flat": SGP_FLAT}[frame.kind]
    header = _base_header(program, frame.exposure, frame.date_obs, frame.ccd_temp)
    if frame.filter is not None:
        header["FILTER"] = (frame.filter, "Filter used")
    return header


def _base_header(program: _Program, exposure: float, date_obs: str, ccd_temp: float) -> fits.Header:
    """Keywords every frame carries."""
    header = fits.Header()
    header["IMAGETYP"] = (program.imagetyp, "Type of exposure")
    for key in program.exposure_keys:
        header[key] = (float(exposure), "[s] Exposure duration")
    header["DATE-OBS"] = (date_obs, "UTC start of exposure")
    header["XBINNING"] = (1, "X binning")
    header["YBINNING"] = (1, "Y binning")
    header["GAIN"] = (139, "Sensor gain setting")
    header["OFFSET"] = (21, "Sensor offset setting")
    header["CCD-TEMP"] = (ccd_temp, "[C] Sensor temperature")
    header["SET-TEMP"] = (-10.0, "[C] Cooler set point")
    header["INSTRUME"] = ("ZWO ASI1600MM Pro", "Camera")
    header["TELESCOP"] = ("Esprit 100ED", "Telescope")
    header["FOCALLEN"] = (550.0, "[mm] Focal length")
    header["XPIXSZ"] = (3.8, "[um] Pixel width")
    header["YPIXSZ"] = (3.8, "[um] Pixel height")
    header["SWCREATE"] = (program.software, "Capture software")
    return header
