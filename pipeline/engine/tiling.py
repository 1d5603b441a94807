"""Row bands for processing stacks of frames in bounded memory."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["row_bands"]

# A stacked band is held several times over while rejecting (stack, normalized copy, masks,
# sorted temporaries); this factor keeps the real peak inside the configured limit.
_WORKING_COPIES = 6


def row_bands(shape: tuple[int, ...], frames: int, memory_limit_mb: float) -> Iterator[slice]:
    """Split the rows of images of ``shape`` into bands whose stacks fit the memory limit.

    Parameters
    ----------
    shape
        Image shape, (rows, cols) or (channels, rows, cols).
    frames
        Number of frames stacked together.
    memory_limit_mb
        Budget for one band's working data, in MiB.
    """
    rows = shape[-2]
    bytes_per_row = max(1, frames) * 4 * _WORKING_COPIES
    for extent in shape[:-2] + shape[-1:]:
        bytes_per_row *= extent
    band = max(1, min(rows, int(memory_limit_mb * 2**20) // bytes_per_row))
    for start in range(0, rows, band):
        yield slice(start, min(rows, start + band))
