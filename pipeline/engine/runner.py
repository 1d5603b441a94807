"""Build the dask graph of a night, run it with the stage cache, publish outputs, write run.json.

Graph shape per light group::

    masters (bias, dark, dark-flat, then flat) + defect map
        └─> calibrate+measure (per sub) ─> reference ─> register (per sub)
                                                            └─> integrate ─> preview

and, once every light group is integrated, one colour combination of the masters whose
filters the ``combine`` palette names. Tasks move file paths and small records, never arrays.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from dask import delayed

from pipeline import __version__
from pipeline.config.models import PipelineConfig, PSFSignalWeighting
from pipeline.engine import combine as combination
from pipeline.engine import execution, tasks
from pipeline.engine.lock import OutputLock, lock_holder
from pipeline.engine.report import write_report
from pipeline.engine.scan import scan_night
from pipeline.engine.store import Store, write_json_atomic
from pipeline.errors import ConfigError, DiskFullError, FrameReadError, LinearLinkError
from pipeline.frames import FrameType
from pipeline.io.fits import read_metadata
from pipeline.provenance import keys
from pipeline.stages import calibrate, select
from pipeline.stages.discover import (
    OUTPUT_FILE_REASON,
    FrameGroup,
    LightPlan,
    NightPlan,
    plan_night,
)

__all__ = ["EXIT_CODES", "Pipeline", "RunSummary", "STAGES"]

STAGES = (
    "master_bias",
    "master_dark",
    "master_dark_flat",
    "master_flat",
    "defects",
    "calibrate",
    "measure",
    "register",
    "integrate",
    "preview",
    "combine",
)
Record = dict[str, Any]


@dataclass(frozen=True)
class RunSummary:
    """What a run produced: the manifest and an exit status."""

    manifest: dict[str, Any]
    manifest_path: Path
    exit_code: int


class Pipeline:
    """Runs LinearLink on one night folder into one output folder."""

    def __init__(
        self,
        config: PipelineConfig,
        outdir: str | Path,
        log: Callable[[str], None] | None = None,
        *,
        progress: TextIO | None = None,
    ) -> None:
        """``log`` receives the run's messages (they also go to ``OUTDIR/linearlink.log``);
        ``progress`` (e.g. ``sys.stderr``) shows each stage's progress while the graph runs."""
        self.config = config
        self.outdir = Path(outdir).resolve()
        self.store = Store(self.outdir)
        self.log = log or (lambda message: None)
        self.progress = progress

    # ------------------------------------------------------------------ discovery
    def discover(self, night: str | Path) -> NightPlan:
        """Scan the night folder's headers and decide groups and calibration."""
        calibration = self.config.calibration
        frames, unreadable = scan_night(night, self.config.discovery, exclude=(self.outdir,))
        library: list = []
        if calibration.library:
            folder = Path(calibration.library).expanduser()
            if not folder.is_dir():
                raise ConfigError(
                    [
                        f"calibration.library: {str(folder)!r} is not a folder; "
                        "fix the path or remove the setting"
                    ]
                )
            library, unreadable_library = scan_night(folder, self.config.discovery)
            unreadable += unreadable_library
        plan = plan_night(
            frames,
            self.config.discovery,
            dark_scaling=calibration.dark_scaling,
            library=library,
            pinned=_pinned_masters(calibration),
        )
        return NightPlan(
            plan.groups,
            plan.lights,
            plan.flats,
            tuple(unreadable) + plan.skipped,
            plan.classification,
        )

    def plan(self, night: str | Path) -> dict[str, Any]:
        """Describe what a run would do and which stage results are already cached."""
        plan = self.discover(night)
        description = describe_plan(plan)
        description["cache"] = self._cache_status(plan)
        holder = lock_holder(self.outdir)  # plan only reads: it takes no lock
        description["locked_by"] = vars(holder) if holder else None
        return description

    # ------------------------------------------------------------------ run
    def run(self, night: str | Path) -> RunSummary:
        """Execute the whole graph and write ``run.json``; returns the summary.

        The output folder is locked for the run (released however it ends); a stale lock of
        a run that died is taken over, and the temporary files that run left are removed.

        Raises
        ------
        OutputLockedError
            If another run is using the output folder.
        """
        with OutputLock(self.outdir) as lock, self._log_file():
            note = lock.takeover_note()
            if note:
                self.log(note)
            removed = lock.remove_stale_temporaries()
            if removed:
                self.log(f"removed {len(removed)} temporary files of an interrupted run")
            return self._run_locked(night)

    @contextmanager
    def _log_file(self) -> Iterator[None]:
        """Also write every log line, timestamped, to ``OUTDIR/linearlink.log`` (appended)."""
        user_log = self.log
        with open(self.outdir / "linearlink.log", "a", encoding="utf-8") as handle:

            def log(message: str) -> None:
                stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
                handle.write(f"{stamp} {message}\n")
                handle.flush()
                user_log(message)

            self.log = log
            try:
                yield
            finally:
                self.log = user_log

    def _run_locked(self, night: str | Path) -> RunSummary:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        night = Path(night).resolve()
        plan = self.discover(night)
        self.log(
            f"found {sum(len(g.frames) for g in plan.groups)} frames in "
            f"{len(plan.groups)} groups; {len(plan.skipped)} files skipped"
        )
        graph = self._graph(plan)
        results = execution.compute(graph, self.config.engine, log=self.log, progress=self.progress)
        published = self._publish(plan, results)
        manifest = self._manifest(
            night, plan, results, published, started, time.perf_counter() - clock
        )
        path = self.outdir / "run.json"
        write_json_atomic(path, manifest)
        try:
            self.log(f"report: {write_report(manifest, self.outdir)}")
        except (OSError, ValueError, RuntimeError) as exc:  # the masters are written already
            self.log(f"report not written: {exc}")
        return RunSummary(manifest, path, _exit_code(manifest))

    def _graph(self, plan: NightPlan) -> dict[str, Any]:
        store, config = self.store, self.config

        def make_master(kind: str, group: FrameGroup, subtract: Any, pattern: str | None) -> Any:
            return delayed(_master_or_fail, pure=True)(
                store,
                kind,
                group,
                config,
                subtract=subtract,
                pattern=pattern,
                dask_key_name=f"master-{group.group_id}",
            )

        def make_defects(dark: Any, group_id: str, pattern: str | None) -> Any:
            return delayed(_defects_or_fail, pure=True)(
                store, dark, config, pattern, group_id, dask_key_name=f"defects-{group_id}"
            )

        wiring = CalibrationWiring(plan, config, make_master, make_defects)
        wiring.all_masters()
        groups = {
            lp.light_group: self._group_nodes(plan, lp, wiring.light(lp)) for lp in plan.lights
        }
        masters = [(plan.group(g).filter, nodes["integrate"]) for g, nodes in groups.items()]
        combined = delayed(_combine_or_fail, pure=True)(
            store, masters, config, dask_key_name="combine"
        )
        return {
            "masters": wiring.nodes,
            "defects": wiring.defect_nodes,
            "groups": groups,
            "combine": combined,
        }

    def _group_nodes(
        self, plan: NightPlan, light_plan: LightPlan, calibration: tasks.LightCalibration
    ) -> dict[str, Any]:
        group = plan.group(light_plan.light_group)
        lights = [
            delayed(_calibrate_light, pure=True)(
                self.store,
                frame,
                calibration.masters,
                calibration.dark_exposure,
                calibration.optimize_dark,
                calibration.pattern,
                self.config,
                dask_key_name=f"calibrate-{group.group_id}-{index}",
            )
            for index, frame in enumerate(group.frames)
        ]
        selection = delayed(_select_or_fail, pure=True)(
            lights, self.config, dask_key_name=f"select-{group.group_id}"
        )
        registered = [
            delayed(_register_selected, pure=True)(
                self.store,
                light,
                selection,
                self.config,
                dask_key_name=f"register-{group.group_id}-{index}",
            )
            for index, light in enumerate(lights)
        ]
        master = delayed(_integrate_or_fail, pure=True)(
            self.store,
            group,
            registered,
            selection,
            calibration.masters,
            self.config,
            dask_key_name=f"integrate-{group.group_id}",
        )
        shown = delayed(_preview_or_skip, pure=True)(
            self.store, master, self.config, dask_key_name=f"preview-{group.group_id}"
        )
        return {"lights": registered, "selection": selection, "integrate": master, "preview": shown}

    # ------------------------------------------------------------------ publishing
    def _publish(self, plan: NightPlan, results: dict[str, Any]) -> dict[str, Any]:
        published: dict[str, Any] = {"masters": [], "calibration": []}
        for group_id, record in results["masters"].items():
            if "failed" in record:
                continue
            kind = record["result"]["kind"]
            target = self.outdir / "masters" / "calibration" / f"master_{kind}_{group_id}.fits"
            _link(self.store.absolute(record["outputs"]["master"]), target)
            published["calibration"].append({"group": group_id, "kind": kind, "path": str(target)})
        for group_id, record in results["defects"].items():
            if "failed" in record:
                continue
            target = self.outdir / "masters" / "calibration" / f"defects_{group_id}.fits"
            _link(self.store.absolute(record["outputs"]["master"]), target)
            published["calibration"].append(
                {
                    "group": group_id,
                    "kind": "defects",
                    "path": str(target),
                    "hot": record["result"]["hot"],
                    "cold": record["result"]["cold"],
                }
            )
        for group_id, nodes in results["groups"].items():
            master = nodes["integrate"]
            if "failed" in master:
                continue
            group = plan.group(group_id)
            target = self.outdir / "masters" / f"master_light_{group_id}.fits"
            _link(self.store.absolute(master["outputs"]["master"]), target)
            entry = {
                "group": group_id,
                "filter": group.filter,
                "path": str(target),
                "ncombine": master["result"]["ncombine"],
                "preview": None,
            }
            preview = nodes["preview"]
            if preview and "outputs" in preview:
                png = self.outdir / "previews" / f"master_light_{group_id}.png"
                _link(self.store.absolute(preview["outputs"]["preview"]), png)
                entry["preview"] = str(png)
            published["masters"].append(entry)
        published["combined"] = self._publish_combination(results["combine"])
        return published

    def _publish_combination(self, record: Record | None) -> dict[str, Any] | None:
        """Link the colour combination's files into ``masters/`` and ``previews/``."""
        if not record or "failed" in record:
            return None
        places = {
            "rgb": ("masters", "combined_RGB.fits"),
            "luminance": ("masters", "combined_L.fits"),
            "background": ("masters", "combined_background.fits"),
            "linked_preview": ("previews", "combined_linked.png"),
            "unlinked_preview": ("previews", "combined_unlinked.png"),
            "stf_preview": ("previews", "combined_stf.png"),
        }
        outputs = {}
        for name, relative in record["outputs"].items():
            folder, file_name = places[name]
            target = self.outdir / folder / file_name
            _link(self.store.absolute(relative), target)
            outputs[name] = str(target)
        return {"outputs": outputs, **record["result"]}

    # ------------------------------------------------------------------ manifest
    def _manifest(
        self,
        night: Path,
        plan: NightPlan,
        results: dict[str, Any],
        published: dict[str, Any],
        started: datetime,
        seconds: float,
    ) -> dict[str, Any]:
        description = describe_plan(plan)
        records = _all_records(results)
        frames = _frame_reports(results)
        problems = _problems(description["skipped"], frames, results)
        return {
            "status": _status(published, results, problems),
            "problems": problems,
            "linearlink_version": __version__,
            "night": str(night),
            "output": str(self.outdir),
            "started": started.isoformat(),
            "seconds": round(seconds, 3),
            "config": self.config.model_dump(mode="json"),
            "config_hash": keys.config_hash(self.config),
            "masters": published["masters"],
            "combined": published["combined"],
            "calibration_masters": published["calibration"],
            "groups": description["groups"],
            "calibration_plan": description["calibration_plan"],
            "inputs": description["inputs"],
            "skipped": description["skipped"],
            "frames": frames,
            "integration": {g: _integration_report(n) for g, n in results["groups"].items()},
            "stages": _stage_report(records),
        }

    def _cache_status(self, plan: NightPlan) -> dict[str, dict[str, int]]:
        status = {stage: {"cached": 0, "to_compute": 0, "unknown": 0} for stage in STAGES}
        _CachePlanner(self.store, self.config, plan, status).run()
        return status


