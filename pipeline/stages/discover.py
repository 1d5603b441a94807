"""Discovery stage: classify frames, group them WBPP-style and match calibration to lights.

Pure functions over :class:`~pipeline.frames.FrameMetadata` records (the engine reads the
headers). A calibration group of another binning or image size is never matched to a light
group; every refusal carries its reason so ``plan`` and ``run.json`` can show it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePath

import numpy as np

from pipeline.config.models import DiscoveryConfig
from pipeline.frames import FrameMetadata, FrameType, SkippedFile

__all__ = [
    "OUTPUT_FILE_REASON",
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

OUTPUT_FILE_REASON = "a master light (an output), not a raw frame"
"""Why a master light in the night folder is skipped (expected there, not a problem)."""

_TYPE_WORDS: tuple[tuple[FrameType, tuple[str, ...]], ...] = (
    (
        FrameType.DARK_FLAT,
        (
            "darkflat",
            "flatdark",
            "dark flat",
            "flat dark",
            "dark_flat",
            "flat_dark",
            "dark-flat",
            "flat-dark",
        ),
    ),
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
    premade: bool = False
    pinned: bool = False

    @property
    def bayer_pattern(self) -> str | None:
        """The CFA pattern card of the group's frames (None for mono)."""
        return self.frames[0].bayer_pattern

    @property
    def newest(self) -> str:
        """The latest DATE-OBS of the group (empty if unknown), for 'newest master wins'."""
        return max((frame.date_obs or "" for frame in self.frames), default="")

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
def premade_master(metadata: FrameMetadata) -> bool:
    """Whether a file is an already-integrated master (IMAGETYP or file name says 'master')."""
    text = f"{metadata.type_text or ''} {PurePath(metadata.relative_path).name}".lower()
    return "master" in text


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
    if (
        header_type is FrameType.DARK
        and _type_from_words(metadata.object or "") is FrameType.DARK_FLAT
    ):
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
            if (
                word in lowered
                or word.replace(" ", "").replace("_", "").replace("-", "") in compact
            ):
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
    groups, odd_sizes = _set_aside_odd_sizes(groups, config)
    return _unique_ids(groups), tuple(skipped) + odd_sizes


_MIN_FRAMES_OF_A_SIZE = 3
"""Lights of a minority image size form their own group only with at least this many frames."""


def _set_aside_odd_sizes(
    groups: list[FrameGroup], config: DiscoveryConfig
) -> tuple[list[FrameGroup], tuple[SkippedFile, ...]]:
    """Set aside lights whose image size differs from that of the other lights of their setup.

    A light group (same filter, binning, exposure and extra keywords) is split by image size;
    a size held by fewer frames than the setup's most common size and by fewer than
    ``_MIN_FRAMES_OF_A_SIZE`` frames is a damaged or mis-set frame (a wrong ROI or binning
    in the capture program, a header rewritten by another tool), not a second camera: its
    frames are skipped as a size mismatch instead of becoming a master of one or two subs.
    """
    lights = [g for g in groups if g.frame_type is FrameType.LIGHT]
    tolerance = config.light_exposure_tolerance
    odd: list[FrameGroup] = []
    skipped: list[SkippedFile] = []
    for group in lights:
        rivals = [
            other
            for other in lights
            if other.shape != group.shape
            and _setup_key(other, config) == _setup_key(group, config)
            and abs(other.exposure - group.exposure) <= tolerance
        ]
        if not rivals or len(group.frames) >= _MIN_FRAMES_OF_A_SIZE:
            continue
        majority = max(rivals, key=lambda other: len(other.frames))
        if len(majority.frames) <= len(group.frames):
            continue
        odd.append(group)
        for frame in group.frames:
            skipped.append(
                SkippedFile(
                    frame.path,
                    f"size mismatch: {frame.size_text} pixels, while the {len(majority.frames)} "
                    f"other lights of {_setup_text(majority)} are {majority.frames[0].size_text} "
                    f"(group {majority.group_id}); a damaged frame or a changed ROI or binning "
                    "in the capture program, left out",
                )
            )
    return [g for g in groups if not any(g is o for o in odd)], tuple(skipped)


def _setup_key(group: FrameGroup, config: DiscoveryConfig) -> tuple:
    """A group's static grouping key without the image size."""
    key = _static_key(group.frames[0], group.frame_type, config)
    return key[:3] + key[4:]


