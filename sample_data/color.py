"""Generate a small raw night of a one-shot-colour (Bayer CFA) camera with ground truth.

One target shot with a ZWO ASI2600MC Pro through N.I.N.A. (no filter), dusk
flats, then darks at the light exposure and bias. Every frame is a raw CFA
mosaic; see :func:`generate_color_night` and :mod:`sample_data.color_truth`
for the conventions.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from sample_data import sky
from sample_data.color_truth import (
    CHANNELS,
    PATTERNS,
    ColorLightTruth,
    ColorNightTruth,
    cfa_channel_index,
)
from sample_data.night import _ccd_temp, _Clock, _draw_donuts, _draw_nebula, _write
from sample_data.sensor import (
    SensorModel,
    bias_frame_model,
    cosmic_rays,
    dark_current_map,
    draw_hot_pixels,
    read_out,
)
from sample_data.truth import CalibrationFrameTruth, SensorTruth

__all__ = [
    "COLOR_GENERATOR_VERSION",
    "colour_ratios",
    "draw_color_truth",
    "generate_color_night",
    "write_color_frames",
]

COLOR_GENERATOR_VERSION = "1.0.0"
EXPOSURE = 120.0
FLAT_EXPOSURE = 1.0
QE = {"R": 0.75, "G": 1.0, "B": 0.85}
SKY_RATE = {"R": 5.2, "G": 4.0, "B": 3.2}  # light pollution R:G:B = 1.3 : 1 : 0.8
SKY_GRADIENT_TINT = {"R": 1.3, "G": 1.0, "B": 0.7}  # the glow towards the town is redder
NEBULA_RATE = {"R": 1.2, "G": 0.35, "B": 0.45}  # emission nebula: H-alpha, some OIII/H-beta
FLAT_LEVEL = {"R": 0.7 * 25000.0, "G": 25000.0, "B": 0.5 * 25000.0}
VIGNETTING_LOSS = {"R": 0.23, "G": 0.25, "B": 0.27}
DUST_DEPTH_TINT = {"R": 0.9, "G": 1.0, "B": 1.15}
COLOUR_WAVELENGTHS_NM = (620.0, 530.0, 460.0)
NEUTRAL_TEFF = 6500.0
COLOUR_RATIO_RANGE = (0.5, 2.0)
FWHM = 3.6
STARS_IN_FRAME = 250
STAR_PEAK_LIMIT_ADU = 30000.0
STAR_DYNAMIC_RANGE = 800.0
STAR_COUNT_SLOPE = 0.7
REFERENCE_TEFF = (3400.0, 4200.0, 5200.0, 6500.0, 8500.0, 13000.0)
REFERENCE_PEAK_ADU = (0.6 * 45000.0, 45000.0)
REFERENCE_MARGIN_PX, REFERENCE_SEPARATION_PX, REFERENCE_ISOLATION_PX = 50.0, 80.0, 30.0
DITHER_PX, DITHER_DEG = 10.0, 0.3
N_BIAS, N_DARKS, N_FLATS = 12, 8, 8
COSMIC_RAYS_PER_LIGHT = 20.0
FLATS_START = datetime(2026, 11, 27, 16, 28, 5)
LIGHTS_START = datetime(2026, 11, 27, 20, 41, 37)
OBJECT = "IC 1396"
SOFTWARE = "N.I.N.A. 3.1.2.9001"
INSTRUMENT = "ZWO ASI2600MC Pro"


def generate_color_night(
    outdir: str | Path,
    *,
    rng: np.random.Generator | None = None,
    seed: int = 20261127,
    width: int = 640,
    height: int = 480,
    n_lights: int = 10,
    pattern: str = "RGGB",
) -> ColorNightTruth:
    """Write a synthetic raw one-shot-colour night and its ground truth to ``outdir``.

    Layout (N.I.N.A. style, all ``.fits``, raw uint16 CFA mosaics)::

        LIGHT/<date>_<time>_<temp>_120.00s_0001.fits   n_lights lights
        FLAT/<date>_<time>_<temp>_1.00s_0001.fits      8 flats
        DARK/<date>_<time>_<temp>_120.00s_0001.fits    8 darks
        BIAS/<date>_<time>_<temp>_0.00s_0001.fits      12 bias
        truth/truth.json + *.npy                       ground truth (no FITS)

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
    n_lights : int
        Number of lights (at least 1).
    pattern : str
        Bayer pattern written as BAYERPAT: ``"RGGB"``, ``"BGGR"``, ``"GRBG"`` or
        ``"GBRG"`` (row-major over the 2x2 cell at pixel ``[0, 0]``).

    Returns
    -------
    ColorNightTruth
        The ground truth, also saved as ``outdir/truth/truth.json`` plus ``.npy`` arrays.

    Raises
    ------
    ValueError
        If the sensor is too small, there is no light, or the pattern is unknown.
    """
    if width < 128 or height < 128:
        raise ValueError(f"sensor must be at least 128x128 pixels, got {width}x{height}")
    if n_lights < 1:
        raise ValueError(f"n_lights must be at least 1, got {n_lights}")
    if pattern not in PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r}; expected one of {PATTERNS}")
    root = Path(outdir)
    generator = rng if rng is not None else np.random.default_rng(seed)
    truth = draw_color_truth(
        generator,
        width,
        height,
        n_lights,
        pattern,
        seed=None if rng is not None else seed,
        root=root,
    )
    write_color_frames(truth, generator)
    truth.save(root)
    return truth


def draw_color_truth(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_lights: int,
    pattern: str,
    *,
    seed: int | None,
    root: Path | None,
) -> ColorNightTruth:
    """Draw every random parameter of the colour night (no pixels rendered).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    width, height : int
        Sensor size.
    n_lights : int
        Number of lights.
    pattern : str
        Bayer pattern.
    seed : int or None
        Seed to record.
    root : Path or None
        Night folder to record.

    Returns
    -------
    ColorNightTruth
        The complete truth.
    """
    shape = (height, width)
    sensor = SensorModel()
    bias = bias_frame_model(rng, shape, sensor)
    hot = draw_hot_pixels(rng, shape, sensor)
    responses = _draw_flat_responses(rng, shape, pattern)
    stars, n_reference = _draw_stars(rng, width, height)
    nebula = _draw_nebula(rng, width, height)
    flats = _schedule(rng, _Clock(_start(rng, FLATS_START)), "FLAT", FLAT_EXPOSURE, N_FLATS)
    lights, clock = _draw_lights(rng, shape, n_lights)
    clock.advance(rng.uniform(900.0, 1200.0))
    darks = _schedule(rng, clock, "DARK", EXPOSURE, N_DARKS)
    biases = _schedule(rng, clock, "BIAS", 0.0, N_BIAS)
    return ColorNightTruth(
        version=COLOR_GENERATOR_VERSION,
        seed=seed,
        width=width,
        height=height,
        pattern=pattern,
        psf_beta=sky.MOFFAT_BETA,
        exposure=EXPOSURE,
        sensor=SensorTruth(sensor.gain, sensor.read_noise, sensor.bias_level, sensor.dark_current),
        qe=dict(QE),
        sky_rate=dict(SKY_RATE),
        nebula_rate=dict(NEBULA_RATE),
        flat_level=dict(FLAT_LEVEL),
        flat_exposure=FLAT_EXPOSURE,
        nebula=nebula,
        light_frames=lights,
        bias_frames=biases,
        dark_frames=darks,
        flat_frames=flats,
        n_reference=n_reference,
        stars=stars,
        hot_pixels=hot,
        bias_pattern=bias,
        dark_current=dark_current_map(shape, sensor, hot),
        flat_responses=responses,
        root=root,
    )


def _start(rng: np.random.Generator, when: datetime) -> datetime:
    """``when`` plus a random fraction of a second."""
    return when + timedelta(milliseconds=int(rng.integers(0, 1000)))


def _draw_flat_responses(
    rng: np.random.Generator, shape: tuple[int, int], pattern: str
) -> dict[str, NDArray[np.float32]]:
    """Vignetting x dust x PRNU per channel, each median-1 on its own CFA sites.

    The optical axis, the dust motes and the PRNU are common; the channels
    differ slightly in vignetting depth and in how dark the dust shadows are.
    """
    height, width = shape
    centre = (
        (width - 1) / 2 + rng.uniform(-0.05, 0.05) * width,
        (height - 1) / 2 + rng.uniform(-0.05, 0.05) * height,
    )
    prnu = 1.0 + rng.normal(0.0, 0.005, shape)
    donuts = _draw_donuts(rng, shape, 4)
    sites = cfa_channel_index(pattern, shape)
    responses = {}
    for k, channel in enumerate(CHANNELS):
        tint = DUST_DEPTH_TINT[channel]
        tinted = tuple(dataclasses.replace(d, depth=d.depth * tint) for d in donuts)
        response = (
            sky.vignetting(shape, centre, corner_loss=VIGNETTING_LOSS[channel])
            * sky.dust_transmission(shape, tinted)
            * prnu
        )
        responses[channel] = (response / np.median(response[sites == k])).astype(np.float32)
    return responses


def colour_ratios(teff: NDArray[np.float64]) -> NDArray[np.float64]:
    """Photon-rate ratios ``(R/G, 1, B/G)`` of blackbodies, neutral at 6500 K.

    Planck photon spectra sampled at 620, 530 and 460 nm, divided by the same
    for ``NEUTRAL_TEFF`` and clipped to ``COLOUR_RATIO_RANGE``.

    Parameters
    ----------
    teff : ndarray
        Effective temperatures (K).

    Returns
    -------
    ndarray
        ``(n, 3)`` ratios, G column exactly 1.
    """
    lam = np.array(COLOUR_WAVELENGTHS_NM)

    def photons(t: NDArray[np.float64]) -> NDArray[np.float64]:
        spectrum = lam[None, :] ** -4 / np.expm1(1.4387769e7 / (lam[None, :] * t[:, None]))
        return spectrum / spectrum[:, 1:2]

    ratios = photons(np.atleast_1d(teff)) / photons(np.array([NEUTRAL_TEFF]))
    ratios = np.clip(ratios, *COLOUR_RATIO_RANGE)
    ratios[:, 1] = 1.0
    return ratios


def _draw_stars(
    rng: np.random.Generator, width: int, height: int
) -> tuple[NDArray[np.float64], int]:
    """Coloured stars on a sky disc that covers every dithered sub.

    Returns an ``(n, 6)`` array (sky ``x, y``, photon rates ``R, G, B`` in e-/s at
    QE 1 and transmission 1, temperature) and the number of reference stars,
    which come first: bright, with a spread of colours, placed well inside every
    sub, and with no other catalogue star within ``REFERENCE_ISOLATION_PX``.
    The other stars' G rates follow a truncated power law ``N(>F) ~ F**-0.7``
    whose brightest possible star peaks at ``STAR_PEAK_LIMIT_ADU`` in its
    brightest channel in the sharpest seeing.
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    radius = math.hypot(cx, cy) + math.sqrt(2) * DITHER_PX + 20.0
    n = int(round(STARS_IN_FRAME * math.pi * radius**2 / (width * height)))
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, n))
    theta = rng.uniform(0.0, 2 * math.pi, n)
    f_max = STAR_PEAK_LIMIT_ADU / _peak_adu_per_flux(max(_brightest_channel_factor(), 1.0))
    f_min = f_max / STAR_DYNAMIC_RANGE
    tail = 1.0 - (f_min / f_max) ** STAR_COUNT_SLOPE
    flux_g = f_min * (1.0 - rng.uniform(0.0, 1.0, n) * tail) ** (-1.0 / STAR_COUNT_SLOPE)
    teff = np.clip(10.0 ** rng.normal(math.log10(5500.0), 0.13, n), 3000.0, 25000.0)
    rates = colour_ratios(teff) * flux_g[:, None]
    field = np.column_stack([cx + r * np.cos(theta), cy + r * np.sin(theta), rates, teff])
    references = _draw_reference_stars(rng, width, height)
    if references.size:
        distance = np.hypot(
            field[:, 0, None] - references[None, :, 0], field[:, 1, None] - references[None, :, 1]
        )
        field = field[distance.min(axis=1) > REFERENCE_ISOLATION_PX]
    return np.vstack([references, field]), len(references)