# ---------------------------------------------------------------------- graph helpers
def _pinned_masters(calibration) -> dict[FrameType, Any]:
    """Header records of the master files the configuration pins, checked to exist."""
    pinned, problems = {}, []
    for kind, frame_type in (
        ("bias", FrameType.BIAS),
        ("dark", FrameType.DARK),
        ("flat", FrameType.FLAT),
        ("dark_flat", FrameType.DARK_FLAT),
    ):
        path = getattr(calibration.masters, kind)
        if path is None:
            continue
        try:
            pinned[frame_type] = read_metadata(Path(path).expanduser())
        except FrameReadError as exc:
            problems.append(f"calibration.masters.{kind}: {exc}")
    if problems:
        raise ConfigError(problems)
    return pinned


def select_subs(lights: list[Record], config: PipelineConfig) -> Record:
    """Apply the selection rules to a group's measured subs and pick the reference.

    The reference is the kept sub with the best PSF Signal Weight on common terms (sharp
    stars, clear sky, low noise), whatever ``weighting.weights`` the integration uses.

    Returns
    -------
    dict
        ``reference`` (the record of the reference sub), ``excluded`` (frame -> reason) and
        ``weights`` (frame -> relative weight before normalization).
    """
    measured = [light for light in lights if "excluded" not in light]
    if not measured:
        raise LinearLinkError(
            "no usable sub: every sub of the group failed to calibrate or measure, or showed "
            "too few stars to register (see each sub's reason)"
        )
    metrics = [light["measure"]["result"]["metrics"] for light in measured]
    reasons = select.exclusions(metrics, config.selection)
    ratios = _provisional_flux_ratios(measured, config)
    weights = select.sub_weights(metrics, config.weighting.weights, flux_ratios=ratios)
    # the reference: sharp and well exposed, whatever weights the integration uses
    quality = select.sub_weights(metrics, PSFSignalWeighting(), flux_ratios=ratios)
    excluded = {light["frame"]: r for light, r in zip(measured, reasons, strict=True) if r}
    kept = [(light, q) for light, q, r in zip(measured, quality, reasons, strict=True) if not r]
    requested = config.registration.reference
    if requested != "auto":
        reference = _named_reference(measured, requested)
        excluded.pop(reference["frame"], None)
    elif kept:
        reference = max(kept, key=lambda pair: pair[1])[0]
    else:
        raise LinearLinkError(
            "every sub of the group was excluded by the selection rules: "
            + "; ".join(f"{Path(f).name}: {r}" for f, r in excluded.items())
            + " (relax the selection section)"
        )
    return {
        "reference": reference,
        "excluded": excluded,
        "weights": {light["frame"]: float(w) for light, w in zip(measured, weights, strict=True)},
    }