def _setup_text(group: FrameGroup) -> str:
    filt = f"filter {group.filter}, " if group.filter else ""
    return f"{filt}{group.exposure:g} s, bin {group.binning[0]}x{group.binning[1]}"


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
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "none"


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
    frames: Sequence[FrameMetadata],
    config: DiscoveryConfig,
    *,
    dark_scaling: bool = True,
    library: Sequence[FrameMetadata] = (),
    pinned: Mapping[FrameType, FrameMetadata] | None = None,
) -> NightPlan:
    """Classify, group and match calibration for a whole night.

    Parameters
    ----------
    frames
        Header records of every readable FITS file found in the night folder.
    config
        Discovery settings (tolerances, extra grouping keywords).
    dark_scaling
        Whether a dark of another exposure may be scaled (requires a usable bias).
    library
        Header records from a calibration library folder; only its masters are used.
    pinned
        Master files the configuration pins per calibration type; they win every match
        their geometry allows.
    """
    classified, skipped, classification, premade = [], [], {}, []
    for metadata in list(frames) + list(library):
        frame_type, how = classify(metadata)
        from_library = metadata in library
        is_master = premade_master(metadata)
        label = f"{'master ' if is_master else ''}{frame_type.value if frame_type else 'unknown'}"
        classification[metadata.path] = f"{label} ({how})"
        if frame_type is None:
            skipped.append(
                SkippedFile(
                    metadata.path,
                    f"frame type unknown: {how}; set IMAGETYP "
                    "or put it in a folder named lights/darks/flats/bias",
                )
            )
        elif is_master and frame_type is FrameType.LIGHT:
            skipped.append(SkippedFile(metadata.path, OUTPUT_FILE_REASON))
        elif is_master:
            premade.append(_premade_group(metadata, frame_type, pinned=False))
        elif not from_library:
            classified.append((metadata, frame_type))
    for frame_type, metadata in (pinned or {}).items():
        classification[metadata.path] = f"pinned master {frame_type.value} (configuration)"
        premade.append(_premade_group(metadata, frame_type, pinned=True))
    groups, unusable = group_frames(classified, config)
    groups = _unique_ids(list(groups) + premade)
    by_type: dict[FrameType, list[FrameGroup]] = defaultdict(list)
    for group in groups:
        by_type[group.frame_type].append(group)
    lights = tuple(
        _plan_light(light, by_type, config, dark_scaling) for light in by_type[FrameType.LIGHT]
    )
    flats = tuple(
        _plan_flat(group, by_type, config) for group in by_type[FrameType.FLAT] if not group.premade
    )
    return NightPlan(groups, lights, flats, tuple(skipped) + unusable, classification)


def _premade_group(metadata: FrameMetadata, frame_type: FrameType, *, pinned: bool) -> FrameGroup:
    stem = _safe(PurePath(metadata.path).stem)
    return FrameGroup(
        group_id=f"{'PINNED' if pinned else 'PREMADE'}_{frame_type.value.upper()}_{stem}",
        frame_type=frame_type,
        filter=metadata.filter,
        binning=metadata.binning,
        shape=metadata.shape,
        exposure=metadata.exposure or 0.0,
        gain=metadata.gain,
        offset=metadata.offset,
        temperature=metadata.temperature,
        night=_night_of(metadata.date_obs),
        frames=(metadata,),
        premade=True,
        pinned=pinned,
    )


def _preference(group: FrameGroup) -> tuple:
    """Higher is better: pinned, then pre-made (newest first), then raw groups by frame count."""
    return (group.pinned, group.premade, group.newest if group.premade else "", len(group.frames))


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
    if (
        candidate.offset is not None
        and target.offset is not None
        and candidate.offset != target.offset
    ):
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


def _choose(
    role: str, candidates: Iterable[tuple[FrameGroup, str | None]], why_used: str
) -> tuple[FrameGroup | None, list[CalibrationCandidate]]:
    """Pick the preferred acceptable candidate; every other one gets its reason."""
    considered, usable = [], []
    for group, refusal in candidates:
        if refusal:
            considered.append(CalibrationCandidate(group.group_id, role, False, refusal))
        else:
            usable.append(group)
    chosen = max(usable, key=_preference) if usable else None
    for group in usable:
        if group is chosen:
            reason = why_used + (
                " (pinned in the configuration)"
                if group.pinned
                else " (pre-made master)"
                if group.premade
                else ""
            )
            considered.append(CalibrationCandidate(group.group_id, role, True, reason))
        else:
            considered.append(
                CalibrationCandidate(
                    group.group_id,
                    role,
                    False,
                    f"{chosen.group_id} is preferred "
                    "(pinned > pre-made, newest first > most frames)",
                )
            )
    return chosen, considered


def _choose_bias(target: FrameGroup, biases: list[FrameGroup]) -> tuple[str | None, list]:
    chosen, considered = _choose(
        "bias",
        ((bias, _geometry_refusal(bias, target)) for bias in biases),
        "matches binning and size",
    )
    return (chosen.group_id if chosen else None), considered


def _plan_light(
    light: FrameGroup,
    by_type: dict[FrameType, list[FrameGroup]],
    config: DiscoveryConfig,
    dark_scaling: bool,
) -> LightPlan:
    bias, considered = _choose_bias(light, by_type[FrameType.BIAS])
    dark, scaled, dark_notes = _choose_dark(
        light, by_type[FrameType.DARK], bias, config, dark_scaling
    )
    flat, flat_notes = _choose_flat(light, by_type[FrameType.FLAT])
    if dark is not None and not scaled and bias is not None:
        considered = [
            CalibrationCandidate(
                c.group_id,
                c.role,
                False,
                f"not needed: master dark {dark} has the lights' exposure and contains the bias",
            )
            if c.used
            else c
            for c in considered
        ]
        bias = None
    return LightPlan(
        light.group_id, bias, dark, scaled, flat, tuple(considered + dark_notes + flat_notes)
    )


