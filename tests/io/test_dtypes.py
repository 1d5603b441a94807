"""Every common FITS pixel type is read in physical units (after BZERO/BSCALE) as float32."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from pipeline.io.fits import ImageReader, read_image

VALUES = np.array([[0.0, 1.0, 1000.0], [12345.0, 30000.0, 65535.0]])


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (np.uint16, VALUES),
        (np.int16, VALUES - 32768.0),
        (np.int32, VALUES * 1000.0 - 5e6),
        (np.uint32, VALUES * 1000.0),
        (np.float32, VALUES / 65535.0),
        (np.float64, VALUES * 1.5),
    ],
)
def test_pixel_types_are_read_as_physical_float32(tmp_path, dtype, values):
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(values.astype(dtype)).writeto(path)
    image = read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, values.astype(np.float32), rtol=1e-7)


def test_bscale_and_blank_are_applied(tmp_path):
    hdu = fits.PrimaryHDU(np.array([[1, 2], [3, -99]], dtype=np.int16))
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.header["BLANK"] = -99
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)
    with ImageReader(path) as reader:
        image = reader.read()
    assert image[0].tolist() == [100.5, 101.0]
    assert image[1, 0] == 101.5 and np.isnan(image[1, 1])


def test_input_file_is_not_modified_by_reading(tmp_path):
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(VALUES.astype(np.uint16)).writeto(path)
    before = path.read_bytes()
    image = read_image(path)
    image += 5
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "data",
    [
        np.arange(7 * 9, dtype=np.float32).reshape(7, 9) - 20.5,
        np.arange(3 * 7 * 9, dtype=np.float32).reshape(3, 7, 9) * 0.25,
        np.arange(7 * 9, dtype=np.uint16).reshape(7, 9) * 1000,
    ],
    ids=["float32", "float32-rgb", "uint16-bzero"],
)
def test_read_into_equals_read_for_every_band(tmp_path, data):
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(data).writeto(path)
    with ImageReader(path) as reader:
        for rows in (slice(0, 7), slice(2, 5), slice(6, 7)):
            out = np.empty(data.shape[:-2] + (rows.stop - rows.start, 9), dtype=np.float32)
            reader.read_into(out, rows)
            np.testing.assert_array_equal(out, reader.read(rows))


def test_read_into_refuses_a_wrong_buffer(tmp_path):
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.zeros((4, 5), dtype=np.float32)).writeto(path)
    with ImageReader(path) as reader, pytest.raises(ValueError, match="shape \\(2, 5\\)"):
        reader.read_into(np.empty((3, 5), dtype=np.float32), slice(0, 2))
