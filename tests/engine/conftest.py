"""A processed sample night shared by the end-to-end tests of this folder."""

from __future__ import annotations

import json
import os
import shutil
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


def process(
    tmp: Path,
    overrides: tuple[str, ...] = (),
    *,
    transients: bool = True,
    light_filter: str | None = None,
) -> ProcessedNight:
    """Generate the sample night (seed 7) in ``tmp/night`` and process it into ``tmp/out``.

    ``transients=False`` generates its twin without satellite trail and cosmic rays. With
    ``light_filter`` the pipeline sees only that filter's lights (plus every calibration
    frame), linked into ``tmp/night_<filter>``; ``truth`` still describes the whole night.
    """
    night = tmp / "night"
    truth = generate_night(night, rng=np.random.default_rng(7), transients=transients)
    if light_filter is not None:
        night = _link_frames(truth, light_filter, tmp / f"night_{light_filter}")
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


def _link_frames(truth: NightTruth, light_filter: str, folder: Path) -> Path:
    """A night folder with the lights of ``light_filter`` and every calibration frame."""
    frames = truth.lights(light_filter) + truth.bias_frames + truth.dark_frames
    for frame in frames + truth.flat_frames:
        target = folder / frame.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(truth.path(frame.path), target)
        except OSError:
            shutil.copy2(truth.path(frame.path), target)
    return folder


@pytest.fixture(scope="session")
def twin_runs(tmp_path_factory, sample_run) -> dict[str, ProcessedNight]:
    """The twin of ``sample_run`` without satellite trail and cosmic rays, per filter.

    Same stars, dithers, seeing, calibration frames and noise in every pixel no transient
    touches (see ``generate_night(transients=False)``), processed with the default
    configuration, so ``master(sample_run) - master(twin)`` is what the transients left
    behind. The two masters must share a pixel grid, but the transients change the
    measurements the automatic reference choice rests on (the trail raises its sub's SNR,
    cosmic rays move PSF fits), so the twin could pick another reference sub. Each filter is
    therefore processed on its own with ``registration.reference`` set to the sub
    ``sample_run`` chose for it (the setting names one file, which only one group has).
    """
    manifest = json.loads((sample_run.outdir / "run.json").read_text(encoding="utf-8"))
    runs = {}
    for master in manifest["masters"]:
        reference = Path(manifest["integration"][master["group"]]["reference"]).name
        runs[master["filter"]] = process(
            tmp_path_factory.mktemp(f"twin_{master['filter']}"),
            (f"registration.reference={reference}",),
            transients=False,
            light_filter=master["filter"],
        )
    return runs
