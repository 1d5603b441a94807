"""Task functions: the thin I/O wrappers that load inputs, call a pure stage, save outputs.

Every task is cached through :class:`~pipeline.engine.store.Store` and returns a small
JSON-ready record (paths and numbers, never arrays), so tasks can run on any dask worker.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
from PIL import Image

from pipeline import __version__
from pipeline.config.models import LargeScaleRejection, MinMaxRejection, PipelineConfig, Rejection
from pipeline.engine.store import Store
from pipeline.engine.tiling import band_height, default_memory_limit_mb, row_bands
from pipeline.errors import DiskFullError, FrameReadError, IntegrationError, LinearLinkError
from pipeline.frames import FrameMetadata
from pipeline.io.fits import ImageReader, read_image, write_error, write_image
from pipeline.kernels import psfmatch
from pipeline.kernels.stats import robust_location_scale
from pipeline.provenance import keys
from pipeline.stages import calibrate, integrate, measure, normalize, preview, register, select
from pipeline.stages.discover import FrameGroup

__all__ = [
    "calibrate_and_measure",
    "integrate_files",
    "integrate_group",
    "master_frame",
    "preview_master",
    "register_frame",
]

Record = dict[str, Any]


def cached(store: Store, stage: str, key: str, compute: Callable[[], tuple[dict, dict]]) -> Record:
    """Return the stored record of (stage, key) or compute, store and return it."""
    record = store.lookup(stage, key)
    if record is not None:
        return {**record, "reused": True}
    start = time.perf_counter()
    outputs, result = compute()
    record = {
        "stage": stage,
        "key": key,
        "outputs": outputs,
        "result": result,
        "seconds": round(time.perf_counter() - start, 4),
    }
    store.save(stage, key, record)
    return {**record, "reused": False}


# --------------------------------------------------------------------------- masters
def master_key(
    kind: str,
    group: FrameGroup,
    config: PipelineConfig,
    subtract_key: str | None,
    pattern: str | None = None,
) -> str:
    """Cache key of one master calibration frame (``subtract_key``: the master subtracted first)."""
    section = getattr(config.calibration, kind)
    files = [keys.file_key(frame) for frame in group.frames]
    stage = "import_master" if group.premade else f"master_{kind}"
    return keys.stage_key(stage, calibrate.VERSION, section, files + [subtract_key, pattern])


def master_frame(
    store: Store,
    kind: str,
    group: FrameGroup,
    config: PipelineConfig,
    *,
    subtract: Record | None = None,
    pattern: str | None = None,
) -> Record:
    """Stack one master calibration frame (bias, dark, dark_flat or flat), or import a pre-made one.

    Parameters
    ----------
    subtract
        For flats: the record of the master (dark-flat or bias) subtracted from each flat.
    pattern
        CFA pattern of the frames; flats are then normalised per CFA channel.
    """
    if group.premade:
        return import_master(store, kind, group, config, pattern=pattern)
    key = master_key(kind, group, config, subtract["key"] if subtract else None, pattern)

    def compute() -> tuple[dict, dict]:
        rejection: Rejection = getattr(config.calibration, kind).rejection
        offset = _load_master(store.absolute(subtract["outputs"]["master"])) if subtract else None
        paths = [frame.path for frame in group.frames]
        scales = _flat_scales(paths, offset) if kind == "flat" else None
        image, low, high = _stack_files(
            paths, rejection, memory_limit(config), offset=offset, scales=scales
        )
        if kind == "flat":
            image = calibrate.normalize_master_flat(image, pattern)
        path = store.path(f"master_{kind}", group.group_id, key, ".fits")
        cards = _master_cards(kind, group, rejection, subtract, pattern)
        write_image(path, image, cards=cards, history=[f"LinearLink {__version__} master_{kind}"])
        total = image.size * len(paths)
        result = {
            "group": group.group_id,
            "kind": kind,
            "ncombine": len(paths),
            "rejected_low_fraction": low / total,
            "rejected_high_fraction": high / total,
            "frames": [frame.path for frame in group.frames],
            "subtracted": subtract["outputs"]["master"] if subtract else None,
            "premade": False,
        }
        return {"master": store.relative(path)}, result

    return cached(store, f"master_{kind}", key, compute)


def import_master(
    store: Store,
    kind: str,
    group: FrameGroup,
    config: PipelineConfig,
    *,
    pattern: str | None = None,
) -> Record:
    """Take a pre-made master (flats renormalised to median 1) into the work folder."""
    key = master_key(kind, group, config, None, pattern)
    (source,) = group.frames

    def compute() -> tuple[dict, dict]:
        with ImageReader(source.path) as reader:
            image, header = reader.read(), reader.header()
        if kind == "flat":
            image = calibrate.normalize_master_flat(image, pattern)
        path = store.path(f"master_{kind}", group.group_id, key, ".fits")
        cards = {
            "IMAGETYP": f"MASTER {kind.replace('_', ' ').upper()}",
            "NCOMBINE": header.get("NCOMBINE"),
            "EXPTIME": source.exposure,
            "FILTER": source.filter,
            "LLSOURCE": (Path(source.path).name[:68], "Pre-made master"),
        }
        write_image(path, image, cards=cards, history=[f"imported from {source.path}"])
        result = {
            "group": group.group_id,
            "kind": kind,
            "ncombine": header.get("NCOMBINE"),
            "frames": [source.path],
            "premade": True,
            "subtracted": None,
        }
        return {"master": store.relative(path)}, result

    return cached(store, f"master_{kind}", key, compute)


def defects_key(dark: Record, config: PipelineConfig, pattern: str | None) -> str:
    """Cache key of a defect map."""
    return keys.stage_key(
        "defects", calibrate.VERSION, config.calibration.cosmetic_correction, [dark["key"], pattern]
    )


def defect_map(store: Store, dark: Record, config: PipelineConfig, pattern: str | None) -> Record:
    """Find hot and cold pixels in a master dark; write the map as a uint8 FITS mask."""
    key = defects_key(dark, config, pattern)

    def compute() -> tuple[dict, dict]:
        master = _load_master(store.absolute(dark["outputs"]["master"]))
        defects = calibrate.defect_map(master, config.calibration, pattern)
        path = store.path("defects", dark["result"]["group"], key, ".fits")
        _write_mask(path, defects, dark)
        result = {
            "group": dark["result"]["group"],
            "kind": "defects",
            "hot": int((defects == 1).sum()),
            "cold": int((defects == 2).sum()),
        }
        return {"master": store.relative(path)}, result

    return cached(store, "defects", key, compute)


def _write_mask(path: Path, defects: np.ndarray, dark: Record) -> None:
    from astropy.io import fits

    path.parent.mkdir(parents=True, exist_ok=True)
    hdu = fits.PrimaryHDU(defects.astype(np.uint8))
    hdu.header["IMAGETYP"] = "DEFECT MAP"
    hdu.header["LLCODES"] = ("0 good, 1 hot, 2 cold", "Pixel codes")
    hdu.header["LLDARK"] = Path(dark["outputs"]["master"]).name[:68]  # master dark searched
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        hdu.writeto(temporary, overwrite=True)
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise write_error(path, exc, nbytes=defects.size) from exc


def _master_cards(
    kind: str, group: FrameGroup, rejection: Rejection, subtract: Record | None, pattern: str | None
) -> dict:
    return {
        "BAYERPAT": pattern,
        "IMAGETYP": f"MASTER {kind.replace('_', ' ').upper()}",
        "NCOMBINE": (len(group.frames), "Frames combined"),
        "EXPTIME": (group.exposure, "Exposure (s)"),
        "FILTER": group.filter,
        "XBINNING": group.binning[0],
        "YBINNING": group.binning[1],
        "CCD-TEMP": group.temperature,
        "GAIN": group.gain,
        "LLGROUP": (group.group_id[:68], "LinearLink group"),
        "LLREJECT": (rejection.method, "Rejection method"),
        "LLSUBTR": (
            Path(subtract["outputs"]["master"]).name[:68] if subtract else "none",
            "Master subtracted before stacking",
        ),
        "SWCREATE": f"LinearLink {__version__}",
    }


def _flat_scales(paths: Sequence[str], offset: np.ndarray | None) -> np.ndarray:
    medians = []
    for path in paths:
        data = read_image(path)
        if offset is not None:
            data = data - offset
        medians.append(float(np.nanmedian(data)))
    medians_array = np.asarray(medians)
    if np.any(medians_array <= 0):
        bad = [p for p, m in zip(paths, medians, strict=True) if m <= 0]
        raise FrameReadError(f"flat frame(s) with non-positive median after subtraction: {bad}")
    return (np.median(medians_array) / medians_array).astype(np.float32)


def _stack_files(
    paths: Sequence[str],
    rejection: Rejection,
    memory_limit_mb: int,
    *,
    offset: np.ndarray | None = None,
    scales: np.ndarray | None = None,
) -> tuple[np.ndarray, int, int]:
    readers = [ImageReader(path) for path in paths]
    try:
        shape = readers[0].shape
        _check_shapes(readers, shape)
        image = np.empty(shape, dtype=np.float32)
        low = high = 0
        height = band_height(
            shape, len(paths), memory_limit_mb=memory_limit_mb, workers=1, compiled=False
        )
        for rows in row_bands(shape[-2], height):
            stack = np.stack([reader.read(rows) for reader in readers])
            if offset is not None:
                stack -= offset[..., rows, :]
            if scales is not None:
                stack *= scales.reshape((-1,) + (1,) * (stack.ndim - 1))
            band = calibrate.stack_master_band(stack, rejection)
            image[..., rows, :] = band.image
            low += band.rejected_low
            high += band.rejected_high
        return image, low, high
    finally:
        for reader in readers:
            reader.close()


def _check_shapes(readers: Sequence[ImageReader], shape: tuple[int, ...]) -> None:
    for reader in readers:
        if reader.shape != shape:
            raise FrameReadError(
                f"{reader.path}: image size {reader.shape} differs from {shape} of its group"
            )


@functools.lru_cache(maxsize=6)
def _load_master_cached(path: str, mtime_ns: int) -> np.ndarray:
    data = read_image(path)
    data.setflags(write=False)
    return data


def _load_master(path: Path) -> np.ndarray:
    return _load_master_cached(str(path), path.stat().st_mtime_ns)


# --------------------------------------------------------------------------- lights
@dataclasses.dataclass(frozen=True)
class LightCalibration:
    """How the lights of one group are calibrated: master records and options.

    ``masters`` maps bias/dark/flat/defects to their records (or None); ``dark_exposure`` is
    set when the dark is scaled by exposure; ``pattern`` is the CFA pattern (None for mono).
    """

    masters: dict[str, Record | None]
    dark_exposure: float | None
    optimize_dark: bool
    pattern: str | None

    def dark_scale(self, frame: FrameMetadata) -> float | None:
        """Exposure ratio of a light to the scaled dark, or None if the dark is not scaled."""
        return (frame.exposure or 0.0) / self.dark_exposure if self.dark_exposure else None

    def key_inputs(self) -> dict[str, Any]:
        """What of this calibration enters the cache keys."""
        return {
            "masters": {role: (rec["key"] if rec else None) for role, rec in self.masters.items()},
            "optimize_dark": self.optimize_dark,
            "pattern": self.pattern,
        }


def light_keys(
    frame: FrameMetadata, calibration: LightCalibration, config: PipelineConfig
) -> tuple[str, str]:
    """Cache keys of a light's calibration and of its measurement."""
    cal_key = keys.stage_key(
        "calibrate",
        calibrate.VERSION,
        [config.calibration, config.debayer],
        [keys.file_key(frame), calibration.key_inputs(), calibration.dark_scale(frame)],
    )
    return cal_key, keys.stage_key("measure", measure.VERSION, config.measurement, [cal_key])