def _provisional_flux_ratios(measured: list[Record], config: PipelineConfig) -> np.ndarray:
    """Every sub's flux ratio to the sub with the most stars (weights before registration)."""
    tables = [
        np.asarray(light["measure"]["result"]["stars"], dtype=np.float64).reshape(-1, 3)
        for light in measured
    ]
    counts = [light["measure"]["result"]["metrics"]["star_count"] for light in measured]
    flags = [
        tasks.saturated_flags(light, len(t)) for light, t in zip(measured, tables, strict=True)
    ]
    return select.provisional_flux_ratios(
        tables, int(np.argmax(counts)), config.registration, saturated=flags
    )


def _named_reference(lights: list[Record], requested: str) -> Record:
    for light in lights:
        if Path(light["frame"]).name == requested or light["frame"] == requested:
            return light
    names = ", ".join(Path(light["frame"]).name for light in lights)
    raise LinearLinkError(
        f"registration.reference: {requested!r} is not a usable light of this group; "
        f"choose one of: {names}, or 'auto'"
    )


def _select_or_fail(lights: list[Record], config: PipelineConfig) -> Record:
    """:func:`select_subs`, or ``{"failed": reason}`` when the group has no usable sub."""
    try:
        return select_subs(lights, config)
    except DiskFullError:
        raise  # a full disk stops the night
    except Exception as exc:  # one group's failure must not stop the other groups
        return {"failed": tasks.error_text(exc), "excluded": {}, "weights": {}, "reference": None}


