"""The ``linearlink`` command line: run | plan | combine | init | schema | stretch | sample."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.config.loader import config_schema, default_config_yaml, load_config
from pipeline.errors import LinearLinkError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``linearlink`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except LinearLinkError as exc:
        print(f"linearlink: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linearlink",
        description=(
            "Calibrate, register and integrate a night of raw FITS frames into linear masters."
        ),
    )
    parser.add_argument("--version", action="version", version=f"linearlink {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="process a night folder into masters and previews")
    _night_options(run)
    run.add_argument(
        "-o", "--output", type=Path, help="output folder (default: ./<night>_linearlink)"
    )
    scale_out = run.add_mutually_exclusive_group()
    scale_out.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing dask.distributed cluster (e.g. tcp://10.0.0.5:8786)",
    )
    scale_out.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="start a local dask.distributed cluster of N worker processes",
    )
    run.add_argument(
        "--watch",
        action="store_true",
        help="keep running while new subs arrive; refresh the masters every --every subs",
    )
    run.add_argument(
        "--every", type=int, default=5, metavar="N", help="watch: refresh after N new files"
    )
    run.add_argument(
        "--poll", type=float, default=10.0, metavar="S", help="watch: look every S seconds"
    )
    run.set_defaults(handler=_run)

    plan = commands.add_parser("plan", help="show groups, calibration choices and cache status")
    _night_options(plan)
    plan.add_argument("-o", "--output", type=Path, help="output folder whose cache to inspect")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=_plan)

    combine = commands.add_parser(
        "combine",
        help="register and combine mono masters of different filters into a linear colour image",
    )
    combine.add_argument(
        "masters",
        nargs="*",
        type=Path,
        help="master FITS files in palette order: R G B (rgb), SII Ha OIII (sho), Ha OIII "
        "(hoo); or one colour master, whose planes are the channels",
    )
    combine.add_argument(
        "--run", type=Path, metavar="OUTPUT", help="combine the masters of this run's output folder"
    )
    combine.add_argument("-L", "--luminance", type=Path, help="luminance master kept alongside")
    combine.add_argument("--palette", choices=("rgb", "sho", "hoo"), help="channel mapping")
    _config_options(combine)
    combine.add_argument(
        "-o", "--output", type=Path, help="output folder (default: ./combined, or RUN/combined)"
    )
    combine.add_argument("--name", default="combined", help="base name of the output files")
    combine.set_defaults(handler=_combine)

    init = commands.add_parser("init", help="write the default configuration with comments")
    init.add_argument("path", nargs="?", type=Path, default=Path("linearlink.yaml"))
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=_init)

    schema = commands.add_parser("schema", help="print the configuration's JSON schema")
    schema.set_defaults(handler=lambda args: print(json.dumps(config_schema(), indent=2)))

    stretch = commands.add_parser("stretch", help="render a FITS master as an STF-stretched PNG")
    stretch.add_argument("master", type=Path)
    stretch.add_argument("-o", "--output", type=Path, help="PNG path (default: beside the master)")
    stretch.add_argument("--unlinked", action="store_true", help="stretch each channel on its own")
    stretch.set_defaults(handler=_stretch)

    sample = commands.add_parser(
        "sample", help="write the synthetic sample night with ground truth"
    )
    sample.add_argument("outdir", type=Path)
    sample.add_argument("--seed", type=int, default=20261126)
    kind = sample.add_mutually_exclusive_group()
    kind.add_argument(
        "--color",
        action="store_true",
        help="a one-shot-colour (Bayer RGGB) night instead of the mono one",
    )
    kind.add_argument(
        "--rgb",
        action="store_true",
        help="a mono night through R, G and B filters (for the colour combination)",
    )
    sample.set_defaults(handler=_sample)
    return parser


def _night_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("night", type=Path, help="folder with the night's raw FITS frames")
    _config_options(parser)


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="YAML configuration file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting (repeatable), e.g. combine.background.model.order=1",
    )


def _output_for(args: argparse.Namespace) -> Path:
    if args.output is not None:
        return args.output
    return Path.cwd() / f"{args.night.resolve().name}_linearlink"


def _check_night(night: Path) -> None:
    if not night.is_dir():
        raise LinearLinkError(
            f"{night}: not a folder; give the folder holding the night's FITS files"
        )


def _run(args: argparse.Namespace) -> int:
    from pipeline.engine.runner import Pipeline

    _check_night(args.night)
    config = load_config(args.config, args.overrides + _scale_out_overrides(args))
    started = time.perf_counter()
    pipeline = Pipeline(
        config, _output_for(args), log=lambda line: print(line, flush=True), progress=sys.stderr
    )
    if args.watch:
        return _watch(pipeline, args)
    summary = pipeline.run(args.night)
    _print_summary(summary.manifest, time.perf_counter() - started)
    print(f"manifest: {summary.manifest_path}")
    return summary.exit_code


def _watch(pipeline, args: argparse.Namespace) -> int:
    """Refresh until Ctrl-C; the output folder is complete and resumable at any time."""
    from pipeline.engine.watch import watch

    if args.every < 1 or args.poll <= 0:
        raise LinearLinkError(
            f"--every {args.every} --poll {args.poll}: refresh after at least 1 new file and "
            "look at the folder at a positive interval"
        )
    print(f"watching {args.night} (refresh every {args.every} new files; Ctrl-C stops)")
    started = time.perf_counter()

    def report(summary) -> None:
        _print_summary(summary.manifest, time.perf_counter() - started)

    try:
        last = watch(
            pipeline,
            args.night,
            every=args.every,
            poll_seconds=args.poll,
            should_stop=lambda: False,
            on_run=report,
        )
    except KeyboardInterrupt:
        print("stopped; the output folder is complete: run again to resume")
        return 0
    return last.exit_code if last is not None else 1


def _scale_out_overrides(args: argparse.Namespace) -> list[str]:
    """``--scheduler`` / ``--workers`` as engine settings (they win over the config file)."""
    if args.scheduler:
        return ["engine.scheduler=distributed", f"engine.address={args.scheduler}"]
    if args.workers is not None:
        if args.workers < 1:
            raise LinearLinkError(f"--workers {args.workers}: give at least 1 worker process")
        return ["engine.scheduler=distributed", f"engine.workers={args.workers}"]
    return []


def _print_summary(manifest: dict, seconds: float) -> None:
    """The end-of-run report: stages, one row per light group, problems, status, time."""
    from pipeline.engine.runner import EXIT_CODES

    print("stages (computed / reused, seconds):")
    for stage, entry in manifest["stages"].items():
        if entry["computed"] or entry["reused"]:
            print(
                f"  {stage:<17} {entry['computed']:>4} / {entry['reused']:<4} "
                f"{entry['seconds']:8.2f}"
            )
    _print_groups(manifest)
    selected_out = [f for f in manifest["frames"] if f["excluded"] and not f.get("failed_stage")]
    if selected_out:
        print(f"left out by the selection rules ({len(selected_out)}):")
        for frame in selected_out:
            print(f"  {frame['path']}: {frame['excluded']}")
    problems = manifest["problems"]
    if problems:
        print(f"problems ({len(problems)}: bad files, failed subs and groups):")
        for problem in problems:
            where = problem["path"] or f"group {problem['group']}"
            print(f"  [{problem['stage']}] {where}: {problem['reason']}")
    expected, written = len(manifest["integration"]), len(manifest["masters"])
    print(
        f"status: {manifest['status']} (exit {EXIT_CODES[manifest['status']]}): {written} of "
        f"{expected} light group(s) have a master, {len(problems)} problem(s)"
    )
    print(f"done in {seconds:.1f} s")


def _print_groups(manifest: dict) -> None:
    """One row per light group: subs used and left out, and the master (or why it failed)."""
    if not manifest["integration"]:
        print("light groups: none (calibration masters only)")
        return
    masters = {master["group"]: master for master in manifest["masters"]}
    excluded: dict[str, int] = {}
    for frame in manifest["frames"]:
        if frame["excluded"]:
            excluded[frame["group"]] = excluded.get(frame["group"], 0) + 1
    width = max(len("light group"), *(len(group) for group in manifest["integration"]))
    print("light groups (subs used and excluded, master):")
    print(f"  {'light group':<{width}}  {'used':>4}  {'excluded':>8}  master")
    for group, info in manifest["integration"].items():
        master = masters.get(group)
        used = master["ncombine"] if master else 0
        where = master["path"] if master else f"FAILED: {info.get('failed', 'not written')}"
        print(f"  {group:<{width}}  {used:>4}  {excluded.get(group, 0):>8}  {where}")
        if master and master["preview"]:
            print(f"  {'':<{width}}  {'':>4}  {'':>8}  preview {master['preview']}")


def _plan(args: argparse.Namespace) -> int:
    from pipeline.engine.runner import Pipeline

    _check_night(args.night)
    config = load_config(args.config, args.overrides)
    description = Pipeline(config, _output_for(args)).plan(args.night)
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        print(_plan_text(description))
    return 0


def _plan_text(description: dict) -> str:
    lines = ["Groups:"]
    for group in description["groups"]:
        filt = f" filter {group['filter']}" if group["filter"] else ""
        lines.append(
            f"  {group['id']}: {group['frames']} {group['type']}{filt}, {group['exposure']:g} s"
        )
    lines.append("Calibration:")
    for entry in description["calibration_plan"]:
        lines.append(f"  {entry['light_group']}:")
        for candidate in entry["considered"]:
            lines.append(
                f"    {_verdict(candidate)} {candidate['role']:<9} {candidate['group_id']}: "
                f"{candidate['reason']}"
            )
        flat = entry["flat_calibration"]
        if flat:
            for candidate in flat["considered"]:
                lines.append(
                    f"    flat: {_verdict(candidate)} {candidate['role']:<9} "
                    f"{candidate['group_id']}: {candidate['reason']}"
                )
    if description["skipped"]:
        lines.append("Skipped files:")
        lines += [f"  {s['path']}: {s['reason']}" for s in description["skipped"]]
    lines.append("Stage cache (cached / to compute / depends on earlier results):")
    for stage, counts in description["cache"].items():
        if any(counts.values()):
            lines.append(
                f"  {stage:<17} {counts['cached']:>4} / {counts['to_compute']:>4} / "
                f"{counts['unknown']:>4}"
            )
    return "\n".join(lines)


def _verdict(candidate: dict) -> str:
    if candidate["used"]:
        return "use   "
    return "skip  " if candidate["reason"].startswith("not needed") else "refuse"


_PALETTE_ROLES = {
    "rgb": ("red", "green", "blue"),
    "sho": ("red", "green", "blue"),
    "hoo": ("red", "green"),
}


def _combine(args: argparse.Namespace) -> int:
    from pipeline.engine.combine import combine_masters

    overrides = list(args.overrides)
    if args.palette:
        overrides.append(f"combine.palette={{method: {args.palette}}}")
    config = load_config(args.config, overrides)
    default_output = args.run / "combined" if args.run is not None else Path.cwd() / "combined"
    masters = _masters_to_combine(args, config)
    _print_combination(
        combine_masters(masters, config, args.output or default_output, name=args.name)
    )
    return 0


def _masters_to_combine(args: argparse.Namespace, config) -> dict:
    """Role -> master: from a run folder, one colour master's planes, or files in order."""
    from pipeline.engine.combine import colour_master_planes, read_masters, run_master_paths

    palette = config.combine.palette.method if config.combine else "rgb"
    planes: dict = {}
    if args.run is not None:
        if args.masters:
            raise LinearLinkError("give either master files or --run, not both")
        paths = run_master_paths(args.run, config)
    elif len(args.masters) == 1 and palette == "rgb" and _planes(args.masters[0]) == 3:
        paths, planes = {}, colour_master_planes(args.masters[0])
    else:
        paths = _positional_masters(args.masters, palette)
    if args.luminance is not None:
        paths["luminance"] = args.luminance
    return {**planes, **read_masters(paths, config)}


