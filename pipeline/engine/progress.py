"""Progress of a run, stage by stage: a live line on a terminal, timestamped lines otherwise.

Counts the finished tasks of each stage of the dask graph (by the task's key name)
with a dask scheduler callback, so it works for the in-process schedulers (threads,
processes, synchronous).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from dask.callbacks import Callback
from dask.utils import key_split

__all__ = ["STAGE_OF_TASK", "StageProgress"]

#: Task name prefix in the runner's graph (``dask.utils.key_split`` of the key) -> stage.
STAGE_OF_TASK = {
    "master": "masters",
    "defects": "defects",
    "calibrate": "calibrate+measure",
    "select": "select",
    "register": "register",
    "integrate": "integrate",
    "preview": "preview",
    "combine": "combine",
}


class StageProgress(Callback):
    """Show files done, rate and time left for every stage while a graph runs.

    Parameters
    ----------
    stream
        Where to write (default stderr).
    interactive
        Redraw one line in place (a terminal); default: ``stream.isatty()``. Otherwise a
        timestamped line is written when a stage finishes and at most every ``interval`` s.
    interval
        Seconds between plain progress lines.
    clock
        Time source (tests pass a fake one).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interactive: bool | None = None,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.interval = interval
        self.clock = clock
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.first: dict[str, float] = {}
        self.last_line = 0.0

    # dask callback hooks ---------------------------------------------------------------
    def _start_state(self, dsk: Any, state: dict) -> None:
        counts: dict[str, int] = {}
        for key in dsk:
            stage = STAGE_OF_TASK.get(key_split(key))
            if stage is not None:
                counts[stage] = counts.get(stage, 0) + 1
        order = list(dict.fromkeys(STAGE_OF_TASK.values()))  # pipeline order
        self.totals = {stage: counts[stage] for stage in order if stage in counts}
        self.done = dict.fromkeys(self.totals, 0)
        self.first = {}
        self.last_line = self.clock()

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict, worker_id: Any) -> None:
        stage = STAGE_OF_TASK.get(key_split(key))
        if stage is None:
            return
        now = self.clock()
        self.first.setdefault(stage, now)
        self.done[stage] += 1
        finished = self.done[stage] == self.totals[stage]
        if self.interactive:
            self.stream.write("\r" + self.status_line(now) + "\033[K")
        elif finished or now - self.last_line >= self.interval:
            self.stream.write(time.strftime("%H:%M:%S ") + self.status_line(now) + "\n")
            self.last_line = now
        self.stream.flush()

    def _finish(self, dsk: Any, state: dict, errored: bool) -> None:
        if self.interactive and self.totals:
            self.stream.write("\n")
            self.stream.flush()

    # rendering -------------------------------------------------------------------------
    def status_line(self, now: float) -> str:
        """``stage done/total (rate, time left)`` for every stage that has started."""
        parts = []
        for stage, total in self.totals.items():
            done = self.done[stage]
            if done == 0:
                continue
            text = f"{stage} {done}/{total}"
            elapsed = now - self.first[stage]
            if done < total and done > 1 and elapsed > 0:
                rate = (done - 1) / elapsed
                text += f" ({rate:.2f}/s, {(total - done) / rate:.0f} s left)"
            parts.append(text)
        return " | ".join(parts)