def _choose_dark(
    light: FrameGroup,
    darks: list[FrameGroup],
    bias: str | None,
    config: DiscoveryConfig,
    dark_scaling: bool,
) -> tuple[str | None, bool, list[CalibrationCandidate]]:
    refused = []
    fitting = []
    for dark in darks:
        refusal = _geometry_refusal(dark, light) or _temperature_refusal(
            dark, light, config.temperature_tolerance
        )
        if refusal:
            refused.append(CalibrationCandidate(dark.group_id, "dark", False, refusal))
        else:
            fitting.append(dark)
    tolerance = config.light_exposure_tolerance
    exact = [(d, _exposure_refusal(d, light.exposure, tolerance, "lights'")) for d in fitting]
    chosen, notes = _choose("dark", exact, f"exposure matches the lights' {light.exposure:g} s")
    if chosen is not None or not fitting:
        return (chosen.group_id if chosen else None), False, refused + notes
    if not (dark_scaling and bias is not None):
        why = "dark scaling is off" if not dark_scaling else "no usable bias to scale it"
        return (
            None,
            False,
            refused
            + [
                CalibrationCandidate(c.group_id, "dark", False, f"{c.reason} and {why}")
                for c in notes
            ],
        )
    longer = [d for d in fitting if d.exposure >= light.exposure]
    pool = longer or fitting
    best = min(abs(d.exposure - light.exposure) for d in pool)
    nearest = [
        (
            d,
            None
            if abs(d.exposure - light.exposure) == best
            else f"exposure {d.exposure:g} s; a dark nearer {light.exposure:g} s is preferred",
        )
        for d in pool
    ]
    chosen, notes = _choose(
        "dark",
        nearest,
        f"no dark at {light.exposure:g} s; scaled by exposure after subtracting bias {bias}",
    )
    shorter = [
        CalibrationCandidate(
            d.group_id,
            "dark",
            False,
            f"exposure {d.exposure:g} s is shorter than the lights'; "
            "a longer dark is scaled down instead",
        )
        for d in fitting
        if d not in pool
    ]
    return chosen.group_id, True, refused + notes + shorter


def _exposure_refusal(
    candidate: FrameGroup, exposure: float, tolerance: float, whose: str
) -> str | None:
    if abs(candidate.exposure - exposure) <= tolerance:
        return None
    return f"exposure {candidate.exposure:g} s differs from the {whose} {exposure:g} s"


def _choose_flat(light: FrameGroup, flats: list[FrameGroup]) -> tuple[str | None, list]:
    def refusal(flat: FrameGroup) -> str | None:
        problems = []
        if (flat.filter or "").lower() != (light.filter or "").lower():
            problems.append(f"filter {flat.filter!r} differs from {light.filter!r}")
        if flat.night and light.night and flat.night != light.night:
            problems.append(f"night {flat.night} differs from {light.night}")
        geometry = _geometry_refusal(flat, light)
        return "; ".join(problems + ([geometry] if geometry else [])) or None

    chosen, considered = _choose(
        "flat", ((flat, refusal(flat)) for flat in flats), "same filter, binning and size"
    )
    return (chosen.group_id if chosen else None), considered


def _plan_flat(
    flat: FrameGroup, by_type: dict[FrameType, list[FrameGroup]], config: DiscoveryConfig
) -> FlatPlan:
    """Dark-flats of the flats' exposure first, then darks of that exposure, else the bias."""
    tolerance = config.light_exposure_tolerance
    considered: list[CalibrationCandidate] = []
    chosen = None
    for frame_type in (FrameType.DARK_FLAT, FrameType.DARK):
        candidates = [
            (
                group,
                _geometry_refusal(group, flat)
                or _exposure_refusal(group, flat.exposure, tolerance, "flats'"),
            )
            for group in by_type[frame_type]
        ]
        if chosen is not None:
            considered += [
                CalibrationCandidate(
                    g.group_id, "dark_flat", False, r or f"{chosen.group_id} is a true dark-flat"
                )
                for g, r in candidates
            ]
            continue
        chosen, notes = _choose(
            "dark_flat", candidates, f"exposure matches the flats' {flat.exposure:g} s"
        )
        considered += notes
    bias, bias_notes = _choose_bias(flat, by_type[FrameType.BIAS])
    if chosen is not None and bias is not None:
        bias_notes = [
            CalibrationCandidate(
                c.group_id, c.role, False, f"not needed: {chosen.group_id} contains the bias"
            )
            if c.used
            else c
            for c in bias_notes
        ]
        bias = None
    return FlatPlan(
        flat.group_id, chosen.group_id if chosen else None, bias, tuple(considered + bias_notes)
    )
