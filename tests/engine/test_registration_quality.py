"""Measurement, weighting, selection and registration against the generator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline
from sample_data import generate_night


def _apply(matrix, x, y):
    points = np.asarray(matrix) @ np.vstack([x, y, np.ones_like(x)])
    return points[0] / points[2], points[1] / points[2]


def _rms_errors(night: Path, truth, manifest) -> list[float]:
    height, width = truth.shape
    gx, gy = (
        a.ravel()
        for a in np.meshgrid(np.linspace(0, width - 1, 17), np.linspace(0, height - 1, 13))
    )
    errors = []
    for group in {f["group"] for f in manifest["frames"]}:
        frames = [f for f in manifest["frames"] if f["group"] == group]
        reference = next(f for f in frames if f["reference"])

        def light(frame):
            return truth.light(Path(frame["path"]).relative_to(night.resolve()).as_posix())

        for frame in frames:
            if "registration" not in frame:
                continue
            tx, ty = _apply(truth.sub_to_sub_matrix(light(frame), light(reference)), gx, gy)
            rx, ry = _apply(frame["registration"]["matrix"], gx, gy)
            errors.append(float(np.sqrt(np.mean((tx - rx) ** 2 + (ty - ry) ** 2))))
    return errors


def test_sample_night_transforms_within_0_05_px_rms(sample_run):
    manifest = sample_run.summary.manifest
    errors = _rms_errors(sample_run.night, sample_run.truth, manifest)
    assert len(errors) >= 18
    assert max(errors) < 0.05


@pytest.mark.parametrize(
    ("stars_in_frame", "min_detected", "max_detected"), [(1800, 200, 10_000), (160, 10, 29)]
)
def test_dense_and_sparse_fields_register_within_0_05_px_rms(
    tmp_path, stars_in_frame, min_detected, max_detected
):
    night = tmp_path / "night"
    truth = generate_night(
        night, rng=np.random.default_rng(5), n_lights_per_filter=4, stars_in_frame=stars_in_frame
    )
    summary = Pipeline(load_config(None), tmp_path / "out").run(night)
    manifest = summary.manifest
    counts = [f["metrics"]["star_count"] for f in manifest["frames"] if "metrics" in f]
    assert min_detected <= np.median(counts) <= max_detected
    lights = {
        f["path"]: truth.light(Path(f["path"]).relative_to(night.resolve()).as_posix())
        for f in manifest["frames"]
    }
    flipped = [
        f for f in manifest["frames"] if lights[f["path"]].flipped and not lights[f["path"]].blurred
    ]
    assert flipped and all("registration" in f for f in flipped)
    assert max(_rms_errors(night, truth, manifest)) < 0.05


def test_blurred_and_cloudy_subs_weigh_least_and_blurred_is_excluded(sample_run):
    manifest = sample_run.summary.manifest
    frames = [f for f in manifest["frames"] if "LIGHT_L" in f["group"]]

    def flags(frame):
        return sample_run.truth.light(
            Path(frame["path"]).relative_to(sample_run.night.resolve()).as_posix()
        )

    ranked = sorted(frames, key=lambda f: f["preliminary_weight"])
    lowest = {
        ("blurred" if flags(f).blurred else "cloudy" if flags(f).cloudy else "other")
        for f in ranked[:2]
    }
    assert lowest == {"blurred", "cloudy"}
    blurred = next(f for f in frames if flags(f).blurred)
    cloudy = next(f for f in frames if flags(f).cloudy)
    assert "FWHM" in blurred["excluded"] and "max_fwhm_ratio" in blurred["excluded"]
    assert "weight" not in blurred
    assert "star flux" in cloudy["weight_reason"]
