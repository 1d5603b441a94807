"""Stage cache: re-runs recompute only what a config change touches."""

from __future__ import annotations

from pipeline.config.loader import load_config
from pipeline.engine.runner import Pipeline


def _computed(manifest) -> dict[str, int]:
    return {
        stage: entry["computed"] for stage, entry in manifest["stages"].items() if entry["computed"]
    }


EDIT = ["integration.rejection.method=winsorized_sigma", "integration.rejection.high=2.5"]


def test_unchanged_rerun_recomputes_nothing_and_integration_edit_only_integration(
    tmp_path, process_night
):
    first = process_night(tmp_path)
    computed = _computed(first.summary.manifest)
    assert computed["calibrate"] == computed["measure"] == 20
    assert computed["register"] == 19  # the blurred sub is excluded before registration
    assert computed["integrate"] == computed["preview"] == 2

    again = Pipeline(load_config(None), first.outdir).run(first.night)
    assert _computed(again.manifest) == {}
    assert again.manifest["stages"]["calibrate"]["reused"] == 20

    plan = Pipeline(load_config(None, EDIT), first.outdir).plan(first.night)
    assert plan["cache"]["integrate"] == {"cached": 0, "to_compute": 2, "unknown": 0}
    assert plan["cache"]["register"] == {"cached": 19, "to_compute": 0, "unknown": 0}

    edited = Pipeline(load_config(None, EDIT), first.outdir).run(first.night)
    assert _computed(edited.manifest) == {"integrate": 2, "preview": 2}
    for master in edited.manifest["masters"]:
        assert master["path"].startswith(str(first.outdir))
