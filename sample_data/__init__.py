"""Synthetic "sample night" of raw astrophotography frames with ground truth.

>>> from sample_data import generate_night, load_truth
>>> truth = generate_night("sample_night")          # doctest: +SKIP
>>> truth.lights("L")[0].sky_to_sensor               # doctest: +SKIP

A one-shot-colour (Bayer CFA) night:

>>> from sample_data import generate_color_night
>>> color = generate_color_night("osc_night")       # doctest: +SKIP
>>> color.star_channel_flux_adu(0)                   # doctest: +SKIP

A mono R, G, B night (each filter its own sky, gradient, throughput and star colours):

>>> from sample_data import generate_rgb_night
>>> rgb = generate_rgb_night("rgb_night")            # doctest: +SKIP
>>> rgb.reference_stars(rgb.lights("R")[0])          # doctest: +SKIP

Nights at real scale (4096x3072, saturated stars, seeing 2-4.5 px) and of elongated stars:

>>> from sample_data import generate_elongated_night, generate_large_night
>>> big = generate_large_night("big_night", n_lights=4)   # doctest: +SKIP
>>> big.stars_with_raw_peaks(0)["saturated"].sum()        # doctest: +SKIP
"""

from sample_data.color import generate_color_night
from sample_data.color_truth import ColorLightTruth, ColorNightTruth, load_color_truth
from sample_data.large import generate_elongated_night, generate_large_night
from sample_data.night import generate_night
from sample_data.rgb import generate_rgb_night
from sample_data.truth import LightTruth, NightTruth, load_truth

__all__ = [
    "ColorLightTruth",
    "ColorNightTruth",
    "LightTruth",
    "NightTruth",
    "generate_color_night",
    "generate_elongated_night",
    "generate_large_night",
    "generate_night",
    "generate_rgb_night",
    "load_color_truth",
    "load_truth",
]
