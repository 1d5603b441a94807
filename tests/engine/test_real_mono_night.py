"""End to end on the real SBIG ST-8 night (Bosscha Observatory; see its SOURCE.md)."""

from __future__ import annotations

import hashlib
import json

import pytest
from astropy.io import fits

from pipeline.cli import main


def _checksums(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.fit"))}


@pytest.mark.slow
def test_real_mono_night_one_master_with_the_right_calibration(real_data, tmp_path, capsys):
    night = real_data / "bosscha_st8_zzmic_V_mono"
    before = _checksums(night)
    assert main(["plan", str(night), "-o", str(tmp_path / "out")]) == 0
    plan_text = capsys.readouterr().out
    assert "refuse bias      BIAS_0s_bin2x2_765x510: binning 2x2 differs from 1x1" in plan_text

    assert main(["run", str(night), "-o", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    (master,) = manifest["masters"]
    assert master["filter"] == "V" and master["ncombine"] == 20
    header = fits.getheader(master["path"])
    assert header["IMAGETYP"] == "MASTER LIGHT" and header["NCOMBINE"] == 20
    (entry,) = manifest["calibration_plan"]
    assert entry["dark"] == "DARK_25s_bin1x1_1530x1020" and not entry["dark_scaled"]
    assert entry["bias"] is None
    assert entry["flat_calibration"]["dark_flat"] == "DARK_FLAT_3s_bin1x1_1530x1020"
    refused = [c for c in entry["considered"] if c["role"] == "bias"]
    assert refused and not refused[0]["used"] and "binning 2x2 differs" in refused[0]["reason"]
    assert header["MDARK"].startswith("DARK_25s") and header["MBIAS"] == "none"
    assert _checksums(night) == before