def _master_or_fail(
    store: Store, kind: str, group: FrameGroup, config, *, subtract=None, pattern=None
) -> Record:
    """A calibration master, or ``{"failed": reason}``: only the groups using it then fail."""
    failed = {"group": group.group_id, "kind": kind}
    if subtract is not None and "failed" in subtract:
        return {**failed, "failed": f"it needs master {subtract['group']}, which failed"}
    try:
        return tasks.master_frame(store, kind, group, config, subtract=subtract, pattern=pattern)
    except DiskFullError:
        raise  # a full disk stops the night
    except Exception as exc:  # one calibration group's failure must not stop the night
        return {**failed, "failed": tasks.error_text(exc)}


def _defects_or_fail(store: Store, dark: Record, config, pattern, group_id: str) -> Record:
    failed = {"group": group_id, "kind": "defects"}
    if "failed" in dark:
        return {**failed, "failed": f"its master dark {group_id} failed"}
    try:
        return tasks.defect_map(store, dark, config, pattern)
    except DiskFullError:
        raise  # a full disk stops the night
    except Exception as exc:  # one calibration group's failure must not stop the night
        return {**failed, "failed": tasks.error_text(exc)}


def _register_selected(store: Store, light: Record, selection: Record, config) -> Record:
    if "excluded" in light:
        return light
    if "failed" in selection:
        return {**light, "excluded": f"not integrated: the group failed ({selection['failed']})"}
    reason = selection["excluded"].get(light["frame"])
    if reason is not None:
        return {**light, "excluded": f"selection: {reason}"}
    return tasks.register_frame(store, light, selection["reference"], config)


