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

Every message names the file or setting, the offending value, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "CalibrationMatchError",
    "ConfigError",
    "FrameReadError",
    "HeaderError",
    "IntegrationError",
    "LinearLinkError",
    "OutputError",
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


class OutputError(LinearLinkError):
    """An output file could not be written."""
