"""Local normalization equalises gradients that change from sub to sub.

The night: the sample night with a 5 % sky gradient (centre to corner) whose direction
turns by 36 degrees from one sub to the next (``gradient="rotating"``), as when moonlight
or light pollution comes from a different side in every sub. Over the night the gradients
cancel, so an ideal master is flat; every sub is integrated (the selection rule that
drops the blurred sub is relaxed) so that nothing breaks that symmetry.

Flatness is measured against the generator's truth: the master minus a least-squares fit
of the gradient-free scene (sky level, nebula, stars of the reference sub), over the
star-free pixels covered by every sub, in 64-pixel blocks; the RMS of the block medians
relative to the background level is the flatness (the plane fitted through them gives
the peak-to-peak of the residual gradient).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline
from sample_data import generate_night

BLOCK = 64
KEEP_ALL = ("selection.max_fwhm_ratio=3",)


@pytest.fixture(scope="module")
def rotating_night(tmp_path_factory):
    """The rotating-gradient night processed with and without local normalization."""
    root = tmp_path_factory.mktemp("rotating")
    truth = generate_night(
        root / "night", rng=np.random.default_rng(7), gradient="rotating", gradient_amplitude=0.05
    )
    runs = {}
    for name, overrides in (("ln", KEEP_ALL), ("global", KEEP_ALL + ("normalization.local=null",))):
        runs[name] = Pipeline(load_config(None, overrides), root / name).run(root / "night")
    return root / "night", truth, runs


def _flatness(night: Path, truth, outdir: Path, group: str) -> tuple[float, float, int]:
    """(RMS of block medians, peak-to-peak of their plane) / background, and subs used."""
    manifest = json.loads((outdir / "run.json").read_text())
    info = manifest["integration"][group]
    light = truth.light(str(Path(info["reference"]).relative_to(night)))
    stars = truth.star_image(light)
    # the clean sky of the reference: no gradient, and no trail even if the reference has one
    scene = truth.clean_background(dataclasses.replace(light, sky_gradient=0.0), trail=False)
    scene = scene + stars
    with fits.open(outdir / "masters" / f"master_light_{group}.fits") as hdul:
        master = hdul[0].data.astype(np.float64)
        seen = hdul["COUNT"].data + hdul["REJLOW"].data + hdul["REJHIGH"].data
    usable = (seen == info["ncombine"]) & (stars < 1.0) & np.isfinite(master)
    design = np.column_stack([scene[usable], np.ones(usable.sum())])
    (gain, offset), *_ = np.linalg.lstsq(design, master[usable], rcond=None)
    residual = np.where(usable, master - gain * scene - offset, np.nan)
    level = gain * np.median(scene[usable]) + offset
    medians, centres = [], []
    for y in range(0, residual.shape[0] - BLOCK + 1, BLOCK):
        for x in range(0, residual.shape[1] - BLOCK + 1, BLOCK):
            block = residual[y : y + BLOCK, x : x + BLOCK]
            if np.isfinite(block).mean() > 0.5:
                medians.append(np.nanmedian(block))
                centres.append((x + BLOCK / 2, y + BLOCK / 2))
    medians, centres = np.array(medians), np.array(centres)
    plane = np.column_stack([np.ones(len(medians)), centres])
    _, slope_x, slope_y = np.linalg.lstsq(plane, medians, rcond=None)[0]
    height, width = master.shape
    peak_to_peak = abs(slope_x) * width + abs(slope_y) * height
    return float(np.std(medians) / level), float(peak_to_peak / level), info["ncombine"]


@pytest.mark.parametrize("filt", ["L", "Ha"])
def test_local_normalization_flattens_rotating_gradients(rotating_night, filt):
    night, truth, runs = rotating_night
    group = next(g for g in runs["ln"].manifest["integration"] if f"_{filt}_" in g)
    rms_ln, ptp_ln, used = _flatness(night, truth, runs["ln"].manifest_path.parent, group)
    rms_global, ptp_global, _ = _flatness(night, truth, runs["global"].manifest_path.parent, group)
    assert used == 10  # every sub integrated: the night's gradients cancel
    print(f"{filt}: LN RMS {rms_ln:.3%} p-p {ptp_ln:.3%}; ", end="")
    print(f"global RMS {rms_global:.3%} p-p {ptp_global:.3%}")
    assert rms_ln < 0.001, f"LN flatness {rms_ln:.3%} (global only {rms_global:.3%})"
    if filt == "L":  # unequal weights (a cloudy sub) leave a gradient without LN
        assert rms_global > 2 * rms_ln, f"global {rms_global:.3%} vs LN {rms_ln:.3%}"
        assert ptp_global > 2 * ptp_ln, f"global {ptp_global:.3%} vs LN {ptp_ln:.3%}"


def test_master_records_local_normalization(rotating_night):
    _, _, runs = rotating_night
    for master in runs["ln"].manifest["masters"]:
        assert fits.getheader(master["path"])["LLLOCALN"] == 1024
    for master in runs["global"].manifest["masters"]:
        assert fits.getheader(master["path"])["LLLOCALN"] == "off"
