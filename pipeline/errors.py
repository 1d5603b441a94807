"""Exceptions raised by LinearLink.

The tree::

    LinearLinkError                 base of everything LinearLink raises on purpose
    ├── ConfigError                 the YAML config or an override is invalid (lists every problem)
    ├── FrameReadError              a file could not be read as a FITS frame
    ├── HeaderError                 a header card is present but unusable
    ├── CalibrationMatchError       no usable calibration for a light group
    ├── RegistrationError           a sub could not be aligned to the reference
    ├── IntegrationError            a group could not be integrated (e.g. no usable subs)
    └── OutputError                 an output could not be written
        ├── DiskFullError           the output folder's disk is full (nothing half-written is kept)
        └── OutputLockedError       another run is using the output folder (names it)

Every message names the file or setting, the offending value, and what to do about it.
"""

from __future__ import annotations

import os

__all__ = [
    "CalibrationMatchError",
    "CombineError",
    "ConfigError",
    "DiskFullError",
    "FrameReadError",
    "HeaderError",
    "IntegrationError",
    "LinearLinkError",
    "OutputError",
    "OutputLockedError",
    "RegistrationError",
]


class LinearLinkError(Exception):
    """Base class of all errors LinearLink raises deliberately."""


class ConfigError(LinearLinkError):
    """The configuration is invalid.

    Parameters
    ----------
    problems
        One line per problem, each starting with the dotted YAML path.
    source
        Where the configuration came from (a file path or ``"defaults"``).
    """

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun} found; nothing was run.\n{lines}")


class FrameReadError(LinearLinkError):
    """A file could not be read as a FITS image."""


class HeaderError(LinearLinkError):
    """A header card exists but its value cannot be used."""


class CalibrationMatchError(LinearLinkError):
    """No calibration frame fits a light group."""


class RegistrationError(LinearLinkError):
    """A sub could not be registered to the reference."""


class IntegrationError(LinearLinkError):
    """A group could not be integrated."""


class CombineError(LinearLinkError):
    """Masters cannot be combined into a colour image (a step of the combination failed)."""


class OutputError(LinearLinkError):
    """An output file could not be written."""


class DiskFullError(OutputError):
    """The disk of the output folder is full (``ENOSPC``); the partial file was removed.

    Parameters
    ----------
    path
        The file that could not be written.
    nbytes
        How many bytes were being written, if known.
    free
        How many bytes are free on that disk, if known.
    """

    def __init__(self, path: str, nbytes: int | None = None, free: int | None = None) -> None:
        self.path, self.nbytes, self.free = str(path), nbytes, free
        size = _size(nbytes) if nbytes is not None else "the file"
        room = f", {_size(free)} free" if free is not None else ""
        super().__init__(
            f"{self.path}: disk full: could not write {size} into "
            f"{os.path.dirname(self.path) or '.'}{room}; no partial file was kept. Free space "
            "on that disk (or choose an output folder on another disk with -o) and run the "
            "same command again: finished work is reused."
        )

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.nbytes, self.free))


class OutputLockedError(OutputError):
    """Another LinearLink run holds the output folder's lock."""


def _size(nbytes: int) -> str:
    """``nbytes`` in bytes, KiB, MiB or GiB."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    value = nbytes / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
