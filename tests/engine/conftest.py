"""A processed sample night shared by the end-to-end tests of this folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline, RunSummary
from sample_data import NightTruth, generate_night


@dataclass(frozen=True)
class ProcessedNight:
    night: Path
    outdir: Path
    truth: NightTruth
    summary: RunSummary


def process(tmp: Path, overrides: tuple[str, ...] = ()) -> ProcessedNight:
    night = tmp / "night"
    truth = generate_night(night, rng=np.random.default_rng(7))
    outdir = tmp / "out"
    summary = Pipeline(load_config(None, overrides), outdir).run(night)
    return ProcessedNight(night, outdir, truth, summary)


@pytest.fixture(scope="session")
def process_night():
    """The function that generates and processes a sample night in a folder."""
    return process


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> ProcessedNight:
    """The default sample night processed once with the default configuration."""
    return process(tmp_path_factory.mktemp("sample_run"))
