"""Private helpers shared by the kernel modules (validation and dtype rules)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["float_array", "require_ndim", "require_same_shape", "result_dtype"]


def result_dtype(array: np.ndarray) -> np.dtype:
    """Float dtype a kernel returns for ``array``: float64 stays float64, all else float32."""
    return np.dtype(np.float64) if array.dtype == np.float64 else np.dtype(np.float32)


def float_array(data: ArrayLike, name: str) -> NDArray[np.floating]:
    """Return ``data`` as a float32/float64 ndarray (no copy when already one).

    Integer and other real inputs are converted to float32; complex input is refused.
    """
    array = np.asarray(data)
    if array.dtype.kind not in "fiub":
        raise ValueError(
            f"{name} has dtype {array.dtype}; pass a real-valued (integer or float) array"
        )
    return array.astype(result_dtype(array), copy=False)


def require_ndim(array: np.ndarray, name: str, allowed: tuple[int, ...]) -> None:
    """Raise ValueError unless ``array.ndim`` is one of ``allowed``."""
    if array.ndim not in allowed:
        dims = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{name} has shape {array.shape}; pass a {dims} array")


def require_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise ValueError unless the two arrays have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} has shape {b.shape} but {name_a} has shape {a.shape}; "
            f"pass arrays of the same shape"
        )
