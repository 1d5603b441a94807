"""Keep going: bad files and failed subs are reported with their reason, the night goes on.

One small sample night is processed three times into the same output folder (later runs
reuse the cache): clean; then with five bad files among the L lights (through the CLI, for
its exit status and summary); then with two light groups that cannot succeed added (every
OIII sub is starless; the SII flats are black, so their master flat cannot be built).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.config.loader import load_config
from pipeline.config.models import DiscoveryConfig
from pipeline.engine.runner import Pipeline, RunSummary
from pipeline.frames import FrameMetadata
from pipeline.stages.discover import plan_night
from sample_data import NightTruth, generate_night

REPO = Path(__file__).resolve().parents[2]

BAD_L_FILES = {
    "L_truncated.fits": "truncated: ",
    "L_empty.fits": "empty file (0 bytes)",
    "x.fits": "not a readable FITS file",
    # the 6 L lights and the starless one are the L 60 s setup's 320x240 lights
    "L_half_size.fits": (
        "size mismatch: 160x120 pixels, while the 7 other lights of filter L, 60 s, bin 1x1 "
        "are 320x240"
    ),
    "L_no_stars.fits": "no stars: 0 detected",
}


@dataclass(frozen=True)
class Runs:
    night: Path
    truth: NightTruth
    clean: RunSummary
    bad_files: RunSummary
    cli: subprocess.CompletedProcess
    failing_groups: RunSummary


def _light_of(truth: NightTruth, filt: str) -> Path:
    return truth.path(truth.lights(filt)[0].path)


def _starless_copy(source: Path, target: Path, rng: np.random.Generator, **cards) -> None:
    """A valid light of ``source``'s header and size holding only sky and noise."""
    with fits.open(source) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.astype(np.float64)
    sky = np.median(data)
    sigma = 1.4826 * np.median(np.abs(data - sky))
    for key, value in cards.items():
        header[key] = value
    noise = rng.normal(sky, sigma, size=data.shape).clip(0, 65535).astype(np.uint16)
    fits.PrimaryHDU(data=noise, header=header).writeto(target)


