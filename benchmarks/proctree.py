"""Run a command and measure its wall time, CPU time and peak RSS, children included.

Shared by the benchmarks that compare LinearLink with other tools (``quality.py``,
``night.py``): every tool is a fresh process, measured the same way.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["ProcessStats", "run_measured"]


@dataclass(frozen=True)
class ProcessStats:
    """Resources used by one command and all its descendants.

    Attributes
    ----------
    returncode : int
        Exit status of the command.
    wall_s : float
        Wall-clock seconds from start to exit.
    cpu_s : float
        User + system CPU seconds of the process and its reaped descendants (``wait4``).
    peak_rss_mb : float
        Largest sum of the resident set sizes of the tree, polled every ``poll_s``.
    max_single_rss_mb : float
        Largest RSS of any one process of the tree (``ru_maxrss`` from ``wait4``, exact).
    """

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    max_single_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _tree_rss(root: psutil.Process) -> int:
    """Summed RSS (bytes) of ``root`` and its live descendants."""
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(
    command: list[str],
    *,
    cwd: str | Path | None = None,
    log: str | Path | None = None,
    poll_s: float = 0.05,
    env: dict[str, str] | None = None,
) -> ProcessStats:
    """Run ``command`` to completion and measure it.

    Parameters
    ----------
    command : list of str
        The program and its arguments.
    cwd : path, optional
        Working directory.
    log : path, optional
        File receiving stdout and stderr (discarded when None).
    poll_s : float
        RSS polling interval (s).
    env : dict, optional
        Environment (the current one when None).

    Returns
    -------
    ProcessStats
        Exit status, wall, CPU and memory of the process tree.
    """
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ)
        )
        ps = psutil.Process(proc.pid)
        peak = 0
        while True:
            # wait4 reports this child's own rusage (its reaped descendants included), not
            # that of every child this process ever had, as RUSAGE_CHILDREN would.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            peak = max(peak, _tree_rss(ps))
            time.sleep(poll_s)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    cpu = usage.ru_utime + usage.ru_stime
    single = usage.ru_maxrss / 1024.0  # KiB on Linux
    return ProcessStats(
        returncode=int(proc.returncode),
        wall_s=round(wall, 3),
        cpu_s=round(cpu, 3),
        peak_rss_mb=round(max(peak / 2**20, single), 1),
        max_single_rss_mb=round(single, 1),
    )
