"""The stage cache: a record per stage execution, and where its files live.

Every stage execution writes its files under ``OUTDIR/work/<stage>/`` with the key in the file
name, then a JSON record ``OUTDIR/work/.cache/<stage>/<key>.json``. A record counts as a hit only
if all files it lists still exist. Records are written atomically after the files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pipeline.io.fits import write_error

__all__ = ["Store", "write_json_atomic"]


class Store:
    """Content-keyed store of stage results under an output folder."""

    def __init__(self, outdir: str | Path) -> None:
        self.outdir = Path(outdir)
        self.work = self.outdir / "work"

    def path(self, stage: str, name: str, key: str, suffix: str) -> Path:
        """Where a stage writes one output file for this key."""
        return self.work / stage / f"{name}.{key[:16]}{suffix}"

    def lookup(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stored record of (stage, key), or ``None`` if absent or incomplete."""
        record_path = self._record_path(stage, key)
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        outputs = record.get("outputs", {})
        if all((self.outdir / rel).exists() for rel in outputs.values()):
            return record
        return None

    def save(self, stage: str, key: str, record: dict[str, Any]) -> None:
        """Store the record of a finished stage execution (its files must exist already)."""
        write_json_atomic(self._record_path(stage, key), record)

    def relative(self, path: Path) -> str:
        """``path`` relative to the output folder, as stored in records."""
        return os.path.relpath(path, self.outdir)

    def absolute(self, relative: str) -> Path:
        """The absolute path of a stored relative path."""
        return self.outdir / relative

    def _record_path(self, stage: str, key: str) -> Path:
        return self.work / ".cache" / stage / f"{key}.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file in the same folder and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, default=_json_default)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
