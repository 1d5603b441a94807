"""Running the task graph: in this process (threads, processes, synchronous) or on a
dask.distributed cluster (an existing one at an address, or a local cluster of processes).

Tasks pass small JSON-ready records (file paths and numbers), never image arrays, so a
distributed run moves no pixel data between workers; the workers read and write the files
themselves, which therefore must be on storage every worker sees (the same paths).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

import dask

from pipeline.config.models import EngineConfig
from pipeline.engine.progress import StageProgress
from pipeline.errors import LinearLinkError

__all__ = ["compute"]


def compute(
    graph: Any,
    engine: EngineConfig,
    log: Callable[[str], None] = print,
    *,
    progress: TextIO | None = None,
) -> Any:
    """Compute ``graph`` (a collection of delayed tasks) as ``engine`` says; returns it computed.

    ``progress`` shows the stages' progress there (in-process schedulers; a distributed run
    has the cluster's dashboard for that).
    """
    if engine.scheduler == "threads":
        # Our own pool: when a task fails, leaving the block waits for the tasks still
        # running, so nothing is written after the run has ended (and released its lock).
        workers = engine.workers or os.cpu_count() or 1
        display = StageProgress(progress) if progress is not None else contextlib.nullcontext()
        with ThreadPoolExecutor(workers) as pool, display:
            (result,) = dask.compute(graph, scheduler="threads", pool=pool)
        return result
    if engine.scheduler != "distributed":
        display = StageProgress(progress) if progress is not None else contextlib.nullcontext()
        with dask.config.set(scheduler=engine.scheduler), display:
            (result,) = dask.compute(graph, num_workers=engine.workers)
        return result
    from distributed import Client, LocalCluster

    if engine.address:
        try:
            client = Client(engine.address, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise LinearLinkError(
                f"engine.address={engine.address!r}: no dask scheduler answers there ({exc}); "
                "start the cluster first (dask scheduler / dask-jobqueue) or fix the address"
            ) from exc
        with client:
            log(f"running on the dask cluster at {engine.address}")
            (result,) = dask.compute(graph, scheduler=client.get)
            return result
    workers = engine.workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        log(f"running on a local dask cluster of {workers} worker processes")
        (result,) = dask.compute(graph, scheduler=client.get)
        return result
