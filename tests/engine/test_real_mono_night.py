"""End to end on the real SBIG ST-8 night (Bosscha Observatory; see its SOURCE.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.cli import main
from pipeline.config.models import MeasurementConfig
from pipeline.io.fits import read_image
from pipeline.stages.measure import measure_frame


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
    _assert_stars_of_master_are_round_and_as_sharp_as_the_subs(tmp_path / "out", manifest)


def _assert_stars_of_master_are_round_and_as_sharp_as_the_subs(outdir, manifest):
    """~50 px of drift over 20 subs: all register and stacking neither elongates nor blurs."""
    assert all(frame["excluded"] is None for frame in manifest["frames"])
    assert all(frame["registration"]["matched"] >= 20 for frame in manifest["frames"])
    config = MeasurementConfig(psf_stars=15)  # the brightest stars: high-SNR Moffat fits
    master = measure_frame(read_image(manifest["masters"][0]["path"]), config)
    assert master.eccentricity < 0.5
    registered = {
        path.name.split(".")[0]: measure_frame(read_image(path), config).fwhm
        for path in sorted((outdir / "work" / "register").glob("*.fits"))
    }
    assert len(registered) == 20
    assert master.fwhm <= 1.05 * float(np.mean(list(registered.values())))
    # within 10 % of the best (best-weighted, reference) sub's FWHM, measured the same way
    (best,) = [Path(f["path"]).stem for f in manifest["frames"] if f["reference"]]
    assert abs(master.fwhm / registered[best] - 1.0) < 0.10