def _integrate_or_fail(
    store, group: FrameGroup, registered, selection, calibration, config
) -> Record:
    if "failed" in selection:
        return {"failed": selection["failed"], "group": group.group_id}
    subs = [sub for sub in registered if "excluded" not in sub]
    excluded = [sub for sub in registered if "excluded" in sub]
    try:
        return tasks.integrate_group(
            store,
            group,
            subs,
            selection["reference"]["frame"],
            calibration,
            config,
            excluded=excluded,
        )
    except DiskFullError:
        raise  # a full disk stops the night
    except Exception as exc:  # one group's failure must not stop the other groups
        return {"failed": tasks.error_text(exc), "group": group.group_id}


def _preview_or_skip(store, master: Record, config) -> Record | None:
    if "failed" in master:
        return None
    try:
        return tasks.preview_master(store, master, config)
    except DiskFullError:
        raise  # a full disk stops the night
    except Exception as exc:  # the master is written; a missing preview is a problem only
        return {"failed": tasks.error_text(exc)}


def _combine_or_fail(store, masters: list, config) -> Record | None:
    """The colour combination of the run's masters; None when the palette is incomplete."""
    available = [(name, record) for name, record in masters if "failed" not in record]
    try:
        return combination.combine_run_masters(store, available, config)
    except DiskFullError:
        raise  # a full disk stops the night
    except Exception as exc:  # the masters are written; a failed combination is a problem only
        return {"failed": tasks.error_text(exc)}


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copy2(source, temporary)
    os.replace(temporary, target)


EXIT_CODES = {"complete": 0, "partial": 2, "failed": 1}
"""Exit status of ``linearlink run`` for each run status (README, "Exit status")."""


def _exit_code(manifest: dict[str, Any]) -> int:
    """0 complete, 2 partial, 1 failed: see :func:`_status`."""
    return EXIT_CODES[manifest["status"]]


def _status(published: dict[str, Any], results: dict[str, Any], problems: list) -> str:
    """``complete``: every light group has its master (a calibration-only night: its masters)
    and nothing went wrong; ``partial``: something was written, but a group failed or there are
    problems (unusable input files, subs lost to an error); ``failed``: nothing was written.

    Subs left out by the selection rules (FWHM, eccentricity, stars, weight) are no problem.
    """
    expected = len(results["groups"])
    written = len(published["masters"]) if expected else len(published["calibration"])
    if not written:
        return "failed"
    return "complete" if written >= expected and not problems else "partial"


def _problems(
    skipped: list[dict[str, Any]], frames: list[dict[str, Any]], results: dict[str, Any]
) -> list[dict[str, Any]]:
    """Everything that went wrong, one entry each: path (or None), group, stage, reason."""
    problems = [
        {
            "path": s["path"],
            "group": None,
            "stage": "discover",
            "reason": s["reason"].removeprefix(f"{s['path']}: "),
        }
        for s in skipped
        if s["reason"] != OUTPUT_FILE_REASON
    ]
    for kind in ("masters", "defects"):
        problems += [
            {"path": None, "group": group, "stage": _master_stage(r["kind"]), "reason": r["failed"]}
            for group, r in results[kind].items()
            if "failed" in r
        ]
    problems += [
        {
            "path": f["path"],
            "group": f["group"],
            "stage": f["failed_stage"],
            "reason": f["excluded"].removeprefix(f"{f['path']}: "),
        }
        for f in frames
        if f["failed_stage"]
    ]
    for group, nodes in results["groups"].items():
        for stage in ("integrate", "preview"):
            if nodes[stage] and "failed" in nodes[stage]:
                problems.append(
                    {"path": None, "group": group, "stage": stage, "reason": nodes[stage]["failed"]}
                )
    if results["combine"] and "failed" in results["combine"]:
        problems.append(
            {
                "path": None,
                "group": None,
                "stage": "combine",
                "reason": results["combine"]["failed"],
            }
        )
    return problems