def _add_bad_l_files(truth: NightTruth, rng: np.random.Generator) -> None:
    source = _light_of(truth, "L")
    folder = source.parent
    raw = source.read_bytes()
    (folder / "L_truncated.fits").write_bytes(raw[: len(raw) // 2])
    (folder / "L_empty.fits").write_bytes(b"")
    (folder / "x.fits").write_text("SIMPLE? no: a text file someone saved as .fits\n")
    with fits.open(source) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data
    # a valid light of the L setup at half the size (astropy sets NAXIS1/NAXIS2 from the data)
    fits.PrimaryHDU(data=data[::2, ::2].copy(), header=header).writeto(folder / "L_half_size.fits")
    _starless_copy(source, folder / "L_no_stars.fits", rng)


def _add_failing_groups(truth: NightTruth, rng: np.random.Generator) -> None:
    """Three starless OIII lights; three SII lights (copies of an L light) with black flats."""
    source = _light_of(truth, "L")
    for index in range(3):
        _starless_copy(source, source.parent / f"OIII_{index}.fits", rng, FILTER="OIII")
    with fits.open(source) as hdul:
        light_header, light = hdul[0].header.copy(), hdul[0].data
    light_header["FILTER"] = "SII"
    flat = truth.path(truth.flat_frames[0].path)
    with fits.open(flat) as hdul:
        flat_header, shape = hdul[0].header.copy(), hdul[0].data.shape
    flat_header["FILTER"] = "SII"
    flats = flat.parent.parent / "SII"
    flats.mkdir()
    for index in range(3):
        fits.PrimaryHDU(data=light, header=light_header).writeto(
            source.parent / f"SII_{index}.fits"
        )
        black = np.zeros(shape, dtype=np.uint16)
        fits.PrimaryHDU(data=black, header=flat_header).writeto(flats / f"Flat_SII_{index}.fits")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    tmp = tmp_path_factory.mktemp("bad_files")
    night, out = tmp / "night", tmp / "out"
    rng = np.random.default_rng(11)
    truth = generate_night(
        night, rng=np.random.default_rng(7), width=320, height=240, n_lights_per_filter=6
    )
    clean = Pipeline(load_config(None), out).run(night)
    _add_bad_l_files(truth, rng)
    cli = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(night), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    bad_files = Pipeline(load_config(None), out).run(night)  # all cached: the CLI's manifest
    _add_failing_groups(truth, rng)
    failing_groups = Pipeline(load_config(None), out).run(night)
    return Runs(night, truth, clean, bad_files, cli, failing_groups)


def _problem_reasons(summary: RunSummary) -> dict[str, str]:
    return {Path(p["path"]).name: p["reason"] for p in summary.manifest["problems"] if p["path"]}


def test_a_clean_night_is_complete(runs):
    manifest = runs.clean.manifest
    assert runs.clean.exit_code == 0
    assert manifest["status"] == "complete" and manifest["problems"] == []
    assert sorted(m["filter"] for m in manifest["masters"]) == ["Ha", "L"]
    # the blurred sub is left out by a selection rule: a normal outcome, no problem
    assert any((f["excluded"] or "").startswith("selection: FWHM") for f in manifest["frames"])


def test_every_bad_file_is_reported_with_a_specific_reason(runs):
    manifest = runs.bad_files.manifest
    reasons = _problem_reasons(runs.bad_files)
    assert sorted(reasons) == sorted(BAD_L_FILES)
    for name, expected in BAD_L_FILES.items():
        assert expected in reasons[name], (name, reasons[name])
    stages = {Path(p["path"]).name: p["stage"] for p in manifest["problems"]}
    assert stages.pop("L_no_stars.fits") == "measure"
    assert set(stages.values()) == {"discover"}
    skipped = {Path(s["path"]).name for s in manifest["skipped"]}
    assert skipped == set(BAD_L_FILES) - {"L_no_stars.fits"}
    (starless,) = [f for f in manifest["frames"] if f["path"].endswith("L_no_stars.fits")]
    assert starless["failed_stage"] == "measure" and starless["metrics"]["star_count"] == 0
    assert starless["excluded"].startswith("no stars")


def test_bad_files_give_the_partial_status_and_leave_the_masters_as_in_a_clean_run(runs):
    assert runs.bad_files.exit_code == 2
    assert runs.bad_files.manifest["status"] == "partial"
    clean = {m["group"]: m for m in runs.clean.manifest["masters"]}
    masters = {m["group"]: m for m in runs.bad_files.manifest["masters"]}
    assert sorted(masters) == sorted(clean)  # a master for every group, no master of 1 sub
    for group, master in masters.items():
        assert master["ncombine"] == clean[group]["ncombine"]
        assert fits.getheader(master["path"])["NCOMBINE"] == clean[group]["ncombine"]
        # the same subs: the very integration of the clean run
        assert (
            runs.bad_files.manifest["integration"][group]["key"]
            == runs.clean.manifest["integration"][group]["key"]
        )


def test_cli_exits_2_and_its_summary_lists_every_bad_file_with_its_reason(runs):
    assert runs.cli.returncode == 2, runs.cli.stderr
    out = runs.cli.stdout
    lines = out.splitlines()
    for name, expected in BAD_L_FILES.items():
        (line,) = [line for line in lines if line.strip().startswith("[") and name in line]
        assert expected in line
    for master in runs.bad_files.manifest["masters"]:
        (row,) = [line for line in lines if line.strip().startswith(master["group"])]
        assert row.split()[1] == str(master["ncombine"]) and row.endswith(master["path"])
    assert "status: partial (exit 2)" in out and "problems (5" in out and "done in" in out


def test_groups_that_cannot_succeed_fail_alone(runs):
    summary = runs.failing_groups
    manifest = summary.manifest
    assert summary.exit_code == 2 and manifest["status"] == "partial"
    integration = manifest["integration"]
    failed = {group: info["failed"] for group, info in integration.items() if "failed" in info}
    assert sorted(failed) == ["LIGHT_OIII_60s_bin1x1_320x240", "LIGHT_SII_60s_bin1x1_320x240"]
    assert "no usable sub: every sub of the group failed" in failed["LIGHT_OIII_60s_bin1x1_320x240"]
    clean = {m["group"]: m["ncombine"] for m in runs.clean.manifest["masters"]}
    assert {m["group"]: m["ncombine"] for m in manifest["masters"]} == clean
    frames = {Path(f["path"]).name: f for f in manifest["frames"]}
    for index in range(3):
        assert frames[f"OIII_{index}.fits"]["excluded"].startswith("no stars")
        sii = frames[f"SII_{index}.fits"]
        assert sii["failed_stage"] == "calibrate"
        assert "master flat FLAT_SII" in sii["excluded"] and "could not be built" in sii["excluded"]
    stages = {(p["stage"], p["group"]) for p in manifest["problems"] if p["path"] is None}
    assert any(stage == "master_flat" and group.startswith("FLAT_SII") for stage, group in stages)
    assert ("integrate", "LIGHT_OIII_60s_bin1x1_320x240") in stages
    assert ("integrate", "LIGHT_SII_60s_bin1x1_320x240") in stages


def _light(name: str, shape: tuple[int, int], filt: str = "L") -> FrameMetadata:
    return FrameMetadata(
        path=f"/night/{name}",
        relative_path=name,
        type_text="LIGHT",
        exposure=60.0,
        filter=filt,
        binning=(1, 1),
        shape=shape,
    )


@pytest.mark.parametrize(
    ("odd", "set_aside"), [(1, True), (2, True), (3, False)], ids=["1", "2", "3"]
)
def test_lights_of_an_odd_size_are_set_aside_unless_three_or_more(odd, set_aside):
    frames = [_light(f"L_{i}.fits", (240, 320)) for i in range(6)]
    frames += [_light(f"L_odd_{i}.fits", (120, 160)) for i in range(odd)]
    frames += [_light("Ha_small.fits", (120, 160), filt="Ha")]  # alone in its setup: kept
    plan = plan_night(frames, DiscoveryConfig())
    groups = {g.group_id: len(g.frames) for g in plan.groups}
    skipped = {Path(s.path).name: s.reason for s in plan.skipped}
    assert groups["LIGHT_L_60s_bin1x1_320x240"] == 6
    assert groups["LIGHT_Ha_60s_bin1x1_160x120"] == 1
    if set_aside:
        assert "LIGHT_L_60s_bin1x1_160x120" not in groups
        assert sorted(skipped) == [f"L_odd_{i}.fits" for i in range(odd)]
        assert all(r.startswith("size mismatch: 160x120 pixels") for r in skipped.values())
    else:  # a second camera: its own group
        assert groups["LIGHT_L_60s_bin1x1_160x120"] == 3 and not skipped