def _brightest_channel_factor(ratios: NDArray[np.float64] | None = None) -> float:
    """Largest ``ratio * QE`` over channels (the worst case when ``ratios`` is None)."""
    qe = np.array([QE[c] for c in CHANNELS])
    if ratios is None:
        return float(COLOUR_RATIO_RANGE[1] * qe.max())
    return float((ratios * qe).max())


def _peak_adu_per_flux(channel_factor: float) -> float:
    """Moffat peak (ADU) per e-/s of G photon rate in the sharpest seeing."""
    per_flux = channel_factor * EXPOSURE / SensorModel().gain
    return float(sky.moffat_peak(per_flux, FWHM * 0.9))


def _draw_reference_stars(rng: np.random.Generator, width: int, height: int) -> NDArray[np.float64]:
    """Bright stars of known spread of colours, well apart and well inside the frame."""
    positions: list[tuple[float, float]] = []
    lo = REFERENCE_MARGIN_PX
    if width <= 2 * lo or height <= 2 * lo:
        return np.zeros((0, 6))
    for _ in range(2000):
        if len(positions) == len(REFERENCE_TEFF):
            break
        x, y = float(rng.uniform(lo, width - 1 - lo)), float(rng.uniform(lo, height - 1 - lo))
        if all(math.hypot(x - px, y - py) > REFERENCE_SEPARATION_PX for px, py in positions):
            positions.append((x, y))
    teff = np.array(REFERENCE_TEFF[: len(positions)])
    ratios = colour_ratios(teff)
    rows = []
    for (x, y), t, ratio in zip(positions, teff, ratios, strict=True):
        peak = float(rng.uniform(*REFERENCE_PEAK_ADU))
        flux_g = peak / _peak_adu_per_flux(_brightest_channel_factor(ratio))
        rows.append([x, y, *(ratio * flux_g), t])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def _schedule(
    rng: np.random.Generator, clock: _Clock, kind: str, exposure: float, n: int
) -> tuple[CalibrationFrameTruth, ...]:
    """``n`` calibration frames of one kind, in N.I.N.A. naming."""
    frames = []
    for k in range(n):
        ccd_temp = _ccd_temp(rng)
        frames.append(
            CalibrationFrameTruth(
                path=_nina_path(kind, clock.now, ccd_temp, exposure, k),
                kind=kind.lower(),
                exposure=exposure,
                date_obs=clock.stamp(),
                ccd_temp=ccd_temp,
            )
        )
        clock.advance(exposure + rng.uniform(1.5, 3.0))
    return tuple(frames)


