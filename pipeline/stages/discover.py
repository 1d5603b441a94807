"""Discovery stage: classify frames, group them WBPP-style and match calibration to lights.

Pure functions over :class:`~pipeline.frames.FrameMetadata` records (the engine reads the
headers). A calibration group of another binning or image size is never matched to a light
group; every refusal carries its reason so ``plan`` and ``run.json`` can show it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePath

import numpy as np

from pipeline.config.models import DiscoveryConfig
from pipeline.frames import FrameMetadata, FrameType, SkippedFile

__all__ = [
    "CalibrationCandidate",
    "FlatPlan",
    "FrameGroup",
    "LightPlan",
    "NightPlan",
    "classify",
    "group_frames",
    "plan_night",
]

VERSION = "1"

_TYPE_WORDS: tuple[tuple[FrameType, tuple[str, ...]], ...] = (
    (FrameType.DARK_FLAT, ("darkflat", "flatdark", "dark flat", "flat dark", "dark_flat",
                           "flat_dark", "dark-flat", "flat-dark")),
    (FrameType.BIAS, ("bias", "offset", "zero")),
    (FrameType.DARK, ("dark",)),
    (FrameType.FLAT, ("flat",)),
    (FrameType.LIGHT, ("light", "object", "science")),
)


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class FrameGroup:
    """Frames of one type sharing filter, binning, size, exposure and extra keywords."""

    group_id: str
    frame_type: FrameType
    filter: str | None
    binning: tuple[int, int]
    shape: tuple[int, ...]
    exposure: float
    gain: float | None
    offset: float | None
    temperature: float | None
    night: str | None
    frames: tuple[FrameMetadata, ...]

    def describe(self) -> str:
        """One line for humans."""
        filt = f" filter {self.filter}" if self.filter else ""
        return (
            f"{self.group_id}: {len(self.frames)} {self.frame_type.value}{filt}, "
            f"{self.exposure:g} s, bin {self.binning[0]}x{self.binning[1]}, "
            f"{self.shape[-1]}x{self.shape[-2]}"
        )


@dataclass(frozen=True)
class CalibrationCandidate:
    """A calibration group considered for a target group, and the verdict."""

    group_id: str
    role: str
    used: bool
    reason: str


@dataclass(frozen=True)
class FlatPlan:
    """How one master flat is built: which groups calibrate the flat frames."""

    flat_group: str
    dark_flat_group: str | None
    bias_group: str | None
    considered: tuple[CalibrationCandidate, ...] = ()


@dataclass(frozen=True)
class LightPlan:
    """The calibration chosen for one light group."""

    light_group: str
    bias_group: str | None
    dark_group: str | None
    dark_scaled: bool
    flat_group: str | None
    considered: tuple[CalibrationCandidate, ...] = ()


@dataclass(frozen=True)
class NightPlan:
    """Everything discovery decided about a night folder."""

    groups: tuple[FrameGroup, ...]
    lights: tuple[LightPlan, ...]
    flats: tuple[FlatPlan, ...]
    skipped: tuple[SkippedFile, ...] = ()
    classification: dict[str, str] = field(default_factory=dict)

    def group(self, group_id: str) -> FrameGroup:
        """The group with this id."""
        for candidate in self.groups:
            if candidate.group_id == group_id:
                return candidate
        raise KeyError(group_id)

    def flat_plan(self, flat_group: str) -> FlatPlan:
        """The plan that builds this master flat."""
        for plan in self.flats:
            if plan.flat_group == flat_group:
                return plan
        raise KeyError(flat_group)


# --------------------------------------------------------------------------- classification
def classify(metadata: FrameMetadata) -> tuple[FrameType | None, str]:
    """Decide a frame's type from its header, else from its file and folder names.

    Returns
    -------
    frame_type, how
        The type (``None`` if undecidable) and a short explanation of the evidence.
    """
    path_type = _type_from_path(metadata.relative_path)
    header_type = _type_from_words(metadata.type_text) if metadata.type_text else None
    if header_type is FrameType.DARK and path_type is FrameType.DARK_FLAT:
        return FrameType.DARK_FLAT, f"header {metadata.type_text!r}, path says dark flat"
    if header_type is FrameType.DARK and _type_from_words(metadata.object or "") is FrameType.DARK_FLAT:
        return FrameType.DARK_FLAT, f"header {metadata.type_text!r}, OBJECT {metadata.object!r}"
    if header_type is not None:
        return header_type, f"header {metadata.type_text!r}"
    if path_type is not None:
        return path_type, f"path {metadata.relative_path!r}"
    return None, "no IMAGETYP/FRAME card and no frame-type word in the file or folder names"


def _type_from_words(text: str) -> FrameType | None:
    lowered = text.lower().replace("master", "").strip()
    compact = re.sub(r"[\s_\-]+", "", lowered)
    for frame_type, words in _TYPE_WORDS:
        for word in words:
            if word in lowered or word.replace(" ", "").replace("_", "").replace("-", "") in compact:
                return frame_type
    return None


def _type_from_path(relative_path: str) -> FrameType | None:
    parts = PurePath(relative_path).parts
    for part in reversed(parts):  # the file name first, then its folders inward-out
        found = _type_from_words(part)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- grouping
def group_frames(
    frames: Iterable[tuple[FrameMetadata, FrameType]], config: DiscoveryConfig
) -> tuple[tuple[FrameGroup, ...], tuple[SkippedFile, ...]]:
    """Group classified frames by type, filter, binning, size, exposure and extra keywords."""
    buckets: dict[tuple, list[FrameMetadata]] = defaultdict(list)
    skipped: list[SkippedFile] = []
    for metadata, frame_type in frames:
        if metadata.exposure is None and frame_type is not FrameType.BIAS:
            note = "; ".join(metadata.warnings) or "no EXPTIME/EXPOSURE card"
            skipped.append(SkippedFile(metadata.path, f"exposure unknown ({note})"))
            continue
        buckets[_static_key(metadata, frame_type, config)].append(metadata)
    groups: list[FrameGroup] = []
    for key, members in sorted(buckets.items(), key=lambda item: str(item[0])):
        frame_type = key[0]
        tolerance = _exposure_tolerance(frame_type, config)
        for cluster in _cluster(members, lambda m: m.exposure or 0.0, tolerance):
            groups += _split_temperature(frame_type, cluster, config)
    return _unique_ids(groups), tuple(skipped)


def _static_key(metadata: FrameMetadata, frame_type: FrameType, config: DiscoveryConfig) -> tuple:
    filt = metadata.filter if frame_type in (FrameType.LIGHT, FrameType.FLAT) else None
    extras = []
    if "gain" in config.group_keywords:
        extras.append(("gain", metadata.gain))
    if "offset" in config.group_keywords:
        extras.append(("offset", metadata.offset))
    if "night" in config.group_keywords:
        extras.append(("night", _night_of(metadata.date_obs)))
    return (frame_type, filt, metadata.binning, metadata.shape, tuple(extras))


def _exposure_tolerance(frame_type: FrameType, config: DiscoveryConfig) -> float:
    if frame_type is FrameType.LIGHT:
        return config.light_exposure_tolerance
    if frame_type in (FrameType.DARK, FrameType.DARK_FLAT):
        return config.dark_exposure_tolerance
    return float("inf") if frame_type is FrameType.BIAS else config.light_exposure_tolerance


def _cluster(members, value_of, tolerance: float) -> list[list[FrameMetadata]]:
    ordered = sorted(members, key=lambda m: (value_of(m), m.path))
    clusters: list[list[FrameMetadata]] = []
    for member in ordered:
        if clusters and value_of(member) - value_of(clusters[-1][0]) <= tolerance:
            clusters[-1].append(member)
        else:
            clusters.append([member])
    return clusters


def _split_temperature(
    frame_type: FrameType, members: list[FrameMetadata], config: DiscoveryConfig
) -> list[FrameGroup]:
    if "temperature" not in config.group_keywords:
        return [_make_group(frame_type, members, config)]
    known = [m for m in members if m.temperature is not None]
    unknown = [m for m in members if m.temperature is None]
    clusters = _cluster(known, lambda m: m.temperature, config.temperature_tolerance)
    if unknown:
        clusters.append(unknown)
    return [_make_group(frame_type, cluster, config) for cluster in clusters]


def _make_group(
    frame_type: FrameType, members: list[FrameMetadata], config: DiscoveryConfig
) -> FrameGroup:
    first = members[0]
    members = sorted(members, key=lambda m: (m.date_obs or "", m.path))
    exposure = float(np.median([m.exposure or 0.0 for m in members]))
    temperatures = [m.temperature for m in members if m.temperature is not None]
    filt = first.filter if frame_type in (FrameType.LIGHT, FrameType.FLAT) else None
    night = _night_of(first.date_obs) if "night" in config.group_keywords else None
    parts = [frame_type.value.upper()]
    if filt:
        parts.append(_safe(filt))
    parts += [f"{exposure:g}s", f"bin{first.binning[0]}x{first.binning[1]}", first.size_text]
    if "gain" in config.group_keywords and first.gain is not None:
        parts.append(f"gain{first.gain:g}")
    if "offset" in config.group_keywords and first.offset is not None:
        parts.append(f"offset{first.offset:g}")
    if night:
        parts.append(night)
    return FrameGroup(
        group_id="_".join(parts),
        frame_type=frame_type,
        filter=filt,
        binning=first.binning,
        shape=first.shape,
        exposure=exposure,
        gain=first.gain,
        offset=first.offset,
        temperature=float(np.median(temperatures)) if temperatures else None,
        night=night,
        frames=tuple(members),
    )


def _unique_ids(groups: list[FrameGroup]) -> tuple[FrameGroup, ...]:
    seen: dict[str, int] = defaultdict(int)
    result = []
    for group in groups:
        seen[group.group_id] += 1
        if seen[group.group_id] > 1:
            group = _replace_id(group, f"{group.group_id}_{seen[group.group_id]}")
        result.append(group)
    return tuple(result)


def _replace_id(group: FrameGroup, group_id: str) -> FrameGroup:
    from dataclasses import replace

    return replace(group, group_id=group_id)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "none"


def _night_of(date_obs: str | None) -> str | None:
    if not date_obs:
        return None
    try:
        moment = datetime.fromisoformat(date_obs.strip().replace("Z", ""))
    except ValueError:
        return None
    return (moment - timedelta(hours=12)).date().isoformat()


# --------------------------------------------------------------------------- matching
def plan_night(
    frames: Sequence[FrameMetadata], config: DiscoveryConfig, *, dark_scaling: bool = True
) -> NightPlan:
    """Classify, group and match calibration for a whole night.

    Parameters
    ----------
    frames
        Header records of every readable FITS file found.
    config
        Discovery settings (tolerances, extra grouping keywords).
    dark_scaling
        Whether a dark of another exposure may be scaled (requires a usable bias).
    """
    classified, skipped, classification = [], [], {}
    for metadata in frames:
        frame_type, how = classify(metadata)
        classification[metadata.path] = f"{frame_type.value if frame_type else 'unknown'} ({how})"
        if frame_type is None:
            skipped.append(SkippedFile(metadata.path, f"frame type unknown: {how}; set IMAGETYP "
                                       "or put it in a folder named lights/darks/flats/bias"))
        else:
            classified.append((metadata, frame_type))
    groups, unusable = group_frames(classified, config)
    by_type: dict[FrameType, list[FrameGroup]] = defaultdict(list)
    for group in groups:
        by_type[group.frame_type].append(group)
    lights = tuple(
        _plan_light(light, by_type, config, dark_scaling) for light in by_type[FrameType.LIGHT]
    )
    needed_flats = {plan.flat_group for plan in lights if plan.flat_group}
    flats = tuple(
        _plan_flat(group, by_type, config)
        for group in by_type[FrameType.FLAT]
        if group.group_id in needed_flats
    )
    return NightPlan(groups, lights, flats, tuple(skipped) + unusable, classification)


def _geometry_refusal(candidate: FrameGroup, target: FrameGroup) -> str | None:
    problems = []
    if candidate.binning != target.binning:
        problems.append(
            f"binning {candidate.binning[0]}x{candidate.binning[1]} differs from "
            f"{target.binning[0]}x{target.binning[1]}"
        )
    if candidate.shape != target.shape:
        problems.append(
            f"size {candidate.shape[-1]}x{candidate.shape[-2]} differs from "
            f"{target.shape[-1]}x{target.shape[-2]}"
        )
    if candidate.gain is not None and target.gain is not None and candidate.gain != target.gain:
        problems.append(f"gain {candidate.gain:g} differs from {target.gain:g}")
    if candidate.offset is not None and target.offset is not None and candidate.offset != target.offset:
        problems.append(f"offset {candidate.offset:g} differs from {target.offset:g}")
    return "; ".join(problems) or None


def _temperature_refusal(candidate: FrameGroup, target: FrameGroup, tolerance: float) -> str | None:
    if candidate.temperature is None or target.temperature is None:
        return None
    if abs(candidate.temperature - target.temperature) > tolerance:
        return (
            f"sensor temperature {candidate.temperature:.1f} C differs from "
            f"{target.temperature:.1f} C by more than {tolerance:g} C"
        )
    return None


def _choose_bias(target: FrameGroup, biases: list[FrameGroup]) -> tuple[str | None, list]:
    considered, usable = [], []
    for bias in biases:
        refusal = _geometry_refusal(bias, target)
        if refusal:
            considered.append(CalibrationCandidate(bias.group_id, "bias", False, refusal))
        else:
            usable.append(bias)
    chosen = max(usable, key=lambda g: len(g.frames)) if usable else None
    for bias in usable:
        used = bias is chosen
        reason = "matches binning and size" if used else f"another bias ({chosen.group_id}) has more frames"
        considered.append(CalibrationCandidate(bias.group_id, "bias", used, reason))
    return (chosen.group_id if chosen else None), considered


def _plan_light(
    light: FrameGroup,
    by_type: dict[FrameType, list[FrameGroup]],
    config: DiscoveryConfig,
    dark_scaling: bool,
) -> LightPlan:
    bias, considered = _choose_bias(light, by_type[FrameType.BIAS])
    dark, scaled, dark_notes = _choose_dark(light, by_type[FrameType.DARK], bias, config, dark_scaling)
    flat, flat_notes = _choose_flat(light, by_type[FrameType.FLAT])
    if dark is not None and not scaled and bias is not None:
        considered = [
            CalibrationCandidate(c.group_id, c.role, False,
                                 f"not needed: master dark {dark} has the lights' exposure and "
                                 "contains the bias") if c.used else c
            for c in considered
        ]
        bias = None
    return LightPlan(light.group_id, bias, dark, scaled, flat,
                     tuple(considered + dark_notes + flat_notes))


def _choose_dark(
    light: FrameGroup,
    darks: list[FrameGroup],
    bias: str | None,
    config: DiscoveryConfig,
    dark_scaling: bool,
) -> tuple[str | None, bool, list[CalibrationCandidate]]:
    considered, usable = [], []
    for dark in darks:
        refusal = _geometry_refusal(dark, light) or _temperature_refusal(
            dark, light, config.temperature_tolerance
        )
        if refusal:
            considered.append(CalibrationCandidate(dark.group_id, "dark", False, refusal))
        else:
            usable.append(dark)
    if not usable:
        return None, False, considered
    nearest = min(usable, key=lambda g: (abs(g.exposure - light.exposure), -g.exposure))
    exact = abs(nearest.exposure - light.exposure) <= config.light_exposure_tolerance
    if exact:
        chosen, scaled = nearest, False
        reason = f"exposure {nearest.exposure:g} s matches the lights' {light.exposure:g} s"
    elif dark_scaling and bias is not None:
        longer = [g for g in usable if g.exposure >= light.exposure]
        chosen = min(longer, key=lambda g: g.exposure) if longer else nearest
        scaled = True
        reason = (f"no dark at {light.exposure:g} s; {chosen.exposure:g} s dark scaled by "
                  f"{light.exposure / chosen.exposure:.3f} after subtracting bias {bias}")
    else:
        why = "dark scaling is off" if not dark_scaling else "no usable bias to scale it"
        for dark in usable:
            considered.append(CalibrationCandidate(
                dark.group_id, "dark", False,
                f"exposure {dark.exposure:g} s differs from {light.exposure:g} s and {why}"))
        return None, False, considered
    for dark in usable:
        if dark is chosen:
            considered.append(CalibrationCandidate(dark.group_id, "dark", True, reason))
        else:
            considered.append(CalibrationCandidate(
                dark.group_id, "dark", False,
                f"exposure {dark.exposure:g} s; {chosen.group_id} fits better"))
    return chosen.group_id, scaled, considered


def _choose_flat(light: FrameGroup, flats: list[FrameGroup]) -> tuple[str | None, list]:
    considered, usable = [], []
    for flat in flats:
        refusal = _geometry_refusal(flat, light)
        if (flat.filter or "").lower() != (light.filter or "").lower():
            refusal = "; ".join(filter(None, [f"filter {flat.filter!r} differs from {light.filter!r}", refusal]))
        if refusal:
            considered.append(CalibrationCandidate(flat.group_id, "flat", False, refusal))
        else:
            usable.append(flat)
    chosen = max(usable, key=lambda g: len(g.frames)) if usable else None
    for flat in usable:
        used = flat is chosen
        reason = "same filter, binning and size" if used else f"{chosen.group_id} has more frames"
        considered.append(CalibrationCandidate(flat.group_id, "flat", used, reason))
    return (chosen.group_id if chosen else None), considered


def _plan_flat(
    flat: FrameGroup, by_type: dict[FrameType, list[FrameGroup]], config: DiscoveryConfig
) -> FlatPlan:
    considered: list[CalibrationCandidate] = []
    dark_like = by_type[FrameType.DARK_FLAT] + by_type[FrameType.DARK]
    chosen = None
    for candidate in dark_like:
        refusal = _geometry_refusal(candidate, flat)
        if refusal is None and abs(candidate.exposure - flat.exposure) > config.light_exposure_tolerance:
            refusal = f"exposure {candidate.exposure:g} s differs from the flats' {flat.exposure:g} s"
        if refusal is None and chosen is None:
            chosen = candidate
            considered.append(CalibrationCandidate(
                candidate.group_id, "dark_flat", True,
                f"exposure {candidate.exposure:g} s matches the flats' {flat.exposure:g} s"))
        elif refusal is None:
            considered.append(CalibrationCandidate(candidate.group_id, "dark_flat", False,
                                                   f"{chosen.group_id} preferred"))
        else:
            considered.append(CalibrationCandidate(candidate.group_id, "dark_flat", False, refusal))
    bias, bias_notes = _choose_bias(flat, by_type[FrameType.BIAS])
    if chosen is not None and bias is not None:
        bias_notes = [
            CalibrationCandidate(c.group_id, c.role, False,
                                 f"not needed: {chosen.group_id} contains the bias") if c.used else c
            for c in bias_notes
        ]
        bias = None
    return FlatPlan(flat.group_id, chosen.group_id if chosen else None, bias,
                    tuple(considered + bias_notes))
