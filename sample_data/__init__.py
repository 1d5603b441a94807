"""Synthetic "sample night" of raw astrophotography frames with ground truth.

>>> from sample_data import generate_night, load_truth
>>> truth = generate_night("sample_night")          # doctest: +SKIP
>>> truth.lights("L")[0].sky_to_sensor               # doctest: +SKIP
"""

from sample_data.night import generate_night
from sample_data.truth import LightTruth, NightTruth, load_truth

__all__ = ["LightTruth", "NightTruth", "generate_night", "load_truth"]