def _nina_path(kind: str, when: datetime, ccd_temp: float, exposure: float, k: int) -> str:
    """N.I.N.A.-style relative path ``KIND/date_time_temp_exps_nnnn.fits``."""
    return f"{kind}/{when:%Y-%m-%d_%H-%M-%S}_{ccd_temp:.2f}_{exposure:.2f}s_{k + 1:04d}.fits"


def _draw_lights(
    rng: np.random.Generator, shape: tuple[int, int], n_lights: int
) -> tuple[tuple[ColorLightTruth, ...], _Clock]:
    """Dithered lights in session order."""
    height, width = shape
    base_angle = float(rng.uniform(0.0, 2 * math.pi))
    base_gradient = 0.03 * float(rng.uniform(0.8, 1.2))
    clock = _Clock(_start(rng, LIGHTS_START))
    lights = []
    for k in range(n_lights):
        ccd_temp = _ccd_temp(rng)
        fwhm = FWHM * float(rng.uniform(0.9, 1.1))
        transmission = float(rng.uniform(0.93, 1.0))
        sky_scale = float(rng.uniform(0.97, 1.05))
        angle = math.radians(rng.uniform(-DITHER_DEG, DITHER_DEG))
        shift = rng.uniform(-DITHER_PX, DITHER_PX, 2)
        matrix = sky.dither_matrix(((width - 1) / 2, (height - 1) / 2), angle, tuple(shift))
        gradient_angle = (base_angle + math.radians(rng.normal(0.0, 5.0))) % (2 * math.pi)
        lights.append(
            ColorLightTruth(
                index=k,
                path=_nina_path("LIGHT", clock.now, ccd_temp, EXPOSURE, k),
                exposure=EXPOSURE,
                date_obs=clock.stamp(),
                ccd_temp=ccd_temp,
                matrix=tuple(tuple(float(v) for v in row) for row in matrix),
                fwhm=fwhm,
                transmission=transmission,
                sky_adu=tuple(
                    SKY_RATE[c] * sky_scale * EXPOSURE / SensorModel().gain for c in CHANNELS
                ),
                sky_gradient=tuple(base_gradient * SKY_GRADIENT_TINT[c] for c in CHANNELS),
                sky_gradient_angle=gradient_angle,
                cosmic_rays=cosmic_rays(rng, shape, mean_count=COSMIC_RAYS_PER_LIGHT),
            )
        )
        clock.advance(EXPOSURE + rng.uniform(6.0, 12.0))
    return tuple(lights), clock