# ---------------------------------------------------------------------- reports
def describe_plan(plan: NightPlan) -> dict[str, Any]:
    """A JSON-ready description of groups, calibration choices, inputs and skipped files."""
    group_of = {frame.path: group.group_id for group in plan.groups for frame in group.frames}
    return {
        "groups": [
            {
                "id": g.group_id,
                "type": g.frame_type.value,
                "filter": g.filter,
                "exposure": g.exposure,
                "binning": list(g.binning),
                "size": [g.shape[-1], g.shape[-2]],
                "frames": len(g.frames),
                "temperature": g.temperature,
            }
            for g in plan.groups
        ],
        "calibration_plan": [
            {
                "light_group": lp.light_group,
                "bias": lp.bias_group,
                "dark": lp.dark_group,
                "dark_scaled": lp.dark_scaled,
                "flat": lp.flat_group,
                "flat_calibration": _flat_description(plan, lp.flat_group),
                "considered": [vars(c) for c in lp.considered],
            }
            for lp in plan.lights
        ],
        "inputs": [
            {"path": path, "classification": how, "group": group_of.get(path)}
            for path, how in plan.classification.items()
        ],
        "skipped": [{"path": s.path, "reason": s.reason} for s in plan.skipped],
    }


def _flat_description(plan: NightPlan, flat_group: str | None) -> dict[str, Any] | None:
    if flat_group is None:
        return None
    if plan.group(flat_group).premade:
        return {"dark_flat": None, "bias": None, "premade": True, "considered": []}
    flat_plan = plan.flat_plan(flat_group)
    return {
        "dark_flat": flat_plan.dark_flat_group,
        "bias": flat_plan.bias_group,
        "considered": [vars(c) for c in flat_plan.considered],
    }


def _master_stage(kind: str) -> str:
    return kind if kind == "defects" else f"master_{kind}"


def _all_records(results: dict[str, Any]) -> list[Record]:
    masters = list(results["masters"].values()) + list(results["defects"].values())
    records = [record for record in masters if "failed" not in record]
    for nodes in results["groups"].values():
        for light in nodes["lights"]:
            records += [
                light[stage] for stage in ("calibrate", "measure", "register") if stage in light
            ]
        for stage in ("integrate", "preview"):
            if nodes[stage] and "stage" in nodes[stage]:
                records.append(nodes[stage])
    if results["combine"] and "stage" in results["combine"]:
        records.append(results["combine"])
    return records


def _stage_report(records: list[Record]) -> dict[str, dict[str, Any]]:
    report = {stage: {"computed": 0, "reused": 0, "seconds": 0.0} for stage in STAGES}
    seen = set()
    for record in records:
        if (record["stage"], record["key"]) in seen:
            continue
        seen.add((record["stage"], record["key"]))
        entry = report[record["stage"]]
        entry["reused" if record["reused"] else "computed"] += 1
        entry["seconds"] = round(
            entry["seconds"] + (0.0 if record["reused"] else record["seconds"]), 4
        )
    return report


def _frame_reports(results: dict[str, Any]) -> list[dict[str, Any]]:
    reports = []
    for group_id, nodes in results["groups"].items():
        integration = nodes["integrate"].get("result", {})
        used = integration.get("frames", [])
        for light in nodes["lights"]:
            report: dict[str, Any] = {"path": light["frame"], "group": group_id}
            if "calibrate" in light:
                notes = dict(light["calibrate"]["result"])
                notes.pop("shape", None)
                report["calibration"] = notes
            if "measure" in light:
                report["metrics"] = light["measure"]["result"]["metrics"]
            if "register" in light:
                result = light["register"]["result"]
                report["registration"] = {
                    k: result[k] for k in ("matrix", "matched", "rms", "coverage")
                }
            selection = nodes["selection"]
            report["preliminary_weight"] = selection["weights"].get(light["frame"])
            report["weight_reason"] = (
                _weight_reason(light, selection) if selection["reference"] else None
            )
            if light["frame"] in used:
                index = used.index(light["frame"])
                report["weight"] = integration["weights"][index]
                report["normalization"] = integration["normalization"][index]
                report["rejected_fraction"] = integration["rejected_fraction"][index]
                report["expected_false_rejection"] = integration.get("expected_false_rejection")
                match = integration.get("psf_match")
                report["psf_match"] = (
                    {"sigmas": match["sigmas"], "coefficients": match["coefficients"][index]}
                    if match
                    else None
                )
            reference = selection["reference"]
            report["reference"] = reference is not None and light["frame"] == reference["frame"]
            report["excluded"] = light.get("excluded") or integration.get("excluded", {}).get(
                light["frame"]
            )
            report["failed_stage"] = light.get("failed_stage")
            reports.append(report)
    return reports


