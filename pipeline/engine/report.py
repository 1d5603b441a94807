"""The HTML report of a run: groups, subs used and excluded, per-sub quality over time, and
the linked-STF previews, built from ``run.json`` (and the raw frames' DATE-OBS).

Plots are PNG files drawn with matplotlib (Agg) into ``report/``; every file is written to a
temporary name and renamed into place.
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import FrameReadError, HeaderError
from pipeline.io.fits import read_metadata

__all__ = ["write_report"]

#: (metrics key, axis label) of the per-sub panels.
PANELS = (
    ("fwhm", "FWHM (px)"),
    ("eccentricity", "eccentricity"),
    ("background", "background (ADU)"),
    ("noise", "noise (ADU)"),
    ("weight", "weight"),
)


def write_report(manifest: dict[str, Any], outdir: Path) -> Path:
    """Write ``outdir/report.html`` (and its plots) for a finished run; returns its path."""
    outdir = Path(outdir)
    (outdir / "report").mkdir(parents=True, exist_ok=True)
    frames = _frames_with_time(manifest["frames"])
    sections = []
    for group in sorted({frame["group"] for frame in frames}):
        subs = [frame for frame in frames if frame["group"] == group]
        plot = outdir / "report" / f"{group}.png"
        _plot_group(group, subs, plot)
        sections.append(_group_section(group, subs, plot.relative_to(outdir), manifest, outdir))
    if manifest.get("combined"):
        sections.append(_combined_section(manifest["combined"], outdir))
    page = _page(manifest, sections)
    path = outdir / "report.html"
    _write_text(path, page)
    return path


def _frames_with_time(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames with ``time`` (DATE-OBS as datetime, or None) and ``weight`` filled in."""
    out = []
    for frame in frames:
        entry = dict(frame)
        try:
            stamp = read_metadata(frame["path"]).date_obs
            entry["time"] = datetime.fromisoformat(stamp) if stamp else None
        except (FrameReadError, HeaderError, ValueError, OSError):
            entry["time"] = None
        metrics = dict(frame.get("metrics") or {})
        metrics["weight"] = frame.get("weight", frame.get("preliminary_weight"))
        entry["values"] = metrics
        out.append(entry)
    return out


def _plot_group(group: str, subs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = all(sub["time"] is not None for sub in subs)
    order = sorted(range(len(subs)), key=lambda i: (subs[i]["time"] or datetime.min, i))
    xs = [subs[i]["time"] if timed else n for n, i in enumerate(order)]
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(8, 9), sharex=True)
    for axis, (key, label) in zip(axes, PANELS, strict=True):
        for x, i in zip(xs, order, strict=True):
            value = subs[i]["values"].get(key)
            if value is None:
                continue
            excluded = bool(subs[i].get("excluded"))
            axis.plot(
                [x], [value], "x" if excluded else "o", color="red" if excluded else "tab:blue"
            )
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_title(f"{group}: per-sub quality (red x: excluded)")
    axes[-1].set_xlabel("DATE-OBS (UTC)" if timed else "sub, in file order")
    figure.autofmt_xdate()
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=80)
    plt.close(figure)
    os.replace(temporary, path)


def _group_section(
    group: str, subs: list[dict[str, Any]], plot: Path, manifest: dict[str, Any], outdir: Path
) -> str:
    master = next((m for m in manifest["masters"] if m["group"] == group), None)
    failed = manifest.get("integration", {}).get(group, {}).get("failed")
    used = [sub for sub in subs if not sub.get("excluded")]
    rows = "".join(
        f"<tr><td>{_e(Path(sub['path']).name)}</td><td>{_e(sub['excluded'])}</td></tr>"
        for sub in subs
        if sub.get("excluded")
    )
    lines = [f"<h2>{_e(group)}</h2>", f"<p>{len(used)} subs used, {len(subs) - len(used)} excluded"]
    if master:
        lines[-1] += f"; master <code>{_e(master['path'])}</code></p>"
        if master.get("preview"):
            preview = os.path.relpath(master["preview"], outdir)
            lines.append(f'<img class="preview" src="{_e(preview)}" alt="preview of {_e(group)}">')
    else:
        lines[-1] += f"; no master: {_e(failed or 'not produced')}</p>"
    lines.append(f'<img src="{_e(str(plot))}" alt="per-sub quality of {_e(group)}">')
    if rows:
        lines.append(f"<table><tr><th>excluded sub</th><th>reason</th></tr>{rows}</table>")
    return "\n".join(lines)


def _combined_section(combined: dict[str, Any], outdir: Path) -> str:
    """The colour combination: its steps' numbers and the linked | unlinked STF previews."""
    rows = []
    fits = combined["linear_fit"]["fits"]
    for role in ("red", "green", "blue"):
        fit = fits.get(role, {})
        registration = combined["registration"].get(role, {})
        rows.append(
            f"<tr><td>{role}</td><td>{registration.get('rms', 0):.3f}</td>"
            f"<td>{fit.get('intercept', 0):.4g}</td><td>{fit.get('slope', 1):.4g}</td></tr>"
        )
    colour = combined.get("colour_calibration") or {}
    factors = ", ".join(f"{f:.4f}" for f in colour.get("factors", []))
    preview = os.path.relpath(combined["outputs"]["stf_preview"], outdir)
    return (
        "<h2>Colour combination</h2>"
        f"<p>Grid of the {_e(combined['reference_grid'])} master; LinearFit reference "
        f"{_e(combined['linear_fit']['reference'])}; white reference "
        f"{_e(colour.get('white_reference', 'none'))} (R, G, B x {_e(factors)}).</p>"
        "<table><tr><th>channel</th><th>registration rms (px)</th><th>LinearFit a</th>"
        f"<th>LinearFit b</th></tr>{''.join(rows)}</table>"
        f"<p>Linked STF (left, the true colour balance) and unlinked STF (right):</p>"
        f'<img class="preview" src="{_e(preview)}" alt="linked and unlinked STF previews">'
    )


def _page(manifest: dict[str, Any], sections: list[str]) -> str:
    skipped = "".join(
        f"<tr><td>{_e(item['path'])}</td><td>{_e(item['reason'])}</td></tr>"
        for item in manifest.get("skipped", [])
    )
    summary = (
        f"<p>Night <code>{_e(manifest.get('night', ''))}</code>, LinearLink "
        f"{_e(manifest.get('linearlink_version', ''))}, {len(manifest['masters'])} masters, "
        f"{manifest.get('seconds', 0):.1f} s.</p>"
    )
    skipped_table = (
        f"<h2>Files not used</h2><table><tr><th>file</th><th>reason</th></tr>{skipped}</table>"
        if skipped
        else ""
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:left}img.preview{max-width:100%;display:block;margin:1em 0}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>LinearLink report</title>"
        f"<style>{style}</style></head><body>\n<h1>LinearLink report</h1>\n{summary}\n"
        + "\n".join(sections)
        + f"\n{skipped_table}\n</body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value))


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