def calibrate_and_measure(
    store: Store, frame: FrameMetadata, calibration: LightCalibration, config: PipelineConfig
) -> Record:
    """Calibrate (and debayer) one light, cached, and measure it, cached; returns both records.

    A sub that cannot be calibrated or measured (unreadable pixels, a master that could not be
    built, any error of the calibration or the measurement) or in which too few stars are
    found to register it is returned with an ``excluded`` reason and the ``failed_stage``
    instead of failing, so one bad sub never stops the night.
    """
    broken = [
        f"master {role} {record.get('group')} could not be built ({record['failed']})"
        for role, record in calibration.masters.items()
        if record and "failed" in record
    ]
    if broken:
        return _failed_sub(frame.path, "calibrate", "calibration failed: " + "; ".join(broken))
    cal_key, meas_key = light_keys(frame, calibration, config)
    calibrated: dict[str, np.ndarray] = {}

    def compute_calibration() -> tuple[dict, dict]:
        raw = read_image(frame.path)
        result = calibrate.calibrate_light(
            raw,
            _masters(store, calibration, frame),
            config.calibration,
            optimize_dark=calibration.optimize_dark,
            saturation=frame.saturation,
        )
        image = calibrate.debayer_frame(result.image, calibration.pattern, config.debayer)
        calibrated["image"] = image
        path = store.path("calibrate", Path(frame.path).stem, cal_key, ".fits")
        write_image(
            path,
            image,
            cards=_light_cards(frame, calibration.pattern),
            history=_calibration_history(calibration, result.notes),
        )
        return {"calibrated": store.relative(path)}, {"shape": list(image.shape), **result.notes}

    def compute_measurement() -> tuple[dict, dict]:
        image = calibrated.get("image")
        if image is None:
            image = read_image(store.absolute(cal_record["outputs"]["calibrated"]))
        result = measure.measure_frame(
            luminance(image),
            config.measurement,
            saturation=cal_record["result"].get("saturation"),
        )
        return {}, {
            "metrics": result.metrics(),
            "stars": result.stars.round(4).tolist(),
            "stars_saturated": result.stars_saturated.tolist(),
        }

    try:
        cal_record = cached(store, "calibrate", cal_key, compute_calibration)
    except DiskFullError:
        raise  # a full disk stops the night: every later write would fail too
    except Exception as exc:  # any failure of one sub is reported, not raised
        return _failed_sub(frame.path, "calibrate", f"calibration failed: {error_text(exc)}")
    try:
        meas_record = cached(store, "measure", meas_key, compute_measurement)
    except DiskFullError:
        raise
    except Exception as exc:  # sep raises bare Exception (e.g. buffer full)
        return _failed_sub(
            frame.path,
            "measure",
            f"measurement failed: {error_text(exc)}",
            calibrate=cal_record,
        )
    record = {"frame": frame.path, "calibrate": cal_record, "measure": meas_record}
    found = len(meas_record["result"]["stars"])
    if found < MIN_STARS_TO_REGISTER:
        detected = meas_record["result"]["metrics"]["star_count"]
        return _failed_sub(
            frame.path,
            "measure",
            f"no stars: {detected} detected, {found} usable, registration needs at least "
            f"{MIN_STARS_TO_REGISTER}; clouds, dew, lost focus or a closed shutter? (lower "
            "measurement.detection_sigma if the stars are there but faint)",
            **{k: v for k, v in record.items() if k != "frame"},
        )
    return record


