from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from pipeline.errors import FrameReadError, HeaderError
from pipeline.io.fits import read_image, read_metadata, write_image
from pipeline.io.headers import first_number


def _write(path, header_cards, data=None):
    data = np.zeros((8, 10), dtype=np.uint16) if data is None else data
    hdu = fits.PrimaryHDU(data)
    for key, value in header_cards.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def test_decimal_comma_and_string_numbers():
    assert first_number({"EXPTIME": "6,4E-05"}, ("EXPTIME",)) == pytest.approx(6.4e-5)
    assert first_number({"EXPTIME": " '12.5' "}, ("EXPTIME",)) == 12.5
    with pytest.raises(HeaderError, match="EXPTIME = 'long'"):
        first_number({"EXPTIME": "long"}, ("EXPTIME",))


def test_real_asi120_decimal_comma_exposure(real_data):
    path = real_data / "asi120mc_lab_calib_osc" / "bias" / "Bias_ASIImg_frame0001.fit"
    metadata = read_metadata(path)
    assert metadata.exposure == pytest.approx(6.4e-5)
    assert metadata.type_text is None and metadata.bayer_pattern == "GRBG"


def test_uint16_bzero_is_read_in_physical_units(tmp_path):
    data = np.array([[0, 1000, 65535]], dtype=np.uint16)
    path = _write(tmp_path / "a.fits", {"IMAGETYP": "LIGHT"}, data)
    assert fits.getheader(path)["BZERO"] == 32768
    assert read_image(path).tolist() == [[0.0, 1000.0, 65535.0]]
    assert read_image(path).dtype == np.float32


def test_truncated_zero_byte_and_text_files_are_refused(tmp_path):
    good = _write(tmp_path / "good.fits", {"IMAGETYP": "LIGHT"}, np.zeros((100, 100), np.uint16))
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:-5000])
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    text = tmp_path / "notes.fits"
    text.write_text("observing log\n")
    with pytest.raises(FrameReadError, match="truncated"):
        read_metadata(truncated)
    with pytest.raises(FrameReadError, match="empty file"):
        read_metadata(empty)
    with pytest.raises(FrameReadError, match="not a readable FITS"):
        read_metadata(text)


def test_write_image_is_float32_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "m.fits"
    write_image(
        target,
        np.ones((4, 5), dtype=np.float64),
        cards={"NCOMBINE": (3, "n")},
        history=["made by a test"],
    )
    header = fits.getheader(target)
    assert header["BITPIX"] == -32 and header["NCOMBINE"] == 3
    assert "made by a test" in str(header["HISTORY"])
    assert [p.name for p in target.parent.iterdir()] == ["m.fits"]


def test_read_rows_reads_a_band(tmp_path):
    data = np.arange(60, dtype=np.uint16).reshape(6, 10)
    path = _write(tmp_path / "b.fits", {}, data)
    np.testing.assert_array_equal(read_image(path, rows=slice(2, 4)), data[2:4].astype(np.float32))


@pytest.mark.parametrize(
    ("cards", "data", "expected"),
    [
        ({"SATURATE": 60000}, None, 60000.0),
        ({"DATAMAX": 4095}, None, 4095.0),
        ({}, None, 65535.0),  # unsigned 16-bit: BZERO 32768
        ({}, np.zeros((8, 10), dtype=np.int16), 32767.0),
        ({}, np.zeros((8, 10), dtype=np.uint8), 255.0),
        ({}, np.zeros((8, 10), dtype=np.float32), None),
    ],
)
def test_saturation_level_from_header_or_data_type(tmp_path, cards, data, expected):
    path = _write(tmp_path / "f.fits", cards, data)
    assert read_metadata(path).saturation == expected
