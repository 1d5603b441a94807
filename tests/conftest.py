"""Shared fixtures: paths to the real data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "real_data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real raw frames (read in place, never copied)."""
    if not REAL_DATA.is_dir():
        message = f"real data folder {REAL_DATA} is not present"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the real-data tests)")
        pytest.skip(message)
    return REAL_DATA
