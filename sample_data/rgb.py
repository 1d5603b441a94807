"""Generate a mono three-filter (R, G, B, optionally L) night with ground truth.

Same camera, optics, dithers and header styles as :mod:`sample_data.night` (lights
from N.I.N.A., dusk flats from Sequence Generator Pro, darks and bias from MaxIm DL),
but clean (no meridian flip, no cloudy, blurred or trailed sub) and with colour: each
filter has its own sky level, sky gradient (amplitude and direction), star throughput
and nebula brightness, and every star has an effective temperature. See
:func:`generate_rgb_night`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sample_data import sky
from sample_data.color import COLOUR_RATIO_RANGE
from sample_data.night import (
    _assemble_truth,
    _draw_flat_responses,
    _draw_lights,
    _draw_stars,
    _peak_adu_per_flux,
    _schedule_darks_and_bias,
    _schedule_flats,
    write_frames,
)
from sample_data.sensor import SensorModel, bias_frame_model, draw_hot_pixels
from sample_data.truth import FilterTruth, NightTruth, star_colour_ratio

__all__ = [
    "LUMINANCE_FILTER",
    "RGB_FILTERS",
    "RGB_GENERATOR_VERSION",
    "RGB_GRADIENT_AMPLITUDE",
    "REFERENCE_TEFF",
    "draw_rgb_truth",
    "generate_rgb_night",
    "rgb_filters",
]

RGB_GENERATOR_VERSION = "1.0.0"
RGB_FILTERS = (
    FilterTruth(
        "R",
        exposure=120.0,
        sky_rate=6.0,
        star_throughput=0.85,
        nebula_rate=1.2,
        flat_level=24000.0,
        flat_exposure=3.0,
        wavelength_nm=620.0,
        gradient_scale=1.3,
        gradient_turn_deg=0.0,
    ),
    FilterTruth(
        "G",
        exposure=120.0,
        sky_rate=4.5,
        star_throughput=1.0,
        nebula_rate=0.35,
        flat_level=26000.0,
        flat_exposure=2.5,
        wavelength_nm=530.0,
        gradient_scale=1.0,
        gradient_turn_deg=50.0,
    ),
    FilterTruth(
        "B",
        exposure=120.0,
        sky_rate=3.0,
        star_throughput=0.7,
        nebula_rate=0.45,
        flat_level=20000.0,
        flat_exposure=4.0,
        wavelength_nm=460.0,
        gradient_scale=0.75,
        gradient_turn_deg=-70.0,
    ),
)
LUMINANCE_FILTER = FilterTruth(
    "L",
    exposure=60.0,
    sky_rate=13.0,
    star_throughput=2.5,
    nebula_rate=2.0,
    flat_level=28000.0,
    flat_exposure=1.0,
    wavelength_nm=None,
    gradient_scale=1.0,
    gradient_turn_deg=20.0,
)
RGB_GRADIENT_AMPLITUDE = 0.025
FIELD_TEFF_MEDIAN, FIELD_TEFF_SIGMA_DEX, FIELD_TEFF_RANGE = 5500.0, 0.13, (3000.0, 25000.0)
REFERENCE_TEFF = (3400.0, 4200.0, 5200.0, 6500.0, 6500.0, 8500.0, 13000.0)
REFERENCE_PEAK_ADU = (18000.0, 30000.0)
REFERENCE_MARGIN_PX, REFERENCE_CELL_PX, REFERENCE_JITTER = 35.0, 40.0, 0.2
REFERENCE_GRID = (4, 2)
REFERENCE_ISOLATION_PX = 20.0


def generate_rgb_night(
    outdir: str | Path,
    *,
    rng: np.random.Generator | None = None,
    seed: int = 20261128,
    width: int = 480,
    height: int = 360,
    n_lights_per_filter: int = 5,
    luminance: bool = False,
) -> NightTruth:
    """Write a synthetic raw mono R, G, B (and optionally L) night and its truth to ``outdir``.

    Layout (the styles of :func:`sample_data.generate_night`; uint16 FITS)::

        LIGHT/<date>_<time>_<filter>_<temp>_<exp>s_0001.fits   N.I.N.A., IMAGETYP LIGHT
        Flats/<filter>/Flat_<filter>_0001.fits                  SGP, 8 per filter
        Darks/Dark_120s_0001.fit                                MaxIm DL, 8 per exposure
        Bias/Bias_0001.fit                                      MaxIm DL, 12
        truth/truth.json + *.npy                                ground truth (no FITS)

    Lights are taken filter by filter (L first when ``luminance``, then R, G, B), all
    dithered (up to 15 px and 0.3 degrees), with cosmic rays; no meridian flip and no
    bad sub. The filters (:data:`RGB_FILTERS`, :data:`LUMINANCE_FILTER`) differ in sky
    level (light pollution is redder: R > G > B), sky gradient (amplitude
    ``RGB_GRADIENT_AMPLITUDE * gradient_scale * U(0.8, 1.2)`` centre to corner, direction
    a night-wide random angle plus ``gradient_turn_deg`` plus N(0, 5 deg) per sub), star
    throughput and emission-nebula brightness. A star's flux in a filter is its tabulated
    flux x ``star_throughput`` x its blackbody photon ratio at ``wavelength_nm``
    (R 620, G 530, B 460 nm; L grey), normalised so that a 6500 K star is neutral.
    The first ``truth.n_reference`` stars are reference stars: Teff
    :data:`REFERENCE_TEFF` (two neutral 6500 K ones), peak 18000-30000 ADU in their
    brightest filter in the sharpest seeing (below 60 % of the ADC range after bias
    in every raw light), no other star within 20 px, at least 35 px inside the frame.

    Parameters
    ----------
    outdir : str or Path
        Destination folder (created; existing frames of the same name are overwritten).
    rng : numpy.random.Generator, optional
        Random source; when given, ``seed`` is ignored and recorded as None.
    seed : int
        Seed for ``numpy.random.default_rng`` when ``rng`` is None.
    width, height : int
        Sensor size in pixels (at least 231 x 151, either orientation, for the
        reference-star grid).
    n_lights_per_filter : int
        Lights per filter (at least 1).
    luminance : bool
        Also shoot an L filter (60 s subs, grey star colours), before R, G and B.

    Returns
    -------
    NightTruth
        The ground truth, also saved under ``outdir/truth``. Per filter:
        ``truth.filters[name]``; per light: ``sky_adu``, ``sky_gradient``,
        ``sky_gradient_angle``, :meth:`NightTruth.sky_gradient_image`,
        :meth:`NightTruth.nebula_image`, :meth:`NightTruth.clean_background`; stars:
        :meth:`NightTruth.stars_in_sensor` (with ``teff`` and ``reference``),
        :meth:`NightTruth.reference_stars`, :meth:`NightTruth.star_colour`.

    Raises
    ------
    ValueError
        If the sensor is too small for the reference stars or there is no light.
    """
    _validate(width, height, n_lights_per_filter)
    root = Path(outdir)
    generator = rng if rng is not None else np.random.default_rng(seed)
    truth = draw_rgb_truth(
        generator,
        width,
        height,
        n_lights_per_filter,
        rgb_filters(luminance),
        seed=None if rng is not None else seed,
        root=root,
    )
    write_frames(truth, generator)
    truth.save(root)
    return truth


def rgb_filters(luminance: bool = False) -> tuple[FilterTruth, ...]:
    """The filters of the RGB night in shooting order: ``(L,) R, G, B``."""
    return ((LUMINANCE_FILTER,) if luminance else ()) + RGB_FILTERS


def _minimum_size() -> tuple[int, int]:
    """Smallest ``(long side, short side)`` that holds the reference-star grid."""
    long_cells, short_cells = REFERENCE_GRID

    def side(cells: int) -> int:
        return math.ceil(2 * REFERENCE_MARGIN_PX + cells * REFERENCE_CELL_PX + 1)

    return side(long_cells), side(short_cells)


def _validate(width: int, height: int, n_lights: int) -> None:
    """Reject settings the RGB night cannot be built with."""
    long_side, short_side = _minimum_size()
    if max(width, height) < long_side or min(width, height) < short_side:
        raise ValueError(
            f"sensor must be at least {long_side}x{short_side} pixels (either orientation) "
            f"to hold the reference stars, got {width}x{height}"
        )
    if n_lights < 1:
        raise ValueError(f"n_lights_per_filter must be at least 1, got {n_lights}")


def draw_rgb_truth(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_lights: int,
    filters: tuple[FilterTruth, ...],
    *,
    seed: int | None,
    root: Path | None,
) -> NightTruth:
    """Draw every random parameter of the RGB night (no pixels rendered, nothing written).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    width, height : int
        Sensor size.
    n_lights : int
        Lights per filter.
    filters : tuple of FilterTruth
        Filters in shooting order (see :func:`rgb_filters`).
    seed : int or None
        Seed to record.
    root : Path or None
        Night folder to record.

    Returns
    -------
    NightTruth
        The complete truth (``stars`` with a temperature column, ``n_reference`` set).
    """
    shape = (height, width)
    sensor = SensorModel()
    bias = bias_frame_model(rng, shape, sensor)
    hot = draw_hot_pixels(rng, shape, sensor)
    responses = _draw_flat_responses(rng, shape, filters)
    stars, n_reference = _draw_coloured_stars(rng, width, height, filters)
    nebula = _draw_compact_nebula(rng, width, height)
    flats = _schedule_flats(rng, filters)
    lights, clock = _draw_lights(
        rng,
        shape,
        n_lights,
        gradient_amplitude=RGB_GRADIENT_AMPLITUDE,
        filters=filters,
        specials=False,
        flip=False,
    )
    exposures = tuple(sorted({f.exposure for f in filters}))
    darks, biases = _schedule_darks_and_bias(rng, clock, exposures)
    return _assemble_truth(
        RGB_GENERATOR_VERSION,
        seed,
        root,
        sensor,
        filters,
        nebula=nebula,
        light_frames=lights,
        bias_frames=biases,
        dark_frames=darks,
        flat_frames=flats,
        stars=stars,
        hot_pixels=hot,
        bias_pattern=bias,
        flat_responses=responses,
        n_reference=n_reference,
    )


def _star_colour(filters: tuple[FilterTruth, ...], teff: float) -> dict[str, float]:
    """Colour factor of a ``teff`` star in each coloured filter (grey filters left out)."""
    return {
        f.name: float(star_colour_ratio(np.array([teff]), f.wavelength_nm)[0])
        for f in filters
        if f.wavelength_nm is not None
    }


def _draw_coloured_stars(
    rng: np.random.Generator, width: int, height: int, filters: tuple[FilterTruth, ...]
) -> tuple[NDArray[np.float64], int]:
    """Reference stars, then field stars with temperatures.

    Returns an ``(n, 4)`` table (sky ``x, y``, grey flux in e-/s, Teff in K) and the
    number of reference stars. Field stars follow :func:`sample_data.night._draw_stars`,
    scaled so that the brightest possible one, at the reddest or bluest clipped colour,
    peaks at ``STAR_PEAK_LIMIT_ADU`` in its brightest filter; their temperatures are
    log-normal around 5500 K. Field stars within ``REFERENCE_ISOLATION_PX`` of a
    reference star are dropped.
    """
    headroom = {f.name: COLOUR_RATIO_RANGE[1] for f in filters if f.wavelength_nm is not None}
    peak_per_flux = _peak_adu_per_flux(filters, headroom)
    field = _draw_stars(rng, width, height, peak_adu_per_flux=peak_per_flux)
    log_teff = rng.normal(math.log10(FIELD_TEFF_MEDIAN), FIELD_TEFF_SIGMA_DEX, len(field))
    field = np.column_stack([field, np.clip(10.0**log_teff, *FIELD_TEFF_RANGE)])
    references = _draw_reference_stars(rng, width, height, filters)
    distance = np.hypot(
        field[:, None, 0] - references[None, :, 0], field[:, None, 1] - references[None, :, 1]
    )
    field = field[distance.min(axis=1) > REFERENCE_ISOLATION_PX]
    return np.vstack([references, field]), len(references)


def _draw_reference_stars(
    rng: np.random.Generator, width: int, height: int, filters: tuple[FilterTruth, ...]
) -> NDArray[np.float64]:
    """``(len(REFERENCE_TEFF), 4)`` bright, unsaturated reference stars on a jittered grid."""
    positions = _reference_positions(rng, width, height, len(REFERENCE_TEFF))
    rows = []
    for (x, y), teff in zip(positions, REFERENCE_TEFF, strict=True):
        peak = float(rng.uniform(*REFERENCE_PEAK_ADU))
        flux = peak / _peak_adu_per_flux(filters, _star_colour(filters, teff))
        rows.append([x, y, flux, teff])
    return np.array(rows, dtype=np.float64)


def _reference_positions(
    rng: np.random.Generator, width: int, height: int, n: int
) -> list[tuple[float, float]]:
    """``n`` sky positions in distinct cells of a grid inside the margin, jittered.

    The grid (``REFERENCE_GRID``, long side first) has cells of at least
    ``REFERENCE_CELL_PX``, so neighbours are at least ``(1 - 2 * REFERENCE_JITTER)``
    cells apart; the margin keeps every star well inside every dithered sub.
    """
    long_cells, short_cells = REFERENCE_GRID
    cols, rows = (long_cells, short_cells) if width >= height else (short_cells, long_cells)
    margin = REFERENCE_MARGIN_PX
    cell_w = (width - 1 - 2 * margin) / cols
    cell_h = (height - 1 - 2 * margin) / rows
    cells = rng.permutation(cols * rows)[:n]
    jitter = rng.uniform(-REFERENCE_JITTER, REFERENCE_JITTER, (n, 2))
    return [
        (
            margin + (int(cell) % cols + 0.5 + float(jx)) * cell_w,
            margin + (int(cell) // cols + 0.5 + float(jy)) * cell_h,
        )
        for cell, (jx, jy) in zip(cells, jitter, strict=True)
    ]


def _draw_compact_nebula(
    rng: np.random.Generator, width: int, height: int
) -> tuple[sky.NebulaBlob, ...]:
    """A compact emission nebula (a core and two lobes) leaving most of the field as sky.

    Its widths scale with the frame (major sigma 4-9 % of the longer side), so at least
    half of every frame is sky darker than a thousandth of the nebula's peak: the
    background extraction has sky to sample, as on a galaxy or planetary nebula field.
    """
    size = max(width, height)
    cx = (width - 1) / 2 + rng.uniform(-0.1, 0.1) * width
    cy = (height - 1) / 2 + rng.uniform(-0.1, 0.1) * height
    blobs = []
    for amplitude in (1.0, 0.6, 0.5):
        major = float(rng.uniform(0.04, 0.09) * size)
        blobs.append(
            sky.NebulaBlob(
                x=float(cx + rng.normal(0.0, 0.03 * size)),
                y=float(cy + rng.normal(0.0, 0.03 * size)),
                sigma_major=major,
                sigma_minor=float(major * rng.uniform(0.4, 0.9)),
                angle=float(rng.uniform(0.0, math.pi)),
                amplitude=amplitude,
            )
        )
    return tuple(blobs)
