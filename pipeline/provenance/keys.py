"""Cache keys: a stage's output is identified by its code version, its config and its inputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from pipeline import __version__
from pipeline.frames import FrameMetadata

__all__ = ["config_hash", "file_key", "stage_key"]


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(section: BaseModel | Iterable[BaseModel] | None) -> str:
    """A stable hash of one or more config sections."""
    if section is None:
        return _digest(None)
    sections = [section] if isinstance(section, BaseModel) else list(section)
    return _digest([s.model_dump(mode="json") for s in sections])


def file_key(metadata: FrameMetadata) -> str:
    """Identity of an input file: its path, size and modification time."""
    return _digest(["file", metadata.path, metadata.file_size, metadata.file_mtime_ns])


def stage_key(
    stage: str, version: str, config: BaseModel | Iterable[BaseModel] | None, inputs: Iterable[Any]
) -> str:
    """The cache key of one stage execution.

    Parameters
    ----------
    stage
        Stage name (``calibrate``, ``integrate``, ...).
    version
        The stage's code version; bump it when its algorithm changes.
    config
        The config section(s) the stage reads.
    inputs
        Keys (or small JSON values) of everything else the result depends on.
    """
    return _digest([stage, version, __version__, config_hash(config), list(inputs)])
