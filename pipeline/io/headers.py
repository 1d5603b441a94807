"""Header keyword aliases and tolerant card parsing.

Capture programs disagree on keyword names and sometimes write invalid cards (for example
``EXPTIME = 6,4E-05`` with a decimal comma). This module turns a header into a
:class:`~pipeline.frames.FrameMetadata` and says exactly which card failed when one cannot be used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from astropy.io import fits

from pipeline.errors import HeaderError

__all__ = [
    "BAYER_KEYS",
    "EXPOSURE_KEYS",
    "FILTER_KEYS",
    "TYPE_KEYS",
    "card_values",
    "first_number",
    "first_text",
]

TYPE_KEYS = ("IMAGETYP", "FRAME", "FRAMETYP")
EXPOSURE_KEYS = ("EXPTIME", "EXPOSURE", "EXP_TIME")
EXPOSURE_MICROSECOND_KEYS = ("EXPOINUS",)
FILTER_KEYS = ("FILTER", "FILTER1", "FILTNAME")
GAIN_KEYS = ("GAIN",)
OFFSET_KEYS = ("OFFSET", "BLKLEVEL")
TEMPERATURE_KEYS = ("CCD-TEMP", "CCD_TEMP", "SENSTEMP", "TEMPERAT")
DATE_KEYS = ("DATE-OBS", "DATE_OBS", "DATE")
BAYER_KEYS = ("BAYERPAT", "COLORTYP", "CFAPAT")

_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eEdD][+-]?\d+)?$")


def card_values(header: fits.Header) -> dict[str, Any]:
    """Read every card's value, tolerating cards astropy refuses to parse.

    Unparsable cards (non-standard numbers such as ``6,4E-05``) are returned as their raw
    value text, so :func:`first_number` can still interpret them.
    """
    values: dict[str, Any] = {}
    for card in header.cards:
        keyword = card.keyword
        if not keyword or keyword in ("COMMENT", "HISTORY") or keyword in values:
            continue
        try:
            values[keyword] = card.value
        except Exception:  # astropy raises VerifyError/ValueError for malformed cards
            values[keyword] = _raw_value_text(card.image)
    return values


def first_text(values: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first present, non-empty card among ``keys`` as stripped text."""
    for key in keys:
        value = values.get(key)
        if value is None or isinstance(value, bool):
            continue
        text = str(value).strip()
        if text:
            return text
    return None


def first_number(values: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    """The first present card among ``keys`` as a float.

    Accepts numbers written as strings and with a decimal comma.

    Raises
    ------
    HeaderError
        If a card is present but is not a number (names the card and its value).
    """
    for key in keys:
        if key not in values or values[key] is None:
            continue
        return _to_float(key, values[key])
    return None


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise HeaderError(f"card {key} = {value!r} is a boolean, expected a number")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().strip("'\"").strip()
    if _NUMBER.match(text):
        return float(text.replace(",", ".").replace("D", "E").replace("d", "e"))
    raise HeaderError(f"card {key} = {value!r} is not a number")


def _raw_value_text(image: str) -> str:
    body = image[10:] if image[8:10] == "= " else image[8:]
    text = body.split("/", 1)[0].strip()
    return text.strip("'").strip()
