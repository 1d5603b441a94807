"""Row bands for integrating stacks of frames within a memory limit."""

from __future__ import annotations

import os
from collections.abc import Iterator

from pipeline.errors import IntegrationError

__all__ = [
    "MASTER_BYTES_PER_PIXEL",
    "RESERVE_MB",
    "band_height",
    "default_memory_limit_mb",
    "row_bands",
]

#: Resident memory of the process besides pixel data: interpreter, numpy, numba, astropy
#: and dask code, compiled kernels, per-thread buffers.
RESERVE_MB = 320

#: Bytes per master pixel held for the whole run: image and noise (float32), count and
#: low/high rejection counts (uint16).
MASTER_BYTES_PER_PIXEL = 4 + 4 + 2 + 2 + 2

#: Copies of a band held while integrating it: the compiled rejectors normalize in place
#: and reject and average in one pass; with large-scale rejection they also keep the two
#: boolean masks; the other rejectors add masks, a rejection-space copy and the sorted
#: chunks of their kernels.
_COPIES_FUSED = 1.15
_COPIES_COMPILED_MASKS = 1.8
_COPIES_MASKED = 3.5

#: Bands are not made larger than this much stack (MiB) even when memory allows: smaller
#: bands keep each worker's buffers warm in cache and reused, and balance the workers
#: (measured on 12 Mpx subs: 128 MiB bands integrate twice as fast as 800 MiB ones).
_BAND_TARGET_MB = 128


def default_memory_limit_mb() -> int:
    """A safe share of this machine for integration: a quarter of RAM, 512 MiB to 16 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        total = 4096.0
    return int(min(16384, max(512, total / 4)))


def band_height(
    shape: tuple[int, ...],
    frames: int,
    *,
    memory_limit_mb: float,
    workers: int,
    compiled: bool,
    masks: bool = False,
    halo: int = 0,
) -> int:
    """Rows per band so that ``workers`` bands in flight plus the master fit the limit.

    Parameters
    ----------
    shape
        Image shape, (rows, cols) or (channels, rows, cols).
    frames
        Number of subs stacked together (the sub axis is never split).
    memory_limit_mb
        Limit on the integration's resident memory, in MiB.
    workers
        Bands processed at the same time.
    compiled
        Whether the rejection runs compiled (fewer copies).
    masks
        Whether rejection masks are kept for the band (large-scale rejection).
    halo
        Extra rows read on each side of a band (large-scale rejection).

    Raises
    ------
    IntegrationError
        If the limit cannot hold the master and one row of every sub.
    """
    pixels = 1
    for extent in shape:
        pixels *= extent
    rows = shape[-2]
    budget = memory_limit_mb * 2**20 - RESERVE_MB * 2**20 - pixels * MASTER_BYTES_PER_PIXEL
    copies = _COPIES_MASKED
    if compiled:
        copies = _COPIES_COMPILED_MASKS if masks else _COPIES_FUSED
    bytes_per_row = max(1, frames) * 4 * copies * pixels / rows
    height = int(budget // (bytes_per_row * max(1, workers))) - 2 * halo
    stack_row = max(1, frames) * 4 * pixels / rows
    height = min(height, max(1, 4 * halo, int(_BAND_TARGET_MB * 2**20 // stack_row)))
    if height < 1:
        needed = RESERVE_MB * 2**20 + pixels * MASTER_BYTES_PER_PIXEL
        needed = (needed + bytes_per_row * (1 + 2 * halo) * max(1, workers)) / 2**20
        raise IntegrationError(
            f"integration.memory_limit_mb={memory_limit_mb:g} is too small for {frames} subs "
            f"of shape {tuple(shape)}: at least {needed:.0f} MiB are needed; raise it"
        )
    return min(rows, height)


def row_bands(rows: int, height: int) -> Iterator[slice]:
    """Consecutive slices of ``height`` rows (the last one shorter) covering ``rows``."""
    for start in range(0, rows, height):
        yield slice(start, min(rows, start + height))