MIN_STARS_TO_REGISTER = 3
"""Fewest stars :func:`pipeline.stages.register.solve_transform` can match a sub with."""


def _failed_sub(frame: str, stage: str, reason: str, **records: Record) -> Record:
    """The record of a sub left out because of an error at ``stage`` (not a selection rule)."""
    return {"frame": frame, **records, "excluded": reason, "failed_stage": stage}


def error_text(exc: BaseException) -> str:
    """An error's message; unexpected exceptions also say their type."""
    if isinstance(exc, LinearLinkError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def luminance(image: np.ndarray) -> np.ndarray:
    """The image itself for mono, the channel mean for (C, H, W) colour images."""
    return image if image.ndim == 2 else np.mean(image, axis=0, dtype=np.float32)


def _masters(
    store: Store, calibration: LightCalibration, frame: FrameMetadata
) -> calibrate.CalibrationMasters:
    loaded = {
        role: _load_master(store.absolute(rec["outputs"]["master"])) if rec else None
        for role, rec in calibration.masters.items()
    }
    return calibrate.CalibrationMasters(
        bias=loaded.get("bias"),
        dark=loaded.get("dark"),
        dark_scale=calibration.dark_scale(frame),
        flat=loaded.get("flat"),
        defects=loaded.get("defects"),
        pattern=calibration.pattern,
    )


def _light_cards(frame: FrameMetadata, pattern: str | None) -> dict[str, Any]:
    return {
        "IMAGETYP": "LIGHT",
        "EXPTIME": frame.exposure,
        "FILTER": frame.filter,
        "DATE-OBS": frame.date_obs,
        "OBJECT": frame.object,
        "XBINNING": frame.binning[0],
        "YBINNING": frame.binning[1],
        "LLCFA": (pattern or "none", "CFA pattern before debayering"),
        "LLSOURCE": (Path(frame.path).name[:68], "Raw frame"),
    }


def _calibration_history(calibration: LightCalibration, notes: dict) -> list[str]:
    lines = [f"LinearLink {__version__} calibrate"]
    for role, record in calibration.masters.items():
        if record:
            lines.append(f"{role}: {Path(record['outputs']['master']).name}")
    lines += [f"{key}: {value}" for key, value in notes.items()]
    return lines


def register_key(measure_key: str, reference_measure_key: str, config: PipelineConfig) -> str:
    """Cache key of one sub's registration."""
    return keys.stage_key(
        "register", register.VERSION, config.registration, [measure_key, reference_measure_key]
    )


def register_frame(
    store: Store, light: Record, reference: Record, config: PipelineConfig
) -> Record:
    """Register one calibrated sub onto the reference (cached).

    A sub that cannot be registered (or whose files cannot be read or written) is returned
    with an ``excluded`` reason and ``failed_stage`` ``"register"``.
    """
    key = register_key(light["measure"]["key"], reference["measure"]["key"], config)

    def compute() -> tuple[dict, dict]:
        stars = np.asarray(light["measure"]["result"]["stars"], dtype=np.float64).reshape(-1, 3)
        ref_stars = np.asarray(reference["measure"]["result"]["stars"], dtype=np.float64).reshape(
            -1, 3
        )
        image = read_image(store.absolute(light["calibrate"]["outputs"]["calibrated"]))
        if light["frame"] == reference["frame"]:
            solution = register.RegistrationSolution(np.eye(3), len(stars), 0.0)
            warped = image
        else:
            solution = register.solve_transform(
                stars,
                ref_stars,
                config.registration,
                saturated=(
                    saturated_flags(light, len(stars)),
                    saturated_flags(reference, len(ref_stars)),
                ),
            )
            warped = register.warp_to_reference(
                image,
                solution.matrix,
                reference_shape=tuple(reference["calibrate"]["result"]["shape"][-2:]),
                interpolation=config.registration.interpolation,
            )
        planes = [warped] if warped.ndim == 2 else list(warped)
        statistics = [robust_location_scale(plane) for plane in planes]
        path = store.path("register", Path(light["frame"]).stem, key, ".fits")
        write_image(path, warped, cards=_registered_cards(light, solution))
        result = {
            "matrix": solution.matrix.tolist(),
            "matched": solution.matched,
            "rms": solution.rms,
            "flux_ratio": solution.flux_ratio,
            "location": [stat[0] for stat in statistics],
            "dispersion": [stat[1] for stat in statistics],
            "noise": measure.registered_noise(luminance(warped)),
            "coverage": float(np.isfinite(warped).mean()),
        }
        return {"registered": store.relative(path)}, result

    try:
        record = cached(store, "register", key, compute)
    except DiskFullError:
        raise  # a full disk stops the night: every later write would fail too
    except Exception as exc:  # any failure of one sub is reported, not raised
        return {
            **light,
            "excluded": f"registration failed: {error_text(exc)}",
            "failed_stage": "register",
        }
    return {**light, "register": record}


# --------------------------------------------------------------------------- integration
def saturated_flags(light: Record, count: int) -> np.ndarray:
    """Which stars of a measured sub's star table are saturated (none for older records)."""
    flags = light["measure"]["result"].get("stars_saturated")
    return np.asarray(flags, dtype=bool) if flags is not None else np.zeros(count, dtype=bool)


def _registered_cards(light: Record, solution: register.RegistrationSolution) -> dict[str, Any]:
    metrics = light["measure"]["result"]["metrics"]
    return {
        "IMAGETYP": "LIGHT",
        "LLSOURCE": (Path(light["frame"]).name[:68], "Raw frame"),
        "FWHM": (metrics["fwhm"], "Median Moffat FWHM (px)"),
        "ECCENTR": (metrics["eccentricity"], "Median star eccentricity"),
        "NOISE": (metrics["noise"], "MRS noise estimate (ADU)"),
        "SNRWEIGH": (metrics["snr"], "SNR weight (avgDev/noise)^2"),
        "PSFSW": (metrics["psf_signal_weight"], "PSF Signal Weight"),
        "PSFSNR": (metrics["psf_snr"], "PSF SNR"),
        "NSTARS": (metrics["star_count"], "Stars detected"),
        "LLRMS": (solution.rms, "Registration residual RMS (px)"),
        "LLMATCH": (solution.matched, "Stars matched to the reference"),
    }


def integration_key(group_id: str, register_keys: Sequence[str], config: PipelineConfig) -> str:
    """Cache key of one group's integration (the memory limit changes only the banding)."""
    integration = config.integration.model_copy(update={"memory_limit_mb": None})
    return keys.stage_key(
        "integrate",
        integrate.VERSION + normalize.VERSION + select.VERSION,
        [config.normalization, integration, config.weighting, config.selection],
        [group_id] + list(register_keys),
    )


def integrate_group(
    store: Store,
    group: FrameGroup,
    subs: Sequence[Record],
    reference_frame: str,
    calibration: dict,
    config: PipelineConfig,
    *,
    excluded: Sequence[Record] = (),
) -> Record:
    """Normalize, weight, reject and average the registered subs of one light group (cached).

    ``excluded`` are the group's subs left out upstream (listed in the master's history).
    """
    if not subs:
        raise IntegrationError(f"group {group.group_id}: no usable subs left to integrate")
    key = integration_key(group.group_id, [sub["register"]["key"] for sub in subs], config)

    def compute() -> tuple[dict, dict]:
        normalizations, weights, dropped = _weights_and_exclusions(subs, reference_frame, config)
        kept = [i for i, reason in enumerate(dropped) if reason is None]
        paths = [store.absolute(subs[i]["register"]["outputs"]["registered"]) for i in kept]
        used_norms = [normalizations[i] for i in kept]
        local = config.normalization.local
        if local is not None:
            used_norms = _local_normalizations(
                paths,
                used_norms,
                weights[kept],
                config,
                sub_noise=[_sub_noise(subs[i]) for i in kept],
                pivot=_rejection_pivot(subs, reference_frame, config),
            )
        noise = [_sub_noise(subs[i]) for i in kept]
        integrated = integrate_files(
            paths,
            used_norms,
            weights[kept],
            config.integration.rejection,
            memory_limit_mb=memory_limit(config),
            workers=config.engine.workers,
            sub_noise=noise,
            pivot=_rejection_pivot(subs, reference_frame, config),
            large_scale=config.integration.large_scale_rejection,
            psf_match_sigmas=_psf_match_sigmas([subs[i] for i in kept], config),
        )
        maps = {
            "COUNT": integrated.count,
            "REJLOW": integrated.low,
            "REJHIGH": integrated.high,
            "NOISE": integrated.noise,
        }
        image = integrated.image
        crop = None
        if config.integration.autocrop is not None:
            minimum = int(np.ceil(config.integration.autocrop * len(kept)))
            rows, cols = integrate.autocrop_box(integrated.count, minimum)
            image = image[..., rows, cols]
            maps = {name: data[..., rows, cols] for name, data in maps.items()}
            crop = [rows.start, rows.stop, cols.start, cols.stop]
        path = store.path("integrate", group.group_id, key, ".fits")
        used = [subs[i] for i in kept]
        left_out = list(excluded) + [
            {**sub, "excluded": reason} for sub, reason in zip(subs, dropped, strict=True) if reason
        ]
        rejection = integrate.resolve_rejection(config.integration.rejection, len(kept))
        write_image(
            path,
            image,
            cards={
                **_master_light_cards(group, used, calibration, config),
                "LLREJECT": (rejection.method, "Rejection method"),
                "LLLOCALN": (local.scale if local else "off", "Local normalization scale (px)"),
                "LLCROP": (str(crop) if crop else "none", "Autocrop [y0, y1, x0, x1]"),
                "LLCROPF": (config.integration.autocrop, "Autocrop coverage fraction"),
            },
            history=_integration_history(used, left_out, config),
            extra_hdus=_selected_maps(maps, config.integration.maps),
        )
        pixels = float(image.size)
        rejected = dict(zip(kept, integrated.rejected_per_sub, strict=True))
        result = {
            "group": group.group_id,
            "ncombine": len(kept),
            "frames": [sub["frame"] for sub in subs],
            "used": [reason is None for reason in dropped],
            "excluded": {sub["frame"]: r for sub, r in zip(subs, dropped, strict=True) if r},
            "weights": [float(w) for w in weights],
            "normalization": [{"factor": n.factor, "offset": n.offset} for n in normalizations],
            "local_normalization": local.model_dump() if local else None,
            "rejection": rejection.model_dump(),
            "expected_false_rejection": integrate.expected_false_rates(rejection),
            "maps": list(_selected_maps(maps, config.integration.maps)),
            "rejected_fraction": [
                [float(v) / pixels for v in rejected[i]] if i in rejected else None
                for i in range(len(subs))
            ],
            "reference": reference_frame,
            "crop": crop,
            "psf_match": _psf_match_record(integrated.psf_match, kept, len(subs)),
        }
        return {"master": store.relative(path)}, result

    return cached(store, "integrate", key, compute)


def _psf_match_sigmas(subs: Sequence[Record], config: PipelineConfig) -> list[float] | None:
    """Gaussian widths (pixels) of the seeing-difference model: the configured multiples of
    the subs' median FWHM (None when off or no sub has a FWHM)."""
    matched = config.integration.psf_matched_rejection
    if matched is None:
        return None
    fwhm = [sub["measure"]["result"]["metrics"].get("fwhm") for sub in subs]
    fwhm = [float(f) for f in fwhm if f is not None and np.isfinite(f) and f > 0]
    if not fwhm:
        return None
    median = float(np.median(fwhm))
    return [factor * median for factor in matched.blur_fwhm]


def _psf_match_record(
    match: integrate.PsfMatch | None, kept: Sequence[int], frames: int
) -> dict[str, Any] | None:
    """run.json: the model's widths and each sub's coefficients (per channel; None if
    the sub was not integrated)."""
    if match is None:
        return None
    per_sub: list[Any] = [None] * frames
    for position, index in enumerate(kept):
        per_sub[index] = [[float(c) for c in channel[position]] for channel in match.coefficients]
    return {"sigmas": list(match.sigmas), "coefficients": per_sub}


def _sub_noise(sub: Record) -> float:
    """Per-pixel noise of a registered sub (resampling lowers it; 1 if unmeasurable)."""
    noise = sub["register"]["result"].get("noise")
    if noise is None or not np.isfinite(noise) or noise <= 0:
        noise = sub["measure"]["result"]["metrics"].get("noise")
    return float(noise) if noise is not None and np.isfinite(noise) and noise > 0 else 1.0


def _selected_maps(maps: dict[str, np.ndarray], wanted) -> dict[str, np.ndarray]:
    names = {"COUNT": wanted.count, "REJLOW": wanted.rejection, "REJHIGH": wanted.rejection}
    names["NOISE"] = wanted.noise
    return {name: data for name, data in maps.items() if names[name]}


def _rejection_pivot(
    subs: Sequence[Record], reference_frame: str, config: PipelineConfig
) -> list[float] | None:
    """Background level of the reference (per channel) when rejection equalises noise."""
    if config.integration.rejection_normalization == "none":
        return None
    reference = next(sub for sub in subs if sub["frame"] == reference_frame)
    location = reference["register"]["result"]["location"]
    return [float(v) for v in np.atleast_1d(location)]


def _local_normalizations(
    paths: Sequence[Path],
    normalizations: Sequence[normalize.Normalization],
    weights: np.ndarray,
    config: PipelineConfig,
    *,
    sub_noise: Sequence[float],
    pivot: Sequence[float] | None,
) -> list[normalize.LocalNormalization]:
    """Local normalization of every sub to an integration of the best-weighted subs.

    The LN reference is the per-pixel median of the ``reference_subs`` best subs, globally
    normalized: a background template in which gradients of different directions cancel,
    which no single sub can pull (a sub of poor transparency has its gradient amplified
    by its normalization factor), and which is not tied to the best sub's own gradient.
    The models are smooth at ``scale`` pixels, so the median's extra noise does not matter.
    """
    local = config.normalization.local
    best = np.argsort(-np.asarray(weights), kind="stable")[: local.reference_subs]
    middle = (len(best) - 1) // 2  # min/max rejection of all but the middle one(s): median
    reference = integrate_files(
        [paths[i] for i in best],
        [normalizations[i] for i in best],
        np.ones(len(best)),
        MinMaxRejection(n_low=middle, n_high=middle),
        memory_limit_mb=memory_limit(config),
        workers=config.engine.workers,
    ).image

    def model(index: int) -> normalize.LocalNormalization:
        return normalize.local_normalization(
            reference,
            read_image(paths[index]),
            factor=normalizations[index].factor,
            scale=local.scale,
        )

    tasks = [dask.delayed(model)(i) for i in range(len(paths))]
    workers = max(1, config.engine.workers or min(4, os.cpu_count() or 1))
    return list(dask.compute(*tasks, scheduler="threads", num_workers=workers))


def _weights_and_exclusions(
    subs: Sequence[Record], reference_frame: str, config: PipelineConfig
) -> tuple[list, np.ndarray, list[str | None]]:
    """Normalization and weight of every sub, and which the ``min_weight`` rule drops."""
    reference_index = [s["frame"] for s in subs].index(reference_frame)
    results = [sub["register"]["result"] for sub in subs]
    normalizations = normalize.normalize_subs(
        [r["location"] for r in results],
        [r["flux_ratio"] for r in results],
        reference_index,
        config.normalization,
        dispersions=[r.get("dispersion") for r in results],
    )
    metrics = [sub["measure"]["result"]["metrics"] for sub in subs]
    weights = select.sub_weights(
        metrics,
        config.weighting.weights,
        normalization_factors=[float(np.mean(n.factor)) for n in normalizations],
        flux_ratios=[r["flux_ratio"] for r in results],
    )
    dropped = select.weight_exclusions(weights, config.selection)
    dropped[reference_index] = None
    return normalizations, weights, dropped


def memory_limit(config: PipelineConfig) -> float:
    """The configured integration memory limit in MiB (default: a share of this machine)."""
    limit = config.integration.memory_limit_mb
    return float(limit) if limit is not None else float(default_memory_limit_mb())


# Integrations of different groups run one at a time in a process, each with the whole limit.
_INTEGRATION_LOCK = threading.Lock()


def integrate_files(
    paths: Sequence[str | Path],
    normalizations: Sequence[normalize.Normalization | normalize.LocalNormalization],
    weights: np.ndarray,
    rejection: Rejection,
    *,
    memory_limit_mb: float,
    workers: int | None = None,
    sub_noise: Sequence[float] | None = None,
    pivot: Sequence[float] | None = None,
    large_scale: LargeScaleRejection | None = None,
    bands: Sequence[slice] | None = None,
    psf_match_sigmas: Sequence[float] | None = None,
) -> integrate.IntegratedBand:
    """Integrate registered sub files band by band, the sub axis whole, in bounded memory.

    The rows are split into bands sized so that ``workers`` bands in flight, the master and
    its maps stay under ``memory_limit_mb``; each band is a dask task that reads just its
    rows of every file (positioned reads, so each file is read once in total) and rejects
    and averages them. Bands are independent per pixel: the master equals the in-memory
    integration bit for bit, whatever the banding.

    Parameters
    ----------
    paths
        Registered subs (same shape).
    normalizations, weights
        Per-sub normalization and weight.
    rejection
        Rejection method.
    memory_limit_mb
        Limit on the resident memory of the integration (MiB).
    workers
        Bands processed at once (default: the number of CPUs, at most 4).
    sub_noise
        Noise sigma of each sub (for the master's noise map).
    pivot
        Background level per channel; with ``sub_noise``, rejection sees the subs scaled
        about it to equal noise (see :func:`pipeline.stages.integrate.integrate_band`).
    large_scale
        Large-scale rejection (bands then read a few extra rows on each side).
    bands
        Explicit row bands (tests use uneven ones); default: from the memory limit.
    psf_match_sigmas
        Widths (pixels) of the seeing-difference model's Gaussians: fit each sub's model on
        a few fixed stripes of rows (:func:`psf_match_coefficients`), then let rejection
        test the samples without it (see :func:`pipeline.stages.integrate.integrate_band`).
    """
    workers = max(1, workers or min(4, os.cpu_count() or 1))
    readers = [ImageReader(path) for path in paths]
    settings = {
        "normalizations": normalizations,
        "weights": weights,
        "rejection": rejection,
        "sub_noise": sub_noise,
        "pivot": pivot,
    }
    try:
        shape = readers[0].shape
        _check_shapes(readers, shape)
        sigmas = tuple(float(s) for s in psf_match_sigmas) if psf_match_sigmas else None
        halo = integrate.halo_rows(large_scale) + integrate.psf_match_rows(sigmas)
        if bands is None:
            compiled = integrate.is_compiled(rejection, len(paths)) and sigmas is None
            height = band_height(
                shape,
                len(paths),
                memory_limit_mb=memory_limit_mb,
                workers=workers,
                compiled=compiled,
                masks=large_scale is not None or sigmas is not None,
                halo=halo,
            )
            bands = list(row_bands(shape[-2], height))
        psf_match = None
        if sigmas is not None:
            coefficients = psf_match_coefficients(readers, shape, sigmas, settings, workers)
            psf_match = integrate.PsfMatch(sigmas, coefficients)
        result = integrate.IntegratedBand(  # the whole image, filled band by band
            image=np.empty(shape, dtype=np.float32),
            count=np.empty(shape, dtype=np.uint16),
            low=np.empty(shape, dtype=np.uint16),
            high=np.empty(shape, dtype=np.uint16),
            noise=np.empty(shape, dtype=np.float32),
            rejected_per_sub=np.zeros((len(paths), 2), dtype=np.int64),
            psf_match=psf_match,
        )
        per_band = [None] * len(bands)
        workspace = threading.local()

        def integrate_rows(index: int, rows: slice) -> None:
            if not hasattr(workspace, "scratch"):
                workspace.scratch = integrate.Scratch()
            read, stack = _read_rows(readers, shape, rows, halo, workspace.scratch)
            band = integrate.integrate_band(
                stack,
                **settings,
                large_scale=large_scale,
                rows=read,
                keep=slice(rows.start - read.start, rows.stop - read.start),
                overwrite=True,
                scratch=workspace.scratch,
                psf_match=psf_match,
            )
            del stack
            for name in ("image", "count", "low", "high", "noise"):
                getattr(result, name)[..., rows, :] = getattr(band, name)
            per_band[index] = band.rejected_per_sub

        tasks = [dask.delayed(integrate_rows)(i, rows) for i, rows in enumerate(bands)]
        with _INTEGRATION_LOCK:
            dask.compute(*tasks, scheduler="threads", num_workers=min(workers, len(bands)))
        result.rejected_per_sub[:] = np.sum(per_band, axis=0)
        return result
    finally:
        for reader in readers:
            reader.close()


def _read_rows(
    readers: Sequence[ImageReader],
    shape: tuple[int, ...],
    rows: slice,
    halo: int,
    scratch: integrate.Scratch,
) -> tuple[slice, np.ndarray]:
    """``rows`` of every sub plus ``halo`` rows each side (within the image), as one
    (N, ..., rows, cols) float32 stack in ``scratch``; also the rows read."""
    read = slice(max(0, rows.start - halo), min(shape[-2], rows.stop + halo))
    stack = scratch.array(
        "stack", (len(readers),) + shape[:-2] + (read.stop - read.start, shape[-1]), np.float32
    )
    for position, reader in enumerate(readers):
        reader.read_into(stack[position], read)
    return read, stack


PSF_MATCH_STRIPES = 4
"""Stripes of rows on which the seeing-difference model of every sub is fitted."""
PSF_MATCH_STRIPE_ROWS = 128


def psf_match_stripes(height: int) -> list[slice]:
    """Fixed, evenly spaced stripes of rows (the fit never depends on the banding)."""
    rows = min(PSF_MATCH_STRIPE_ROWS, max(1, height // PSF_MATCH_STRIPES))
    starts = {
        int(round((i + 0.5) * height / PSF_MATCH_STRIPES - rows / 2))
        for i in range(PSF_MATCH_STRIPES)
    }
    return [slice(max(0, s), min(height, max(0, s) + rows)) for s in sorted(starts)]


def psf_match_coefficients(
    readers: Sequence[ImageReader],
    shape: tuple[int, ...],
    sigmas: tuple[float, ...],
    settings: dict[str, Any],
    workers: int,
) -> np.ndarray:
    """(channels, N, K) seeing-difference model of every sub, fitted on fixed stripes."""
    halo = integrate.psf_match_rows(sigmas)

    def equations(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        read, stack = _read_rows(readers, shape, rows, halo, integrate.Scratch())
        return integrate.psf_match_equations(
            stack,
            **settings,
            sigmas=sigmas,
            rows=read,
            keep=slice(rows.start - read.start, rows.stop - read.start),
            overwrite=True,
        )

    stripes = psf_match_stripes(shape[-2])
    tasks = [dask.delayed(equations)(rows) for rows in stripes]
    with _INTEGRATION_LOCK:
        parts = dask.compute(*tasks, scheduler="threads", num_workers=min(workers, len(tasks)))
    ata = np.sum([part[0] for part in parts], axis=0)
    atb = np.sum([part[1] for part in parts], axis=0)
    return np.stack([psfmatch.solve_coefficients(a, b) for a, b in zip(ata, atb, strict=True)])


def _master_light_cards(
    group: FrameGroup, subs: Sequence[Record], calibration: dict, config: PipelineConfig
) -> dict:
    first = group.frames[0]
    return {
        "IMAGETYP": "MASTER LIGHT",
        "FILTER": group.filter,
        "NCOMBINE": (len(subs), "Subs integrated"),
        "NREJECT": (len(group.frames) - len(subs), "Subs excluded"),
        "EXPTIME": (group.exposure, "Exposure of one sub (s)"),
        "TOTALEXP": (group.exposure * len(subs), "Total integration time (s)"),
        "OBJECT": first.object,
        "INSTRUME": first.instrument,
        "XBINNING": group.binning[0],
        "YBINNING": group.binning[1],
        "LLGROUP": (group.group_id[:68], "LinearLink group"),
        "LLNORM": (config.normalization.method, "Normalization"),
        "LLWEIGHT": (config.weighting.weights.method, "Weighting"),
        "MBIAS": _name(calibration.get("bias")),
        "MDARK": _name(calibration.get("dark")),
        "MFLAT": _name(calibration.get("flat")),
        "SWCREATE": f"LinearLink {__version__}",
    }


def _name(record: Record | None) -> str:
    return Path(record["outputs"]["master"]).name[:68] if record else "none"


def _integration_history(
    subs: Sequence[Record], excluded: Sequence[Record], config: PipelineConfig
) -> list[str]:
    names = (
        "calibration",
        "measurement",
        "registration",
        "weighting",
        "selection",
        "normalization",
        "integration",
    )
    sections = [getattr(config, name) for name in names]
    lines = [f"LinearLink {__version__} integrate; settings hash {keys.config_hash(sections)[:16]}"]
    for name, section in zip(names, sections, strict=True):
        lines.append(f"{name}: " + section.model_dump_json())
    lines += [f"used: {Path(sub['frame']).name}" for sub in subs]
    lines += [f"excluded: {Path(sub['frame']).name}: {sub['excluded']}" for sub in excluded]
    return lines


# --------------------------------------------------------------------------- preview
def preview_key(integration_key: str, config: PipelineConfig) -> str:
    """Cache key of a master's preview."""
    return keys.stage_key("preview", preview.VERSION, config.preview, [integration_key])


def preview_master(store: Store, master: Record, config: PipelineConfig) -> Record:
    """Render the linked STF preview PNG of a master light (cached)."""
    key = preview_key(master["key"], config)

    def compute() -> tuple[dict, dict]:
        image = read_image(store.absolute(master["outputs"]["master"]))
        pixels, parameters = preview.render_preview(image, config.preview)
        path = store.path("preview", master["result"]["group"], key, ".png")
        write_png(path, pixels)
        return {"preview": store.relative(path)}, {"stretch": dataclasses.asdict(parameters)}

    return cached(store, "preview", key, compute)


_PNG_COMPRESSION = 1
"""zlib level of the previews: 1 writes a 12 Mpx RGB preview ~8x faster than PIL's default 6
for a file ~15 % larger (previews are looked at, not archived)."""


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write 8-bit pixels as PNG atomically (fast zlib level; see ``_PNG_COMPRESSION``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(pixels).save(temporary, format="PNG", compress_level=_PNG_COMPRESSION)
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise write_error(path, exc, nbytes=pixels.nbytes) from exc
