"""Process one filter of a night with Siril (``siril-cli``), the way its own scripts do.

Siril's preprocessing scripts (``/usr/share/siril/scripts/Mono_Preprocessing.ssf``) expect
``biases/``, ``darks/``, ``flats/`` and ``lights/`` folders; :func:`run_siril` builds them
from a night by symlinking the raw files of one light filter (with the darks of the lights'
exposure and the flats of that filter), writes the script (:func:`siril_script`) and runs
it as one measured process tree. The frame types come from the generator's truth
(``truth/truth.json``) when there is one, else from ``linearlink plan --json``.

Siril 1.0.6 has no ``calibrate ... -cc=dark`` (1.2 syntax): its ``preprocess`` corrects
the hot pixels found in the master dark by itself.

>>> run = run_siril("night", "work/siril", filter="L")      # doctest: +SKIP
>>> run.master, run.stats.wall_s                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proctree import ProcessStats, run_measured

__all__ = ["SirilFrames", "SirilRun", "frames_for_filter", "run_siril", "siril_script"]

SIRIL = "siril-cli"
FINDSTAR_SIGMA = 0.2
FOLDERS = {"bias": "biases", "dark": "darks", "flat": "flats", "light": "lights"}


@dataclass(frozen=True)
class SirilFrames:
    """The raw files of one light filter and its calibration frames (absolute paths).

    Attributes
    ----------
    lights : tuple of Path
        Lights of the filter, chronological; Siril numbers them in this order from 1.
    biases, darks, flats : tuple of Path
        Calibration frames: all bias, the darks of the lights' exposure, the filter's flats.
    light_exposure, dark_exposure : float
        Exposures (s); they differ when no dark of the lights' exposure exists (the
        closest is used, with Siril's dark optimisation ``-opt``).
    """

    lights: tuple[Path, ...]
    biases: tuple[Path, ...]
    darks: tuple[Path, ...]
    flats: tuple[Path, ...]
    light_exposure: float
    dark_exposure: float

    @property
    def dark_matches(self) -> bool:
        """Whether the darks have the lights' exposure (within 1 s)."""
        return abs(self.dark_exposure - self.light_exposure) <= 1.0


@dataclass(frozen=True)
class SirilRun:
    """Result of :func:`run_siril`.

    Attributes
    ----------
    master : Path or None
        The stacked master (``result.fits``), None when Siril failed.
    stats : ProcessStats
        Wall, CPU and peak RSS of the ``siril-cli`` process tree.
    frames : SirilFrames
        What was given to Siril.
    script : str
        The Siril script that was run.
    log : Path
        Siril's console output.
    workdir : Path
        Siril's working folder (inputs, ``process/``, result).
    """

    master: Path | None
    stats: ProcessStats
    frames: SirilFrames
    script: str
    log: Path
    workdir: Path


def frames_for_filter(night: str | Path, filter: str = "L") -> SirilFrames:
    """Pick the lights of ``filter`` and their calibration frames in ``night``.

    Uses ``night/truth/truth.json`` (a generated night) when present, else the groups and
    calibration plan of ``linearlink plan NIGHT --json``.

    Raises
    ------
    ValueError
        If the night has no light of ``filter``, or no bias, dark or flat for it.
    """
    night = Path(night).resolve()
    truth = night / "truth" / "truth.json"
    frames = _frames_from_truth(night, truth, filter) if truth.exists() else None
    if frames is None:
        frames = _frames_from_plan(night, filter)
    missing = [k for k in ("lights", "biases", "darks", "flats") if not getattr(frames, k)]
    if missing:
        raise ValueError(f"{night}: no {', '.join(missing)} for filter {filter!r}")
    return frames


def _frames_from_truth(night: Path, truth_json: Path, filter: str) -> SirilFrames:
    data = json.loads(truth_json.read_text(encoding="utf-8"))
    lights = [lt for lt in data["light_frames"] if lt["filter"] == filter]
    if not lights:
        raise ValueError(f"{night}: no light with filter {filter!r} in the truth")
    exposure = float(lights[0]["exposure"])
    dark_exposures = sorted({float(d["exposure"]) for d in data["dark_frames"]})
    dark_exposure = min(dark_exposures, key=lambda e: abs(e - exposure), default=exposure)
    return SirilFrames(
        lights=tuple(night / lt["path"] for lt in lights),
        biases=tuple(night / f["path"] for f in data["bias_frames"]),
        darks=tuple(
            night / f["path"] for f in data["dark_frames"] if f["exposure"] == dark_exposure
        ),
        flats=tuple(night / f["path"] for f in data["flat_frames"] if f["filter"] == filter),
        light_exposure=exposure,
        dark_exposure=dark_exposure,
    )