def _planes(path: Path) -> int:
    """Planes of a FITS image (NAXIS3), 1 for a mono image or an unreadable file."""
    from astropy.io import fits

    try:
        header = fits.getheader(path)
    except (OSError, ValueError):
        return 1
    return int(header.get("NAXIS3", 1)) if header.get("NAXIS", 0) == 3 else 1


def _positional_masters(masters: list[Path], palette: str) -> dict[str, Path]:
    roles = _PALETTE_ROLES[palette]
    if len(masters) != len(roles):
        raise LinearLinkError(
            f"the {palette} palette takes {len(roles)} master files, got {len(masters)}; "
            "give them in palette order (rgb: R G B, sho: SII Ha OIII, hoo: Ha OIII) or use --run"
        )
    for path in masters:
        if not path.is_file():
            raise LinearLinkError(f"{path}: no such file; give the path of a master FITS file")
    paths = dict(zip(roles, masters, strict=True))
    if palette == "hoo":
        paths["blue"] = paths["green"]
    return paths


def _print_combination(record: dict) -> None:
    result = record["result"]
    fits = result["linear_fit"]["fits"]
    colour = result["colour_calibration"]
    print(f"wrote {record['outputs']['rgb']}")
    for role, entry in result["registration"].items():
        print(f"  {role:9s} registered: {entry['matched']} stars, rms {entry['rms']:.3f} px")
    if fits:
        reference = result["linear_fit"]["reference"]
        for role, fit in fits.items():
            if role != reference:
                print(
                    f"  LinearFit {role} -> {reference}: "
                    f"a = {fit['intercept']:.6g}, b = {fit['slope']:.6g}"
                )
    if colour:
        factors = ", ".join(f"{f:.4f}" for f in colour["factors"])
        print(f"  white balance ({colour['white_reference']}): R, G, B x {factors}")
    for key in ("linked_preview", "unlinked_preview", "stf_preview"):
        print(f"  {key.replace('_', ' ')}: {record['outputs'][key]}")


def _init(args: argparse.Namespace) -> int:
    if args.path.exists() and not args.force:
        raise LinearLinkError(f"{args.path} exists; pass --force to overwrite it")
    args.path.write_text(default_config_yaml(), encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


def _stretch(args: argparse.Namespace) -> int:
    from pipeline.config.models import PreviewConfig
    from pipeline.engine.tasks import write_png
    from pipeline.io.fits import read_image
    from pipeline.stages.preview import render_preview

    image = read_image(args.master)
    pixels, parameters = render_preview(image, PreviewConfig(), linked=not args.unlinked)
    output = args.output or args.master.with_suffix(".png")
    write_png(output, pixels)
    print(f"wrote {output} ({parameters})")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from sample_data import generate_color_night, generate_night, generate_rgb_night

    started = time.perf_counter()
    generate = (
        generate_color_night if args.color else generate_rgb_night if args.rgb else generate_night
    )
    generate(args.outdir, rng=np.random.default_rng(args.seed))
    print(
        f"wrote the sample night to {args.outdir} in {time.perf_counter() - started:.1f} s "
        f"(ground truth in {args.outdir / 'truth'})"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