def write_color_frames(truth: ColorNightTruth, rng: np.random.Generator) -> None:
    """Render, add noise to and write every frame of ``truth`` under ``truth.root``.

    Parameters
    ----------
    truth : ColorNightTruth
        The night to render (``root`` must be set).
    rng : numpy.random.Generator
        Random source for the noise.
    """
    sensor = SensorModel()
    response = truth.cfa_flat_response().astype(np.float64)
    for light in truth.light_frames:
        electrons = (
            truth.mosaic(truth.clean_sky_rgb(light)) * (sensor.gain * response)
            + truth.dark_current * light.exposure
        )
        data = read_out(rng, electrons, truth.bias_pattern, sensor, light.cosmic_rays)
        _write(truth.path(light.path), data, _header(truth, light, "LIGHT"))
    levels = truth.mosaic(np.stack([np.full(truth.shape, truth.flat_level[c]) for c in CHANNELS]))
    for frame in truth.flat_frames + truth.dark_frames + truth.bias_frames:
        electrons = truth.dark_current * frame.exposure
        if frame.kind == "flat":
            scale = 1.0 + rng.normal(0.0, 0.01)
            electrons = electrons + levels * (scale * sensor.gain) * response
        data = read_out(rng, electrons, truth.bias_pattern, sensor)
        _write(truth.path(frame.path), data, _header(truth, frame, frame.kind.upper()))


