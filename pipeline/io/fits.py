"""The only module that touches FITS files.

Reading returns physical values (BZERO/BSCALE applied) as float32. Writing is atomic: data go
to a temporary file in the destination folder which is renamed into place, so no half-written
file ever carries a final name. Input files are opened read-only.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from pipeline.errors import DiskFullError, FrameReadError, HeaderError, OutputError
from pipeline.frames import FrameMetadata
from pipeline.io import headers as hk

__all__ = ["write_error", "ImageReader", "read_image", "read_metadata", "write_image"]


def read_metadata(path: str | Path, *, root: str | Path | None = None) -> FrameMetadata:
    """Read a frame's header (no pixel data) into :class:`FrameMetadata`.

    Raises
    ------
    FrameReadError
        If the file is not FITS, has no image, or is shorter than its header declares.
    """
    path = Path(path)
    try:
        stat = path.stat()
        if stat.st_size == 0:
            raise FrameReadError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            # truncation is checked below with a clearer message; bad cards are handled per card
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                index = _image_hdu_index(hdul, path)
                header = hdul[index].header
                info = hdul.fileinfo(index)
                values = hk.card_values(header)
    except FrameReadError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise FrameReadError(f"{path}: not a readable FITS file ({exc})") from exc
    shape = _shape(values, path)
    _check_complete(path, stat.st_size, info, values, shape)
    relative = os.path.relpath(path, root) if root is not None else path.name
    return _metadata(values, path, relative, shape, stat)


def read_image(path: str | Path, *, rows: slice | None = None) -> np.ndarray:
    """Read pixel data in physical units as float32.

    Parameters
    ----------
    path
        The FITS file.
    rows
        Only these rows (along the last-but-one axis); reads just that part of the file.
    """
    with ImageReader(path) as reader:
        return reader.read(rows)


class ImageReader:
    """Reads one FITS image, whole or in row bands, touching only the bytes asked for.

    Uncompressed images are read with positioned reads (``os.pread``) straight from the data
    block, so a band costs exactly its own bytes of memory (no memory map whose touched
    pages would count against the process, no re-read of the rest). Compressed images fall
    back to astropy. Use as a context manager; :meth:`read` returns float32 physical values.
    """

    _DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._hdul = fits.open(
                self.path,
                memmap=False,
                mode="readonly",
                do_not_scale_image_data=True,
                lazy_load_hdus=True,
            )
            self._index = _image_hdu_index(self._hdul, self.path)
            hdu = self._hdul[self._index]
            header = hdu.header
            self.shape: tuple[int, ...] = tuple(
                int(header[f"NAXIS{i}"]) for i in range(int(header["NAXIS"]), 0, -1)
            )
            self._zero = float(header.get("BZERO", 0.0))
            self._scale = float(header.get("BSCALE", 1.0))
            self._blank = header.get("BLANK") if header.get("BITPIX", 16) > 0 else None
            self._direct = not isinstance(hdu, fits.CompImageHDU)
            self._dtype = np.dtype(self._DTYPES[int(header["BITPIX"])])
            self._offset = int(self._hdul.fileinfo(self._index)["datLoc"])
            self._fd = os.open(self.path, os.O_RDONLY) if self._direct else None
        except FrameReadError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise FrameReadError(f"{self.path}: cannot read pixel data ({exc})") from exc

    def read(self, rows: slice | None = None) -> np.ndarray:
        """Return the image, or the given band of rows, as float32."""
        try:
            if not self._direct:
                data = self._hdul[self._index].data
                if rows is not None:
                    data = data[(slice(None),) * (len(self.shape) - 2) + (rows, slice(None))]
                return self._physical(data)
            return self._physical(self._read_direct(rows))
        except (OSError, ValueError, TypeError) as exc:
            raise FrameReadError(f"{self.path}: pixel data unreadable ({exc})") from exc

    def read_into(self, out: np.ndarray, rows: slice | None = None) -> None:
        """Read the image, or a band of rows, as float32 into ``out`` (same shape).

        Big-endian float32 data is read straight into ``out`` and byte-swapped in place, so
        integrating hundreds of subs band by band makes no temporary copies.
        """
        height = self.shape[-2]
        start, stop, _ = (rows or slice(0, height)).indices(height)
        expected = self.shape[:-2] + (stop - start, self.shape[-1])
        if out.shape != expected or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {expected}")
        plain = self._dtype == np.dtype(">f4") and self._scale == 1.0 and self._zero == 0.0
        if not (self._direct and plain and hasattr(os, "preadv") and sys.byteorder == "little"):
            out[...] = self.read(rows)
            return
        try:
            planes = out.reshape(-1, (stop - start) * self.shape[-1])
            for index, plane in enumerate(planes):
                position = self._offset + (index * height + start) * self.shape[-1] * 4
                got = os.preadv(self._fd, [memoryview(plane).cast("B")], position)
                if got != plane.nbytes:
                    raise OSError(f"short read: {got} of {plane.nbytes} bytes (truncated?)")
            out.view(np.uint32).byteswap(inplace=True)  # big-endian bytes -> native floats
        except OSError as exc:
            raise FrameReadError(f"{self.path}: pixel data unreadable ({exc})") from exc

    def _read_direct(self, rows: slice | None) -> np.ndarray:
        height, width = self.shape[-2], self.shape[-1]
        start, stop, _ = (rows or slice(0, height)).indices(height)
        planes = int(np.prod(self.shape[:-2], dtype=np.int64)) if len(self.shape) > 2 else 1
        itemsize = self._dtype.itemsize
        count = (stop - start) * width
        out = np.empty((planes, count), dtype=self._dtype)
        for plane in range(planes):
            position = self._offset + (plane * height * width + start * width) * itemsize
            buffer = os.pread(self._fd, count * itemsize, position)
            if len(buffer) != count * itemsize:
                raise OSError(f"short read: {len(buffer)} of {count * itemsize} bytes (truncated?)")
            out[plane] = np.frombuffer(buffer, dtype=self._dtype)
        return out.reshape(self.shape[:-2] + (stop - start, width))

    def _physical(self, stored: np.ndarray) -> np.ndarray:
        stored = np.asarray(stored)
        # 32/64-bit integers lose precision in float32 before BZERO is added: use float64 there
        wide = stored.dtype.kind in "iu" and stored.dtype.itemsize > 2
        values = stored.astype(np.float64 if wide else np.float32)
        if self._scale != 1.0:
            values *= self._scale
        if self._zero != 0.0:
            values += self._zero
        values = values.astype(np.float32, copy=False)
        if self._blank is not None:
            values[stored == self._blank] = np.nan
        return values

    def header(self) -> fits.Header:
        """The image HDU's header."""
        return self._hdul[self._index].header

    def close(self) -> None:
        """Release the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._hdul.close()

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_image(
    path: str | Path,
    data: np.ndarray,
    *,
    cards: Mapping[str, Any] | None = None,
    history: Iterable[str] = (),
    extra_hdus: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write ``data`` as float32 FITS atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Destination; parent folders are created.
    data
        Image (H, W) or (C, H, W); stored as float32.
    cards
        Header keywords; values may be ``(value, comment)`` pairs.
    history
        Lines written as HISTORY cards.
    extra_hdus
        Named image extensions written after the primary (e.g. masks).

    Raises
    ------
    DiskFullError
        If the disk is full; the partial temporary file is removed.
    OutputError
        If the file cannot be written for another reason.
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # long comments are truncated, values kept
        hdul = fits.HDUList([_primary_hdu(data, cards, history)])
    for name, extra in (extra_hdus or {}).items():
        hdul.append(fits.ImageHDU(data=np.asarray(extra), name=name.upper()))
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        os.close(descriptor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            hdul.writeto(temporary, overwrite=True, output_verify="silentfix")
        os.replace(temporary, path)
    except BaseException as exc:  # whatever stops the write, no partial file is left
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, hdul, exc) from exc
        raise
    return path


def _write_error(path: Path, hdul: fits.HDUList, exc: OSError) -> OutputError:
    """The error to report for a failed FITS write (see :func:`write_error`)."""
    return write_error(path, exc, nbytes=sum(hdu.filebytes() for hdu in hdul))


def write_error(path: Path, exc: OSError, *, nbytes: int | None = None) -> OutputError:
    """The error to report for any failed output write: a full disk says so, with sizes."""
    path = Path(path)
    if not _caused_by(exc, errno.ENOSPC):
        return OutputError(
            f"{path}: could not write ({exc.strerror or exc}); check that the output folder "
            "exists, is writable and is on a mounted disk"
        )
    try:
        free: int | None = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    return DiskFullError(str(path), nbytes, free)


def _caused_by(exc: BaseException | None, code: int) -> bool:
    """Whether ``exc`` or an error it was raised from has errno ``code`` (astropy re-raises
    write errors as a plain ``OSError`` with the original as context)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == code:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --------------------------------------------------------------------------- internals
