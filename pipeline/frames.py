"""Typed records shared by the I/O layer, the stages and the engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["FrameMetadata", "FrameType", "SkippedFile"]


class FrameType(StrEnum):
    """What a raw frame is."""

    LIGHT = "light"
    DARK = "dark"
    FLAT = "flat"
    BIAS = "bias"
    DARK_FLAT = "dark_flat"


@dataclass(frozen=True, slots=True)
class FrameMetadata:
    """Everything LinearLink needs from one file's header, in physical units.

    Attributes
    ----------
    path
        Absolute path of the file.
    relative_path
        Path relative to the scanned night folder (used in reports).
    type_text
        The raw frame-type card (IMAGETYP/FRAME/FRAMETYP), or ``None`` if absent.
    exposure
        Exposure in seconds, or ``None`` if no exposure card could be read.
    shape
        Image shape as (rows, columns) or (channels, rows, columns).
    binning
        (x, y) binning; (1, 1) when absent.
    saturation
        Raw level (physical ADU) at which the sensor or its digitiser clips: ``SATURATE`` or
        ``DATAMAX``, else the largest value of the integer data type (65535 for unsigned
        16-bit); ``None`` for floating-point data without such a card.
    """

    path: str
    relative_path: str
    type_text: str | None
    exposure: float | None
    filter: str | None
    binning: tuple[int, int]
    shape: tuple[int, ...]
    gain: float | None = None
    offset: float | None = None
    temperature: float | None = None
    date_obs: str | None = None
    object: str | None = None
    instrument: str | None = None
    bayer_pattern: str | None = None
    bayer_x_offset: int = 0
    bayer_y_offset: int = 0
    row_order: str | None = None
    file_size: int = 0
    file_mtime_ns: int = 0
    saturation: float | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size_text(self) -> str:
        """Image size as 'WxH' (columns x rows)."""
        return f"{self.shape[-1]}x{self.shape[-2]}"

    @property
    def binning_text(self) -> str:
        """Binning as 'XxY'."""
        return f"{self.binning[0]}x{self.binning[1]}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file that was found but not used, and why."""

    path: str
    reason: str