def _weight_reason(light: Record, selection: Record) -> str | None:
    """Why a sub weighs what it does, relative to the reference sub."""
    if "measure" not in light:
        return None
    metrics = light["measure"]["result"]["metrics"]
    best = selection["reference"]["measure"]["result"]["metrics"]
    parts = [f"weight {selection['weights'].get(light['frame'], 0.0):.3f} of the best sub"]
    if "register" in light and light["register"]["result"].get("flux_ratio"):
        parts.append(f"star flux x{1.0 / light['register']['result']['flux_ratio']:.2f}")
    parts.append(f"noise x{metrics['noise'] / best['noise']:.2f}")
    parts.append(f"FWHM {metrics['fwhm']:.2f} px (reference {best['fwhm']:.2f} px)")
    parts.append(f"{metrics['star_count']} stars (reference {best['star_count']})")
    return "; ".join(parts) + " relative to the reference"


def _integration_report(nodes: dict[str, Any]) -> dict[str, Any]:
    master = nodes["integrate"]
    if "failed" in master:
        return {"failed": master["failed"]}
    return {
        "ncombine": master["result"]["ncombine"],
        "reference": master["result"]["reference"],
        "key": master["key"],
    }


class _CachePlanner:
    """Works out cache keys without running anything, to report what a run would reuse."""

    def __init__(self, store: Store, config: PipelineConfig, plan: NightPlan, status: dict) -> None:
        self.store, self.config, self.plan, self.status = store, config, plan, status
        self.wiring = CalibrationWiring(plan, config, self._master, self._defects)

    def _mark(self, stage: str, key: str | None) -> bool:
        if key is None:
            self.status[stage]["unknown"] += 1
            return False
        hit = self.store.lookup(stage, key) is not None
        self.status[stage]["cached" if hit else "to_compute"] += 1
        return hit

    def _master(self, kind: str, group: FrameGroup, subtract: Any, pattern: str | None) -> Record:
        key = tasks.master_key(
            kind, group, self.config, subtract["key"] if subtract else None, pattern
        )
        self._mark(f"master_{kind}", key)
        return {"key": key}

    def _defects(self, dark: Record, group_id: str, pattern: str | None) -> Record:
        key = tasks.defects_key(dark, self.config, pattern)
        self._mark("defects", key)
        return {"key": key}

    def run(self) -> None:
        self.wiring.all_masters()
        masters = [
            (self.plan.group(lp.light_group).filter, self.light_group(lp, self.wiring.light(lp)))
            for lp in self.plan.lights
        ]
        self._combination(masters)

    def _combination(self, masters: list[tuple[str | None, Record | None]]) -> None:
        """The colour combination's cache status (unknown while a master's key is unknown)."""
        if self.config.combine is None:
            return
        known = [(name, record) for name, record in masters if record is not None]
        chosen = combination.masters_for_palette(known, self.config.combine)
        if chosen is None:
            if len(known) < len(masters):
                self.status["combine"]["unknown"] += 1
            return
        keys_by_role = {role: record["key"] for role, (_, record) in chosen.items()}
        self._mark("combine", combination.combine_key(keys_by_role, self.config))

    def light_group(
        self, light_plan: LightPlan, calibration: tasks.LightCalibration
    ) -> Record | None:
        """Mark the group's stages; its master's key and size when they are known."""
        group = self.plan.group(light_plan.light_group)
        measured = []
        for frame in group.frames:
            cal_key, meas_key = tasks.light_keys(frame, calibration, self.config)
            self._mark("calibrate", cal_key)
            record = (
                self.store.lookup("measure", meas_key) if self._mark("measure", meas_key) else None
            )
            measured.append((frame, meas_key, record))
        return self._downstream(group, measured)

    def _downstream(self, group: FrameGroup, measured: list) -> Record | None:
        if any(record is None for _, _, record in measured):
            self.status["register"]["unknown"] += len(measured)
            self.status["integrate"]["unknown"] += 1
            self.status["preview"]["unknown"] += 1
            return None
        lights = [{"frame": f.path, "measure": r} for f, _, r in measured]
        selection = select_subs(lights, self.config)
        reference_key = selection["reference"]["measure"]["key"]
        register_keys = [
            tasks.register_key(key, reference_key, self.config)
            for frame, key, _ in measured
            if frame.path not in selection["excluded"]
        ]
        for key in register_keys:
            self._mark("register", key)
        integration = tasks.integration_key(group.group_id, register_keys, self.config)
        self._mark("integrate", integration)
        self._mark("preview", tasks.preview_key(integration, self.config))
        return {"key": integration, "result": {"ncombine": len(register_keys)}}