def _primary_hdu(
    data: np.ndarray, cards: Mapping[str, Any] | None, history: Iterable[str]
) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU(data=np.asarray(data, dtype=np.float32))
    for key, value in (cards or {}).items():
        if value is None:
            continue
        if isinstance(value, tuple):
            hdu.header[key] = (_card_value(value[0]), value[1])
        else:
            hdu.header[key] = _card_value(value)
    for line in history:
        hdu.header.add_history(line)
    return hdu


def _card_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and len(value) > 68:
        return value[:68]
    return value


def _image_hdu_index(hdul: fits.HDUList, path: Path) -> int:
    for index, hdu in enumerate(hdul):
        naxis = hdu.header.get("NAXIS", 0)
        if isinstance(naxis, int) and naxis in (2, 3) and hdu.header.get("XTENSION") != "BINTABLE":
            return index
    raise FrameReadError(f"{path}: no 2-D or 3-D image in any HDU")


def _shape(values: Mapping[str, Any], path: Path) -> tuple[int, ...]:
    try:
        naxis = int(values["NAXIS"])
        axes = [int(values[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
    except (KeyError, ValueError, TypeError) as exc:
        raise FrameReadError(f"{path}: NAXIS cards missing or invalid ({exc})") from exc
    return tuple(reversed(axes))


def _check_complete(
    path: Path, size: int, info: Mapping[str, Any] | None, values: Mapping[str, Any], shape: tuple
) -> None:
    if info is None:
        return
    bitpix = abs(int(values.get("BITPIX", 16)))
    needed = int(info["datLoc"]) + int(np.prod(shape)) * bitpix // 8
    if size < needed:
        raise FrameReadError(
            f"{path}: truncated: {size} bytes on disk, header declares {needed}; "
            "re-copy the file from the capture computer"
        )


def _metadata(
    values: Mapping[str, Any],
    path: Path,
    relative: str,
    shape: tuple[int, ...],
    stat: os.stat_result,
) -> FrameMetadata:
    problems: list[str] = []
    exposure = _number_or_note(values, hk.EXPOSURE_KEYS, problems)
    if exposure is None:
        micro = _number_or_note(values, hk.EXPOSURE_MICROSECOND_KEYS, problems)
        exposure = micro * 1e-6 if micro is not None else None
    xbin = _number_or_note(values, ("XBINNING", "BINNING"), problems) or 1
    ybin = _number_or_note(values, ("YBINNING", "BINNING"), problems) or xbin
    return FrameMetadata(
        path=str(path.resolve()),
        relative_path=relative,
        type_text=hk.first_text(values, hk.TYPE_KEYS),
        exposure=exposure,
        filter=hk.first_text(values, hk.FILTER_KEYS),
        binning=(int(xbin), int(ybin)),
        shape=shape,
        gain=_number_or_note(values, hk.GAIN_KEYS, problems),
        offset=_number_or_note(values, hk.OFFSET_KEYS, problems),
        temperature=_number_or_note(values, hk.TEMPERATURE_KEYS, problems),
        date_obs=hk.first_text(values, hk.DATE_KEYS),
        object=hk.first_text(values, ("OBJECT",)),
        instrument=hk.first_text(values, ("INSTRUME",)),
        bayer_pattern=_bayer_text(values),
        bayer_x_offset=int(_number_or_note(values, ("XBAYROFF", "BAYOFFX"), problems) or 0),
        bayer_y_offset=int(_number_or_note(values, ("YBAYROFF", "BAYOFFY"), problems) or 0),
        row_order=hk.first_text(values, ("ROWORDER",)),
        file_size=stat.st_size,
        file_mtime_ns=stat.st_mtime_ns,
        saturation=_saturation(values, problems),
        warnings=tuple(problems),
    )


def _saturation(values: Mapping[str, Any], problems: list[str]) -> float | None:
    """The raw clipping level: SATURATE/DATAMAX, else the integer data type's largest value."""
    level = _number_or_note(values, ("SATURATE", "DATAMAX"), problems)
    if level is not None and level > 0:
        return float(level)
    bitpix = values.get("BITPIX")
    if not isinstance(bitpix, int) or bitpix <= 0:
        return None
    zero = _number_or_note(values, ("BZERO",), problems) or 0.0
    scale = _number_or_note(values, ("BSCALE",), problems) or 1.0
    largest = 255 if bitpix == 8 else 2 ** (bitpix - 1) - 1  # BITPIX 8 is unsigned
    return float(scale * largest + zero)


def _bayer_text(values: Mapping[str, Any]) -> str | None:
    text = hk.first_text(values, hk.BAYER_KEYS)
    if text is None:
        return None
    text = text.upper().replace(" ", "")
    return text if text in {"RGGB", "BGGR", "GRBG", "GBRG"} else None


def _number_or_note(
    values: Mapping[str, Any], keys: tuple[str, ...], notes: list[str]
) -> float | None:
    try:
        return hk.first_number(values, keys)
    except HeaderError as exc:
        notes.append(str(exc))
        return None
