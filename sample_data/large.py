"""Nights at real scale: a full-size single-filter night and a night of elongated stars.

Both are presets of :func:`sample_data.night.generate_night`; every keyword it takes can
be overridden.

>>> from sample_data import generate_large_night
>>> truth = generate_large_night("big_night", n_lights=2)   # doctest: +SKIP
>>> truth.light_summary(0)["fwhm"]                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from sample_data.night import FILTERS, generate_night
from sample_data.truth import NightTruth

__all__ = [
    "ELONGATED_SEED",
    "LARGE_SEED",
    "generate_elongated_night",
    "generate_large_night",
    "large_night_options",
]

LARGE_SEED = 20261201
ELONGATED_SEED = 20261202
LARGE_EXPOSURE = 120.0
LARGE_FWHM = 3.0
LARGE_FWHM_RANGE = (2.0 / 3.0, 1.5)  # 2.0 to 4.5 px
LARGE_STARS_PER_MPIX = 1390.0
"""Catalogue stars per million sensor pixels (about a third detected at 5 sigma)."""
LARGE_STAR_PEAK_LIMIT_ADU = 2.0e6
LARGE_STAR_DYNAMIC_RANGE = 1.0e5
LARGE_STAR_COUNT_SLOPE = 0.45
COSMIC_RAYS_PER_MPIX_MINUTE = 15.0 / (640 * 480 / 1e6)
"""The default night's 15 hits per 60-s sub of 640x480, per megapixel and minute."""


def _l_filter(exposure: float) -> Any:
    """The L filter of :data:`FILTERS` with another light exposure."""
    luminance = next(f for f in FILTERS if f.name == "L")
    return dataclasses.replace(luminance, exposure=exposure)


def large_night_options(width: int, height: int, *, exposure: float = LARGE_EXPOSURE) -> dict:
    """Keyword arguments of :func:`generate_night` for the real-scale night.

    Star and cosmic-ray counts scale with the sensor area, so a smaller sensor gets the
    same density per pixel (the tests use 1024x768 for what 4096x3072 gives at scale).

    Parameters
    ----------
    width, height : int
        Sensor size (pixels).
    exposure : float
        Light exposure (s).

    Returns
    -------
    dict
        Options for :func:`generate_night` (all but ``outdir``, the random source and
        the number of lights).
    """
    mpix = width * height / 1e6
    return {
        "width": width,
        "height": height,
        "filters": (_l_filter(exposure),),
        "fwhm": LARGE_FWHM,
        "fwhm_range": LARGE_FWHM_RANGE,
        "star_peak_limit_adu": LARGE_STAR_PEAK_LIMIT_ADU,
        "star_dynamic_range": LARGE_STAR_DYNAMIC_RANGE,
        "star_count_slope": LARGE_STAR_COUNT_SLOPE,
        "stars_in_frame": int(round(LARGE_STARS_PER_MPIX * mpix)),
        "cosmic_ray_count": COSMIC_RAYS_PER_MPIX_MINUTE * mpix * exposure / 60.0,
        "n_bias": 20,
        "n_darks": 15,
        "n_flats": 15,
        "dark_exposures": (exposure,),
    }


def generate_large_night(
    outdir: str | Path,
    *,
    seed: int = LARGE_SEED,
    rng: np.random.Generator | None = None,
    width: int = 4096,
    height: int = 3072,
    n_lights: int = 40,
    **overrides: Any,
) -> NightTruth:
    """Write a night at real scale: one L filter, saturated stars, a wide seeing spread.

    ``n_lights`` 120-s L subs (half after the meridian flip) with a realistic star
    density (about 4000 stars detected at 5 sigma per 4096x3072 sub, the brightest
    100000 times the faintest catalogue star), about 200 saturated stars a sub (clipped
    at 65535 in the raw files, with the brightest ~60 saturated in every sub but the
    cloudy and the blurred one), a true FWHM per sub uniform in 2.0-4.5 px, cosmic rays at
    the default night's rate per pixel and minute, one cloudy, one blurred (x 2.5) and
    one satellite-trail sub; 20 bias, 15 darks of 120 s, 15 flats.

    Parameters
    ----------
    outdir : str or Path
        Destination folder.
    seed : int
        Seed of ``numpy.random.default_rng`` when ``rng`` is None.
    rng : numpy.random.Generator, optional
        Random source (``seed`` then ignored).
    width, height : int
        Sensor size; the star and cosmic-ray counts scale with its area.
    n_lights : int
        Number of lights (at least 4).
    **overrides
        Any other keyword of :func:`generate_night`, replacing the preset's value (see
        :func:`large_night_options`).

    Returns
    -------
    NightTruth
        The night's truth (also written under ``outdir/truth``).
    """
    options = large_night_options(width, height)
    options.update(overrides)
    return generate_night(outdir, seed=seed, rng=rng, n_lights_per_filter=n_lights, **options)


def generate_elongated_night(
    outdir: str | Path,
    *,
    seed: int = ELONGATED_SEED,
    rng: np.random.Generator | None = None,
    width: int = 1024,
    height: int = 768,
    n_lights: int = 20,
    eccentricity: float = 0.65,
    eccentricity_spread: float = 0.1,
    **overrides: Any,
) -> NightTruth:
    """Write a night whose optics elongate every star (tilt, coma, astigmatism).

    ``n_lights`` 60-s L subs whose elliptical Moffat PSF has an eccentricity drawn per
    sub from ``N(eccentricity, eccentricity_spread)`` (clipped to ``[0, 0.95]``) and a
    major axis fixed on the sensor for the night (+/- 3 degrees per sub); FWHM (the
    geometric mean of the axis FWHMs) 2.8 px x U(0.9, 1.1), unsaturated stars, the usual
    cloudy, blurred and trail subs; 12 bias, 8 darks of 60 s, 8 flats.

    Parameters
    ----------
    outdir : str or Path
        Destination folder.
    seed : int
        Seed of ``numpy.random.default_rng`` when ``rng`` is None.
    rng : numpy.random.Generator, optional
        Random source (``seed`` then ignored).
    width, height : int
        Sensor size.
    n_lights : int
        Number of lights (at least 4).
    eccentricity, eccentricity_spread : float
        Median and spread of the per-sub eccentricity.
    **overrides
        Any other keyword of :func:`generate_night`.

    Returns
    -------
    NightTruth
        The night's truth (also written under ``outdir/truth``).
    """
    options: dict[str, Any] = {
        "width": width,
        "height": height,
        "filters": ("L",),
        "stars_in_frame": int(round(600 * width * height / (1024 * 768))),
        "eccentricity": eccentricity,
        "eccentricity_spread": eccentricity_spread,
        "dark_exposures": (60.0,),
    }
    options.update(overrides)
    return generate_night(outdir, seed=seed, rng=rng, n_lights_per_filter=n_lights, **options)
