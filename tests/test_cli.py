from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pipeline.cli import main
from pipeline.config.loader import default_config_yaml, parse_config
from pipeline.io.fits import write_image

REPO = Path(__file__).resolve().parents[1]


def test_init_writes_the_commented_default_and_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "linearlink.yaml"
    assert main(["init", str(target)]) == 0
    parse_config(yaml.safe_load(target.read_text()))
    assert main(["init", str(target)]) == 1
    assert "pass --force" in capsys.readouterr().err


def test_shipped_default_config_is_current():
    assert (REPO / "configs" / "default.yaml").read_text() == default_config_yaml()


def test_schema_prints_json(capsys):
    assert main(["schema"]) == 0
    assert "integration" in json.loads(capsys.readouterr().out)["properties"]


def test_bad_config_is_refused_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "integration: {weighting: psf}\nengine: {workers: 0}\npreview: {linked: maybe}\n"
    )
    night = tmp_path / "night"
    night.mkdir()
    assert main(["run", str(night), "-c", str(bad), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "3 problems" in err
    for path in ("integration.weighting", "engine.workers", "preview.linked"):
        assert path in err
    assert not (tmp_path / "out").exists()


def test_stretch_renders_linked_and_unlinked_png(tmp_path):
    rng = np.random.default_rng(3)
    colour = rng.normal(1000.0, 10.0, size=(3, 40, 50)).astype(np.float32)
    colour *= np.array([1.0, 0.8, 0.5], dtype=np.float32)[:, None, None]
    colour[:, 20, 25] = 60000.0  # a saturated star sets the white point, as in a real master
    master = write_image(tmp_path / "m.fits", colour)
    assert main(["stretch", str(master), "-o", str(tmp_path / "linked.png")]) == 0
    assert main(["stretch", str(master), "--unlinked", "-o", str(tmp_path / "unlinked.png")]) == 0
    linked = np.asarray(Image.open(tmp_path / "linked.png"), dtype=float)
    unlinked = np.asarray(Image.open(tmp_path / "unlinked.png"), dtype=float)
    assert linked.shape == (40, 50, 3)
    linked_means = np.median(linked.reshape(-1, 3), axis=0)
    unlinked_means = np.median(unlinked.reshape(-1, 3), axis=0)
    assert linked_means[0] > linked_means[1] > linked_means[2]
    assert np.ptp(unlinked_means) < 0.1 * np.ptp(linked_means)


def test_missing_night_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope")]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_watch_refuses_a_refresh_interval_below_one_file(tmp_path, capsys):
    code = main(["run", str(tmp_path), "-o", str(tmp_path / "out"), "--watch", "--every", "0"])
    assert code == 1
    assert "--every 0" in capsys.readouterr().err


def test_workers_must_be_positive(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--workers", "0"]) == 1
    assert "give at least 1 worker process" in capsys.readouterr().err
