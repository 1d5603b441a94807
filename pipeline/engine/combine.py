"""Colour combination, file side: read masters, run the combine stage, write its outputs.

Used by ``linearlink combine`` on any master files (no run folder needed) and by a run, which
combines its own masters once every palette filter has one (cached like every stage).

Outputs of a combination named ``NAME`` in a folder::

    NAME.fits               (3, H, W) float32 linear RGB; LinearFit, background, colour and STF
                            parameters in the header; WBSTARS extension: the white-balance stars
    NAME_L.fits             the luminance registered onto the same grid (when there is one)
    NAME_background.fits    the background model of each channel (R, G, B[, L] planes)
    NAME_linked.png         linked STF preview (true colour balance)
    NAME_unlinked.png       unlinked STF preview (each channel stretched on its own)
    NAME_stf.png            the two side by side, linked on the left (binned to <= 4000 px wide)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from pipeline.config.models import CombineConfig, PipelineConfig
from pipeline.engine import tasks
from pipeline.engine.store import Store
from pipeline.errors import CombineError, FrameReadError
from pipeline.io.fits import read_image, write_image
from pipeline.kernels.stretch import StretchParameters, apply_stretch
from pipeline.provenance import keys
from pipeline.stages import combine as stage
from pipeline.stages import measure, register

__all__ = [
    "colour_master_planes",
    "combine_files",
    "combine_masters",
    "combine_key",
    "combine_run_masters",
    "masters_for_palette",
    "read_channel_master",
    "read_masters",
    "run_master_paths",
    "stretch_from_header",
    "write_combination",
]

_LETTER = {"red": "R", "green": "G", "blue": "B", "luminance": "L"}
_GAP_PX = 8
_SIDE_BY_SIDE_PX = 4000


def read_channel_master(
    path: str | Path, *, default_filter: str | None = None
) -> stage.ChannelMaster:
    """Read a mono linear master for combination.

    Parameters
    ----------
    path
        The master FITS file.
    default_filter
        The filter to record when the file has no FILTER card (default: the file name).

    Raises
    ------
    FrameReadError
        If the file cannot be read or is not a single-plane image.
    """
    path = Path(path)
    try:
        image = read_image(path)
        header = fits.getheader(path)
    except (OSError, ValueError) as exc:
        raise FrameReadError(f"{path}: cannot read the master ({exc})") from exc
    if image.ndim != 2:
        raise FrameReadError(
            f"{path}: has shape {image.shape}; combination takes one mono master per filter "
            "(split colour masters into planes first)"
        )
    name = str(header.get("FILTER", "")).strip() or default_filter or path.stem
    return stage.ChannelMaster(filter=name, image=image, source=path.name)


def combine_key(master_keys: Mapping[str, str], config: PipelineConfig) -> str:
    """Cache key of a combination of stored masters (role -> master key)."""
    sections = [config.combine, config.registration, config.measurement, config.preview]
    return keys.stage_key(
        "combine",
        f"{stage.VERSION}/{measure.VERSION}/{register.VERSION}",
        sections,
        sorted(master_keys.items()),
    )


def combine_files(
    paths: Mapping[str, str | Path],
    config: PipelineConfig,
    outdir: str | Path,
    *,
    name: str = "combined",
) -> dict[str, Any]:
    """Combine master files (role -> path) and write the outputs to ``outdir``.

    Returns
    -------
    dict
        The JSON-ready record (``outputs`` paths and the ``result`` of every step).
    """
    return combine_masters(read_masters(paths, config), config, outdir, name=name)


def read_masters(
    paths: Mapping[str, str | Path], config: PipelineConfig
) -> dict[str, stage.ChannelMaster]:
    """Role -> master read from role -> path (a file given for two roles is read once)."""
    filters = stage.palette_filters(config.combine or CombineConfig())
    masters: dict[str, stage.ChannelMaster] = {}
    read: dict[str, stage.ChannelMaster] = {}
    for role, path in paths.items():
        key = str(Path(path).resolve())
        if key not in read:
            read[key] = read_channel_master(path, default_filter=filters.get(role))
        masters[role] = read[key]
    return masters


def combine_masters(
    masters: Mapping[str, stage.ChannelMaster],
    config: PipelineConfig,
    outdir: str | Path,
    *,
    name: str = "combined",
) -> dict[str, Any]:
    """Combine loaded masters (role -> master) and write the outputs to ``outdir``."""
    combine = config.combine or CombineConfig()
    combined = _combine(masters, combine, config)
    outputs = write_combination(Path(outdir), name, combined, masters, combine)
    return {"outputs": {k: str(v) for k, v in outputs.items()}, "result": summary(combined)}


def colour_master_planes(path: str | Path) -> dict[str, stage.ChannelMaster]:
    """The red, green and blue planes of a colour master (one-shot colour) as channels.

    They share one pixel grid, so they are not registered onto each other; the combination
    then does background extraction, LinearFit and colour calibration on them.

    Raises
    ------
    FrameReadError
        If the file cannot be read or is not a (3, H, W) image.
    """
    path = Path(path)
    try:
        image = read_image(path)
    except (OSError, ValueError) as exc:
        raise FrameReadError(f"{path}: cannot read the master ({exc})") from exc
    if image.ndim != 3 or image.shape[0] != 3:
        raise FrameReadError(
            f"{path}: has shape {image.shape}; a colour master has three planes (R, G, B); "
            "give one mono master per channel instead"
        )
    grid = str(path.resolve())
    return {
        role: stage.ChannelMaster(
            filter=letter, image=image[k], source=f"{path.name}[{letter}]", grid=grid
        )
        for k, (role, letter) in enumerate(zip(stage.COLOUR_ROLES, "RGB", strict=True))
    }


def combine_run_masters(
    store: Store, masters: list[tuple[str, dict[str, Any]]], config: PipelineConfig
) -> dict[str, Any] | None:
    """Combine a run's masters (``(filter, integrate record)`` pairs), cached in ``store``.

    Returns None when the palette's filters do not all have a master (nothing to combine).
    """
    combine = config.combine
    if combine is None:
        return None
    chosen = masters_for_palette(masters, combine)
    if chosen is None:
        return None
    key = combine_key({role: record["key"] for role, (_, record) in chosen.items()}, config)

    def compute() -> tuple[dict, dict]:
        loaded = {
            role: stage.ChannelMaster(
                filter=filter_name,
                image=read_image(store.absolute(record["outputs"]["master"])),
                source=Path(record["outputs"]["master"]).name,
            )
            for role, (filter_name, record) in chosen.items()
        }
        combined = _combine(loaded, combine, config)
        folder = store.work / "combine"
        written = write_combination(folder, f"combined.{key[:16]}", combined, loaded, combine)
        return {k: store.relative(v) for k, v in written.items()}, summary(combined)

    return tasks.cached(store, "combine", key, compute)


def run_master_paths(run_folder: str | Path, config: PipelineConfig) -> dict[str, Path]:
    """Role -> master path, from the ``run.json`` of a finished run.

    Raises
    ------
    FrameReadError
        If the folder has no readable run.json or lacks a master of a palette filter.
    """
    manifest_path = Path(run_folder) / "run.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FrameReadError(
            f"{manifest_path}: cannot read the run's manifest ({exc}); give a folder written by "
            "linearlink run, or the master files themselves"
        ) from exc
    entries = [
        (str(m.get("filter") or ""), {"path": m["path"], "result": {"ncombine": m["ncombine"]}})
        for m in manifest.get("masters", [])
    ]
    combine = config.combine or CombineConfig()
    chosen = masters_for_palette(entries, combine)
    if chosen is None:
        available = sorted({f for f, _ in entries}) or ["none"]
        wanted = sorted(set(stage.palette_filters(combine).values()))
        raise FrameReadError(
            f"{manifest_path}: the run has masters for filters {', '.join(available)} but the "
            f"{combine.palette.method} palette needs {', '.join(wanted)}; set "
            "combine.palette to the filter names of the run"
        )
    return {role: Path(record["path"]) for role, (_, record) in chosen.items()}


def masters_for_palette(
    masters: list[tuple[str, dict[str, Any]]], combine: CombineConfig
) -> dict[str, tuple[str, dict[str, Any]]] | None:
    """Role -> (filter, record) of the deepest master of each palette filter.

    ``masters`` are ``(filter, record)`` pairs, records with ``result.ncombine``. None when a
    colour filter has no master (the luminance is optional).
    """
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for role, wanted in stage.palette_filters(combine).items():
        candidates = [
            (filter_name, record)
            for filter_name, record in masters
            if filter_name and filter_name.casefold() == wanted.casefold()
        ]
        if not candidates:
            if role == "luminance":
                continue
            return None
        chosen[role] = max(candidates, key=lambda pair: pair[1]["result"].get("ncombine", 0))
    return chosen


def _combine(
    masters: Mapping[str, stage.ChannelMaster], combine: CombineConfig, config: PipelineConfig
) -> stage.CombinedImage:
    try:
        return stage.combine_channels(
            masters,
            combine,
            registration=config.registration,
            measurement=config.measurement,
            preview=config.preview,
        )
    except ValueError as exc:
        sources = ", ".join(sorted({m.source for m in masters.values()}))
        raise CombineError(f"combining {sources}: {exc}") from exc


# --------------------------------------------------------------------------- writing
def write_combination(
    folder: Path,
    name: str,
    combined: stage.CombinedImage,
    masters: Mapping[str, stage.ChannelMaster],
    combine: CombineConfig,
) -> dict[str, Path]:
    """Write the RGB FITS, luminance, background models and the STF previews."""
    cards = _cards(combined, masters, combine)
    history = _history(combined, combine)
    outputs = {
        "rgb": write_image(
            folder / f"{name}.fits",
            combined.rgb,
            cards=cards,
            history=history,
            extra_hdus={"WBSTARS": _white_stars(combined)},
        )
    }
    if combined.luminance is not None:
        outputs["luminance"] = write_image(
            folder / f"{name}_L.fits",
            combined.luminance,
            cards={"FILTER": masters["luminance"].filter, "REFGRID": combined.reference},
            history=[f"registered onto the {combined.reference} master for the colour image"],
        )
    if combined.backgrounds:
        roles = [r for r in (*stage.COLOUR_ROLES, "luminance") if r in combined.backgrounds]
        outputs["background"] = write_image(
            folder / f"{name}_background.fits",
            np.stack([combined.backgrounds[r].model for r in roles]),
            cards={"PLANES": (",".join(_LETTER[r] for r in roles), "Channel of each plane")},
            history=["background model of each channel, subtracted or divided out"],
        )
    outputs.update(_write_previews(folder, name, combined))
    return outputs


def _write_previews(folder: Path, name: str, combined: stage.CombinedImage) -> dict[str, Path]:
    stretches = combined.stretches
    linked = _render(combined.rgb, stretches.linked, stretches.lo, stretches.hi)
    unlinked = _render(combined.rgb, stretches.unlinked, stretches.lo, stretches.hi)
    side = _binned(np.concatenate([linked, np.zeros_like(linked[:, :_GAP_PX]), unlinked], axis=1))
    paths = {
        "linked_preview": folder / f"{name}_linked.png",
        "unlinked_preview": folder / f"{name}_unlinked.png",
        "stf_preview": folder / f"{name}_stf.png",
    }
    tasks.write_png(paths["linked_preview"], linked)
    tasks.write_png(paths["unlinked_preview"], unlinked)
    tasks.write_png(paths["stf_preview"], side)
    return paths


def _binned(pixels: np.ndarray) -> np.ndarray:
    """The side-by-side preview binned (block mean) to at most ``_SIDE_BY_SIDE_PX`` wide."""
    factor = -(-pixels.shape[1] // _SIDE_BY_SIDE_PX)
    if factor == 1:
        return pixels
    rows, cols = pixels.shape[0] // factor, pixels.shape[1] // factor
    blocks = pixels[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor, 3)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _render(rgb: np.ndarray, parameters: StretchParameters, lo: float, hi: float) -> np.ndarray:
    """8-bit (H, W, 3) pixels of ``rgb`` under a screen stretch."""
    unit = np.clip((rgb - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    stretched = apply_stretch(unit, parameters)
    return np.moveaxis(np.round(stretched * 255.0).astype(np.uint8), 0, -1)


def stretch_from_header(
    header: fits.Header, *, linked: bool = True
) -> tuple[StretchParameters, float, float]:
    """The STF written into a combined image's header, to re-apply it elsewhere.

    Returns
    -------
    parameters, lo, hi
        Per-channel shadows/midtones/highlights on data scaled by ``(x - lo) / (hi - lo)``.

    Raises
    ------
    FrameReadError
        If the header has no STF cards.
    """
    prefix = "STFL" if linked else "STFU"
    try:
        values = {
            part: tuple(float(header[f"{prefix}{part}_{c}"]) for c in "RGB") for part in "SMH"
        }
        lo, hi = float(header["STFLO"]), float(header["STFHI"])
    except KeyError as exc:
        raise FrameReadError(
            f"the header has no STF card {exc}; it was not written by linearlink combine"
        ) from exc
    return StretchParameters(values["S"], values["M"], values["H"]), lo, hi


def _cards(
    combined: stage.CombinedImage,
    masters: Mapping[str, stage.ChannelMaster],
    combine: CombineConfig,
) -> dict[str, Any]:
    cards: dict[str, Any] = {
        "COMBINE": (combine.palette.method.upper(), "Palette of the channel combination"),
        "REFGRID": (combined.reference, "Filter whose master defines the pixel grid"),
    }
    for role in stage.COLOUR_ROLES:
        letter = _LETTER[role]
        cards[f"FILTER_{letter}"] = (masters[role].filter, f"Filter of the {role} channel")
        cards[f"SOURCE_{letter}"] = (masters[role].source, f"Master of the {role} channel")
    for role, (_, matched, rms) in combined.registrations.items():
        cards[f"REGRMS_{_LETTER[role]}"] = (rms, f"[px] registration rms, {matched} stars")
    cards.update(_background_cards(combined, combine))
    cards.update(_linear_fit_cards(combined))
    cards.update(_colour_cards(combined))
    cards.update(_stf_cards(combined.stretches))
    return cards


def _background_cards(combined: stage.CombinedImage, combine: CombineConfig) -> dict[str, Any]:
    if combine.background is None:
        return {"BKGMODEL": ("none", "No background extraction")}
    model = combine.background.model
    detail = f"order {model.order}" if model.method == "polynomial" else f"s {model.smoothing:g}"
    cards: dict[str, Any] = {
        "BKGMODEL": (f"{model.method} {detail}", "Background model"),
        "BKGCORR": (combine.background.correction, "Background correction"),
    }
    for role in stage.COLOUR_ROLES:
        extracted = combined.backgrounds[role]
        cards[f"BKGLEV_{_LETTER[role]}"] = (extracted.level, "Median of the background model")
        cards[f"BKGSMP_{_LETTER[role]}"] = (
            int(extracted.samples.used.sum()),
            "Background samples used",
        )
    return cards


def _linear_fit_cards(combined: stage.CombinedImage) -> dict[str, Any]:
    if combined.linear_fit_reference is None:
        return {}
    cards: dict[str, Any] = {
        "LFREF": (_LETTER[combined.linear_fit_reference], "LinearFit reference channel")
    }
    for role, result in combined.linear_fits.items():
        letter = _LETTER[role]
        cards[f"LFA_{letter}"] = (result.intercept, f"LinearFit: {letter}' = a + b {letter}")
        cards[f"LFB_{letter}"] = (result.slope, "LinearFit slope")
    return cards


def _colour_cards(combined: stage.CombinedImage) -> dict[str, Any]:
    colour = combined.colour
    if colour is None:
        return {}
    cards: dict[str, Any] = {"WBREF": (colour.white_reference, "White reference")}
    for k, letter in enumerate("RGB"):
        cards[f"BKG_{letter}"] = (colour.backgrounds[k], "Background before neutralization")
        cards[f"BKGOUT_{letter}"] = (colour.levels[k], "Background after calibration")
        cards[f"WBFAC_{letter}"] = (colour.factors[k], "White balance factor")
    if colour.white_reference == "stars":
        cards["WBSTARS"] = (len(colour.stars), "Stars used for the white balance")
    return cards


def _stf_cards(stretches: stage.Stretches) -> dict[str, Any]:
    cards: dict[str, Any] = {
        "STFLO": (stretches.lo, "STF: data value mapped to 0"),
        "STFHI": (stretches.hi, "STF: data value mapped to 1"),
    }
    for prefix, parameters, kind in (
        ("STFL", stretches.linked, "linked"),
        ("STFU", stretches.unlinked, "unlinked"),
    ):
        for k, letter in enumerate("RGB"):
            cards[f"{prefix}S_{letter}"] = (parameters.shadows[k], f"STF {kind} shadows")
            cards[f"{prefix}M_{letter}"] = (parameters.midtones[k], f"STF {kind} midtones")
            cards[f"{prefix}H_{letter}"] = (parameters.highlights[k], f"STF {kind} highlights")
    return cards


def _history(combined: stage.CombinedImage, combine: CombineConfig) -> list[str]:
    lines = [f"linearlink combine {combine.palette.method} on the {combined.reference} grid"]
    if combine.background is not None:
        lines.append(f"background {combine.background.correction}ed per channel")
    if combined.linear_fit_reference is not None:
        lines.append(f"LinearFit onto {combined.linear_fit_reference}")
    if combined.colour is not None:
        lines.append(f"colour calibrated, white reference {combined.colour.white_reference}")
    return lines


def _white_stars(combined: stage.CombinedImage) -> np.ndarray:
    """(n, 5) x, y, R, G, B fluxes of the white-balance stars (empty when none)."""
    if combined.colour is None or len(combined.colour.stars) == 0:
        return np.zeros((0, 5), dtype=np.float32)
    return combined.colour.stars.astype(np.float32)


def summary(combined: stage.CombinedImage) -> dict[str, Any]:
    """JSON-ready record of every step of a combination."""
    colour = combined.colour
    return {
        "reference_grid": combined.reference,
        "registration": {
            role: {"matrix": m.tolist(), "matched": n, "rms": rms}
            for role, (m, n, rms) in combined.registrations.items()
        },
        "background": {
            role: {"level": e.level, "samples": int(e.samples.used.sum())}
            for role, e in combined.backgrounds.items()
        },
        "linear_fit": {
            "reference": combined.linear_fit_reference,
            "fits": {role: dataclasses.asdict(r) for role, r in combined.linear_fits.items()},
        },
        "background_levels": {k: list(v) for k, v in combined.background_levels.items()},
        "colour_calibration": None
        if colour is None
        else {
            "white_reference": colour.white_reference,
            "backgrounds": list(colour.backgrounds),
            "levels": list(colour.levels),
            "factors": list(colour.factors),
            "stars": len(colour.stars),
        },
        "stf": {
            "lo": combined.stretches.lo,
            "hi": combined.stretches.hi,
            "linked": dataclasses.asdict(combined.stretches.linked),
            "unlinked": dataclasses.asdict(combined.stretches.unlinked),
        },
    }
