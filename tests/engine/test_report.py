"""The HTML report and the stage progress display."""

from __future__ import annotations

import io
import re
from pathlib import Path

import dask
from dask import delayed

from pipeline.engine.progress import StageProgress
from pipeline.engine.report import write_report


def test_report_shows_every_group_its_plot_preview_and_exclusions(sample_run, tmp_path):
    manifest = sample_run.summary.manifest
    page = write_report(manifest, tmp_path).read_text()
    for master in manifest["masters"]:
        assert master["group"] in page
        assert (tmp_path / "report" / f"{master['group']}.png").stat().st_size > 10_000
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(sources) == 2 * len(manifest["masters"])  # quality plot + linked-STF preview
    for source in sources:
        assert (tmp_path / source).resolve().is_file(), source
    excluded = [frame for frame in manifest["frames"] if frame.get("excluded")]
    assert excluded  # the blurred sub
    for frame in excluded:
        assert Path(frame["path"]).name in page
    assert not list(tmp_path.glob("**/*.tmp*"))  # written atomically


def _task(stage, index, value):
    """A task keyed like the runner's (``calibrate-...``), so the display counts it."""
    return delayed(lambda v: v, pure=False)(value, dask_key_name=f"{stage}-{index}")


def test_progress_lines_count_each_stage_when_not_on_a_terminal():
    calibrated = [_task("calibrate", i, i) for i in range(3)]
    registered = [_task("register", i, c) for i, c in enumerate(calibrated)]
    stream = io.StringIO()
    with StageProgress(stream, interactive=False, interval=0.0):
        dask.compute(registered, scheduler="synchronous")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6 and all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)
    assert lines[-1].endswith("calibrate+measure 3/3 | register 3/3")


def test_progress_redraws_one_line_with_rate_and_time_left_on_a_terminal():
    ticks = iter(range(100))
    stream = io.StringIO()
    progress = StageProgress(stream, interactive=True, clock=lambda: float(next(ticks)))
    with progress:
        dask.compute([_task("calibrate", i, i) for i in range(4)], scheduler="sync")
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "calibrate+measure 2/4 (1.00/s, 2 s left)" in text