def _frames_from_plan(night: Path, filter: str) -> SirilFrames:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("linearlink")), "plan", str(night), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    plan = json.loads(out.stdout)
    groups = {g["id"]: g for g in plan["groups"]}
    light_groups = [g for g in plan["groups"] if g["type"] == "light" and g["filter"] == filter]
    if not light_groups:
        raise ValueError(f"{night}: linearlink plan finds no light group of filter {filter!r}")
    light = max(light_groups, key=lambda g: g["frames"])
    cal = next(c for c in plan["calibration_plan"] if c["light_group"] == light["id"])
    bias = cal.get("bias") or (cal.get("flat_calibration") or {}).get("bias")
    members: dict[str, list[Path]] = {}
    for entry in plan["inputs"]:
        members.setdefault(entry.get("group") or "", []).append(Path(entry["path"]))
    dark = cal.get("dark")
    return SirilFrames(
        lights=tuple(sorted(members.get(light["id"], []))),
        biases=tuple(sorted(members.get(bias or "", []))),
        darks=tuple(sorted(members.get(dark or "", []))),
        flats=tuple(sorted(members.get(cal.get("flat") or "", []))),
        light_exposure=float(light["exposure"]),
        dark_exposure=float(groups[dark]["exposure"]) if dark else float(light["exposure"]),
    )


def siril_script(
    frames: SirilFrames,
    *,
    rejection: str = "w",
    sigma: float = 3.0,
    findstar_sigma: float | None = FINDSTAR_SIGMA,
) -> str:
    """The Siril 1.0 script for ``frames`` (as ``Mono_Preprocessing.ssf``, 32-bit FITS).

    Master bias and dark: rejection stacks without normalisation; master flat: the flats
    calibrated by the master bias, stacked with multiplicative normalisation; lights
    calibrated by the master dark (bias included, as in Siril's own script; with
    ``-opt`` and the bias when the dark's exposure differs) and the master flat
    (Siril's cosmetic correction of hot pixels from the dark runs in ``preprocess``),
    registered by star matching, then stacked with ``rejection`` (``w`` winsorized,
    ``s`` sigma) at ``sigma`` low/high, additive + scale normalisation, noise weights
    (``-weighted``) and the output normalised to [0, 1].

    ``findstar_sigma`` sets the star detection threshold of ``register``
    (``setfindstar SIGMA 0.5``; None keeps Siril's default, 1.0, which finds only ~8
    stars in the generated nights and registers 1 sub of 12).
    """
    s = f"{sigma:g} {sigma:g}"
    opt = "" if frames.dark_matches else " -bias=master_bias -opt"
    findstar = [] if findstar_sigma is None else [f"setfindstar {findstar_sigma:g} 0.5"]
    return "\n".join(
        [
            "requires 1.0.0",
            "set32bits",
            "setext fits",
            *findstar,
            "cd biases",
            "convert bias -out=../process",
            "cd ../process",
            f"stack bias rej {rejection} {s} -nonorm -out=master_bias",
            "cd ../flats",
            "convert flat -out=../process",
            "cd ../process",
            "preprocess flat -bias=master_bias",
            f"stack pp_flat rej {rejection} {s} -norm=mul -out=master_flat",
            "cd ../darks",
            "convert dark -out=../process",
            "cd ../process",
            f"stack dark rej {rejection} {s} -nonorm -out=master_dark",
            "cd ../lights",
            "convert light -out=../process",
            "cd ../process",
            f"preprocess light -dark=master_dark -flat=master_flat{opt}",
            "register pp_light",
            f"stack r_pp_light rej {rejection} {s} -norm=addscale -output_norm -weighted"
            " -out=../result",
            "cd ..",
            "close",
            "",
        ]
    )


def _link_inputs(frames: SirilFrames, workdir: Path) -> None:
    """Symlink the frames into Siril's per-type folders, numbered in order."""
    sets = {
        "bias": frames.biases,
        "dark": frames.darks,
        "flat": frames.flats,
        "light": frames.lights,
    }
    for kind, paths in sets.items():
        folder = workdir / FOLDERS[kind]
        folder.mkdir(parents=True)
        for index, path in enumerate(paths, start=1):
            (folder / f"{kind}_{index:04d}.fits").symlink_to(Path(path).resolve())
    (workdir / "process").mkdir()


def run_siril(
    night: str | Path,
    workdir: str | Path,
    *,
    filter: str = "L",
    rejection: str = "w",
    sigma: float = 3.0,
    findstar_sigma: float | None = FINDSTAR_SIGMA,
) -> SirilRun:
    """Process the lights of ``filter`` in ``night`` with ``siril-cli`` inside ``workdir``.

    ``workdir`` is emptied first. The run is one fresh ``siril-cli -s`` process (with
    ``-i`` pointing at an empty config, so the user's Siril settings do not leak in),
    measured with :func:`benchmarks.proctree.run_measured`.

    Returns
    -------
    SirilRun
        The master path (None when Siril failed; see ``log``) and the measurements.
    """
    if shutil.which(SIRIL) is None:
        raise FileNotFoundError(f"{SIRIL} not found on PATH (Debian/Ubuntu: apt install siril)")
    frames = frames_for_filter(night, filter)
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    _link_inputs(frames, workdir)
    script = siril_script(frames, rejection=rejection, sigma=sigma, findstar_sigma=findstar_sigma)
    (workdir / "preprocess.ssf").write_text(script, encoding="utf-8")
    config = workdir / "siril.config"
    config.touch()
    log = workdir / "siril.log"
    stats = run_measured(
        [SIRIL, "-i", str(config), "-d", str(workdir), "-s", str(workdir / "preprocess.ssf")],
        cwd=workdir,
        log=log,
    )
    master = workdir / "result.fits"
    ok = stats.returncode == 0 and master.exists()
    return SirilRun(
        master=master if ok else None,
        stats=stats,
        frames=frames,
        script=script,
        log=log,
        workdir=workdir,
    )