def _header(
    truth: ColorNightTruth, frame: ColorLightTruth | CalibrationFrameTruth, imagetyp: str
) -> fits.Header:
    """N.I.N.A.-style header of a colour camera frame (no FILTER card)."""
    header = fits.Header()
    header["IMAGETYP"] = (imagetyp, "Type of exposure")
    header["EXPOSURE"] = (float(frame.exposure), "[s] Exposure duration")
    header["EXPTIME"] = (float(frame.exposure), "[s] Exposure duration")
    header["DATE-OBS"] = (frame.date_obs, "UTC start of exposure")
    header["XBINNING"] = (1, "X binning")
    header["YBINNING"] = (1, "Y binning")
    header["GAIN"] = (100, "Sensor gain setting")
    header["OFFSET"] = (50, "Sensor offset setting")
    header["CCD-TEMP"] = (frame.ccd_temp, "[C] Sensor temperature")
    header["SET-TEMP"] = (-10.0, "[C] Cooler set point")
    header["INSTRUME"] = (INSTRUMENT, "Camera")
    header["TELESCOP"] = ("RedCat 51", "Telescope")
    header["FOCALLEN"] = (250.0, "[mm] Focal length")
    header["XPIXSZ"] = (3.76, "[um] Pixel width")
    header["YPIXSZ"] = (3.76, "[um] Pixel height")
    header["BAYERPAT"] = (truth.pattern, "Bayer color pattern")
    header["XBAYROFF"] = (0, "X offset of Bayer array")
    header["YBAYROFF"] = (0, "Y offset of Bayer array")
    header["ROWORDER"] = ("TOP-DOWN", "Order of the rows in image array")
    if imagetyp == "LIGHT":
        header["OBJECT"] = (OBJECT, "Target")
    header["SWCREATE"] = (SOFTWARE, "Capture software")
    return header
