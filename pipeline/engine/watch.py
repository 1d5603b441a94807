"""Watch mode: keep processing a night folder while the capture program fills it.

Each refresh is an ordinary cached run: subs already calibrated, measured and registered are
reused, so a refresh costs the new subs plus one integration per group. A file counts once its
size and modification time have stayed the same for one polling interval (the capture program
has finished writing it). Stopping between or during refreshes leaves the output folder in a
complete, resumable state: every output is written atomically and a re-run reuses it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.engine.runner import Pipeline, RunSummary

__all__ = ["watch"]


def watch(
    pipeline: Pipeline,
    night: str | Path,
    *,
    every: int,
    poll_seconds: float,
    should_stop: Callable[[], bool],
    on_run: Callable[[RunSummary], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunSummary | None:
    """Run ``pipeline`` on ``night`` and again each time ``every`` new files have settled.

    Parameters
    ----------
    pipeline
        The configured pipeline (its output folder receives every refresh).
    night
        The folder being filled.
    every
        Number of new settled FITS files that triggers a refresh (>= 1).
    poll_seconds
        Seconds between two looks at the folder.
    should_stop
        Checked before every poll; True ends the watch after the current refresh.
    on_run
        Called with the summary of every refresh.
    sleep
        Waits between polls (tests pass a fake).

    Returns
    -------
    RunSummary or None
        The last refresh (None if nothing was ever processed).
    """
    if every < 1:
        raise ValueError(f"every={every}: refresh after at least 1 new file")
    night = Path(night).resolve()
    suffixes = tuple(s.lower() for s in pipeline.config.discovery.extensions)
    seen: dict[Path, tuple[int, int]] = {}
    processed: set[Path] = set()
    last: RunSummary | None = None
    while not should_stop():
        current = _signatures(night, suffixes, pipeline.outdir)
        settled = {path for path, signature in current.items() if seen.get(path) == signature}
        seen = current
        if settled and (last is None or len(settled - processed) >= every):
            pipeline.log(f"refresh: {len(settled - processed)} new files")
            last = pipeline.run(night)
            processed = settled
            if on_run is not None:
                on_run(last)
        sleep(poll_seconds)
    return last


def _signatures(night: Path, suffixes: tuple[str, ...], outdir: Path) -> dict[Path, tuple]:
    """(size, mtime) of every FITS file under ``night`` outside hidden and output folders."""
    found = {}
    outdir = outdir.resolve()
    for folder, subfolders, files in os.walk(night):
        current = Path(folder)
        subfolders[:] = [
            name
            for name in subfolders
            if not name.startswith(".") and (current / name).resolve() != outdir
        ]
        for name in files:
            if name.lower().endswith(suffixes) and not name.startswith("."):
                path = current / name
                try:
                    stat = path.stat()
                except OSError:
                    continue  # removed or renamed between listing and stat
                found[path] = (stat.st_size, stat.st_mtime_ns)
    return found
