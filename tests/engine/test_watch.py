"""Watch mode: the master grows as subs drip into the night folder; stopping is resumable."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np

from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline
from pipeline.engine.watch import watch
from sample_data import generate_night


def _wait_for(condition, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for a refresh"
        time.sleep(0.05)


def test_master_grows_as_subs_arrive_and_a_stopped_watch_resumes(tmp_path):
    staging, night, out = tmp_path / "staging", tmp_path / "night", tmp_path / "out"
    truth = generate_night(
        staging, rng=np.random.default_rng(5), width=256, height=192, n_lights_per_filter=6
    )
    lights = [lt.path for lt in truth.light_frames if lt.filter == "Ha"]
    light_set = {lt.path for lt in truth.light_frames}
    for path in staging.rglob("*"):  # calibration frames first, no lights
        relative = str(path.relative_to(staging))
        if path.is_file() and relative not in light_set and not relative.startswith("truth"):
            (night / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, night / relative)

    def drip(paths):
        for relative in paths:
            (night / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(staging / relative, night / relative)

    drip(lights[:2])
    counts: list[int] = []
    stop = threading.Event()
    pipeline = Pipeline(load_config(None), out)

    def record(summary):
        masters = [m for m in summary.manifest["masters"] if "_Ha_" in m["group"]]
        counts.append(masters[0]["ncombine"] if masters else 0)

    watcher = threading.Thread(
        target=watch,
        args=(pipeline, night),
        kwargs=dict(every=2, poll_seconds=0.05, should_stop=stop.is_set, on_run=record),
    )
    watcher.start()
    try:
        _wait_for(lambda: len(counts) >= 1)
        drip(lights[2:4])
        _wait_for(lambda: len(counts) >= 2)
        drip(lights[4:6])
        _wait_for(lambda: len(counts) >= 3)
    finally:
        stop.set()
        watcher.join(timeout=300)
    assert counts == [2, 4, 6]  # NCOMBINE grows with every refresh

    resumed = Pipeline(load_config(None), out).run(night)  # resume after stopping
    assert resumed.exit_code == 0
    stages = resumed.manifest["stages"]
    assert stages["calibrate"]["computed"] == 0 and stages["calibrate"]["reused"] == 6
    ha = [m for m in resumed.manifest["masters"] if "_Ha_" in m["group"]]
    assert ha[0]["ncombine"] == 6
