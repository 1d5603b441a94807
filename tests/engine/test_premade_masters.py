"""Pre-made masters from a calibration library, and masters pinned in the configuration."""

from __future__ import annotations

import shutil

from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline


def test_library_master_dark_replaces_missing_darks_and_pinned_flat_wins(tmp_path, process_night):
    first = process_night(tmp_path / "first")
    published = {
        c["group"]: c["path"]
        for c in first.summary.manifest["calibration_masters"]
        if c["kind"] != "defects"
    }
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(published["DARK_60s_bin1x1_640x480"], library / "master_dark_60s.fits")
    night = tmp_path / "night_without_60s_darks"
    shutil.copytree(first.night, night, ignore=shutil.ignore_patterns("Dark_60s_*"))

    overrides = [
        f"calibration.library={library}",
        f"calibration.masters.flat={published['FLAT_L_2s_bin1x1_640x480']}",
    ]
    summary = Pipeline(load_config(None, overrides), tmp_path / "out").run(night)
    assert summary.exit_code == 0
    plans = {p["light_group"]: p for p in summary.manifest["calibration_plan"]}
    lum = plans["LIGHT_L_60s_bin1x1_640x480"]
    assert lum["dark"] == "PREMADE_DARK_master_dark_60s" and not lum["dark_scaled"]
    assert lum["flat"].startswith("PINNED_FLAT_")
    assert plans["LIGHT_Ha_180s_bin1x1_640x480"]["flat"] == "FLAT_Ha_6s_bin1x1_640x480"
    refused = [
        c
        for c in plans["LIGHT_Ha_180s_bin1x1_640x480"]["considered"]
        if c["group_id"].startswith("PINNED_FLAT_")
    ]
    assert "filter 'L' differs from 'Ha'" in refused[0]["reason"]
    kinds = [c for c in summary.manifest["calibration_masters"] if c["group"].startswith("PREMADE")]
    assert sorted(c["kind"] for c in kinds) == ["dark", "defects"]
