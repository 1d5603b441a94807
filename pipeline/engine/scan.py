"""Find FITS files under a night folder and read their headers (never pixel data)."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config.models import DiscoveryConfig
from pipeline.errors import FrameReadError
from pipeline.frames import FrameMetadata, SkippedFile
from pipeline.io.fits import read_metadata

__all__ = ["scan_night"]


def scan_night(
    night: str | Path, config: DiscoveryConfig, *, exclude: tuple[Path, ...] = ()
) -> tuple[list[FrameMetadata], list[SkippedFile]]:
    """Read the header of every FITS file under ``night``.

    Hidden folders and ``exclude`` folders (e.g. an output folder inside the night) are not
    entered. Files that are not readable FITS images are returned as skipped with the reason.
    """
    root = Path(night).resolve()
    excluded = {path.resolve() for path in exclude}
    suffixes = tuple(suffix.lower() for suffix in config.extensions)
    frames: list[FrameMetadata] = []
    skipped: list[SkippedFile] = []
    for path in _walk(root, config.recursive, excluded):
        if not path.name.lower().endswith(suffixes):
            continue
        try:
            frames.append(read_metadata(path, root=root))
        except FrameReadError as exc:
            skipped.append(SkippedFile(str(path), str(exc)))
    return frames, skipped


def _walk(root: Path, recursive: bool, excluded: set[Path]):
    for folder, subfolders, files in os.walk(root):
        current = Path(folder)
        subfolders[:] = sorted(
            name
            for name in subfolders
            if recursive and not name.startswith(".") and (current / name).resolve() not in excluded
        )
        for name in sorted(files):
            if not name.startswith("."):
                yield current / name
