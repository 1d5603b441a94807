"""The graph runs unchanged on a dask.distributed cluster and gives the same masters."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from pipeline.cli import _parser, _scale_out_overrides
from pipeline.config.loader import load_config
from pipeline.config.models import EngineConfig
from pipeline.engine import execution
from pipeline.engine.runner import Pipeline
from pipeline.errors import LinearLinkError


def test_local_cluster_of_two_processes_gives_the_in_process_masters(sample_run, tmp_path):
    config = load_config(None, ["engine.scheduler=distributed", "engine.workers=2"])
    summary = Pipeline(config, tmp_path / "distributed").run(sample_run.night)
    assert summary.exit_code == 0
    reference = {m["group"]: m["path"] for m in sample_run.summary.manifest["masters"]}
    assert {m["group"] for m in summary.manifest["masters"]} == set(reference)
    for master in summary.manifest["masters"]:
        with fits.open(master["path"]) as ours, fits.open(reference[master["group"]]) as theirs:
            assert len(ours) == len(theirs)
            for hdu, other in zip(ours, theirs, strict=True):
                np.testing.assert_array_equal(hdu.data, other.data)


def test_an_unreachable_scheduler_is_reported_with_the_address():
    engine = EngineConfig(scheduler="distributed", address="tcp://127.0.0.1:9")
    with pytest.raises(LinearLinkError, match=r"tcp://127.0.0.1:9.*no dask scheduler answers"):
        execution.compute({}, engine, log=lambda line: None)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--workers", "3"], {"scheduler": "distributed", "workers": 3, "address": None}),
        (
            ["--scheduler", "tcp://10.0.0.5:8786"],
            {"scheduler": "distributed", "workers": None, "address": "tcp://10.0.0.5:8786"},
        ),
        ([], {"scheduler": "threads", "workers": None, "address": None}),
    ],
)
def test_scale_out_flags_set_the_engine(flags, expected, tmp_path):

    args = _parser().parse_args(["run", str(tmp_path), *flags])
    engine = load_config(None, _scale_out_overrides(args)).engine
    assert engine.model_dump() == expected