_KIND = {
    FrameType.BIAS: "bias",
    FrameType.DARK: "dark",
    FrameType.FLAT: "flat",
    FrameType.DARK_FLAT: "dark_flat",
}


class CalibrationWiring:
    """Which master stands for each calibration group, and how each light group is calibrated.

    Shared by the run (nodes are dask delayed tasks) and the plan (nodes are cache keys), so
    both follow exactly the same decisions. Every calibration group of the night gets its
    master, used by a light group or not (as WBPP does, for a calibration library).
    """

    def __init__(
        self,
        plan: NightPlan,
        config: PipelineConfig,
        make_master: Callable[..., Any],
        make_defects: Callable[..., Any],
    ) -> None:
        self.plan, self.config = plan, config
        self.make_master, self.make_defects = make_master, make_defects
        self.nodes: dict[str, Any] = {}
        self.defect_nodes: dict[str, Any] = {}

    def pattern(self, group: FrameGroup) -> str | None:
        """The CFA pattern of a group's frames."""
        return calibrate.resolve_pattern(group.frames[0], self.config.debayer)

    def master(self, group_id: str | None) -> Any:
        """The node of a calibration group's master (built once)."""
        if group_id is None:
            return None
        if group_id not in self.nodes:
            group = self.plan.group(group_id)
            kind = _KIND[group.frame_type]
            subtract = None
            if kind == "flat" and not group.premade:
                flat_plan = self.plan.flat_plan(group_id)
                subtract = self.master(flat_plan.dark_flat_group or flat_plan.bias_group)
            self.nodes[group_id] = self.make_master(kind, group, subtract, self.pattern(group))
        return self.nodes[group_id]

    def all_masters(self) -> None:
        """Create the master of every calibration group."""
        for group in self.plan.groups:
            if group.frame_type is not FrameType.LIGHT:
                self.master(group.group_id)

    def light(self, light_plan: LightPlan) -> tasks.LightCalibration:
        """The calibration of one light group."""
        group = self.plan.group(light_plan.light_group)
        pattern = self.pattern(group)
        dark = self.master(light_plan.dark_group)
        masters = {
            "bias": self.master(light_plan.bias_group),
            "dark": dark,
            "flat": self.master(light_plan.flat_group),
            "defects": None,
        }
        if dark is not None and self.config.calibration.cosmetic_correction.enabled:
            if light_plan.dark_group not in self.defect_nodes:
                self.defect_nodes[light_plan.dark_group] = self.make_defects(
                    dark, light_plan.dark_group, pattern
                )
            masters["defects"] = self.defect_nodes[light_plan.dark_group]
        mode = self.config.calibration.dark_optimization
        optimize = (
            masters["bias"] is not None
            and dark is not None
            and (mode == "on" or (mode == "auto" and light_plan.dark_scaled))
        )
        dark_exposure = (
            self.plan.group(light_plan.dark_group).exposure if light_plan.dark_scaled else None
        )
        return tasks.LightCalibration(masters, dark_exposure, optimize, pattern)


def _calibrate_light(store, frame, masters, dark_exposure, optimize, pattern, config) -> Record:
    calibration = tasks.LightCalibration(masters, dark_exposure, optimize, pattern)
    return tasks.calibrate_and_measure(store, frame, calibration, config)
