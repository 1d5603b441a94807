"""The process scheduler produces the same master as the default thread scheduler."""

from __future__ import annotations

import numpy as np

from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline
from pipeline.io.fits import read_image


def test_process_scheduler_gives_the_same_masters(sample_run, tmp_path):
    config = load_config(None, ["engine.scheduler=processes", "engine.workers=2"])
    summary = Pipeline(config, tmp_path / "out").run(sample_run.night)
    assert summary.exit_code == 0
    threads = {m["group"]: m["path"] for m in sample_run.summary.manifest["masters"]}
    for master in summary.manifest["masters"]:
        np.testing.assert_array_equal(
            read_image(master["path"]), read_image(threads[master["group"]])
        )
