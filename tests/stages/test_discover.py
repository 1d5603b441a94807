from __future__ import annotations

from pathlib import Path

from pipeline.config.models import DiscoveryConfig
from pipeline.engine.scan import scan_night
from pipeline.frames import FrameMetadata, FrameType
from pipeline.stages.discover import classify, plan_night


def _meta(
    relative: str,
    type_text=None,
    exposure=60.0,
    filt=None,
    binning=(1, 1),
    shape=(100, 120),
    obj=None,
    gain=None,
) -> FrameMetadata:
    return FrameMetadata(
        path="/night/" + relative,
        relative_path=relative,
        type_text=type_text,
        exposure=exposure,
        filter=filt,
        binning=binning,
        shape=shape,
        object=obj,
        gain=gain,
    )


def test_header_synonyms_case_insensitive():
    cases = {
        "LIGHT": FrameType.LIGHT,
        "Light Frame": FrameType.LIGHT,
        "Light   ": FrameType.LIGHT,
        "Flat Field": FrameType.FLAT,
        "Bias Frame": FrameType.BIAS,
        "OFFSET": FrameType.BIAS,
        "Dark Frame": FrameType.DARK,
        "DARKFLAT": FrameType.DARK_FLAT,
        "Flat Dark": FrameType.DARK_FLAT,
    }
    for text, expected in cases.items():
        assert classify(_meta("x.fits", type_text=text))[0] is expected, text


def test_path_tokens_are_the_fallback():
    assert classify(_meta("bias/Bias_ASIImg_frame0001.fit"))[0] is FrameType.BIAS
    assert classify(_meta("Darks/frame1.fit"))[0] is FrameType.DARK
    assert classify(_meta("darkflats/d.fit", type_text="Dark Frame"))[0] is FrameType.DARK_FLAT
    assert classify(_meta("misc/frame.fit"))[0] is None


def test_exposure_tolerance_groups_lights_and_splits_far_exposures():
    frames = [
        _meta(f"l{i}.fits", "LIGHT", exposure=e, filt="L")
        for i, e in enumerate([60.0, 60.4, 61.5, 120.0])
    ]
    plan = plan_night(frames, DiscoveryConfig())
    lights = [g for g in plan.groups if g.frame_type is FrameType.LIGHT]
    assert sorted(len(g.frames) for g in lights) == [1, 3]


def test_other_binning_bias_is_refused_with_reason_and_scaled_dark_chosen():
    frames = [
        _meta("l1.fits", "LIGHT", 180.0, "Ha"),
        _meta("l2.fits", "LIGHT", 180.0, "Ha"),
        _meta("b1.fits", "Bias Frame", 0.0),
        _meta("b2.fits", "Bias Frame", 0.0, binning=(2, 2), shape=(50, 60)),
        _meta("d1.fits", "Dark Frame", 60.0),
        _meta("d2.fits", "Dark Frame", 300.0),
        _meta("f1.fits", "Flat Field", 2.0, "Ha"),
        _meta("f2.fits", "Flat Field", 2.0, "L"),
    ]
    plan = plan_night(frames, DiscoveryConfig())
    (light,) = plan.lights
    assert light.dark_group.startswith("DARK_300s") and light.dark_scaled
    assert light.bias_group == "BIAS_0s_bin1x1_120x100"
    assert light.flat_group.startswith("FLAT_Ha")
    refused = {c.group_id: c.reason for c in light.considered if not c.used}
    assert "binning 2x2 differs from 1x1" in refused["BIAS_0s_bin2x2_60x50"]
    assert "filter 'L' differs from 'Ha'" in refused["FLAT_L_2s_bin1x1_120x100"]


def test_no_bias_means_no_scaled_dark():
    frames = [_meta("l1.fits", "LIGHT", 180.0, "Ha"), _meta("d2.fits", "Dark Frame", 300.0)]
    (light,) = plan_night(frames, DiscoveryConfig()).lights
    assert light.dark_group is None
    assert "no usable bias" in light.considered[0].reason


def test_real_mono_night_plan(real_data):
    night = real_data / "bosscha_st8_zzmic_V_mono"
    frames, skipped = scan_night(night, DiscoveryConfig())
    assert skipped == []
    plan = plan_night(frames, DiscoveryConfig())
    (light,) = plan.lights
    assert light.dark_group == "DARK_25s_bin1x1_1530x1020" and not light.dark_scaled
    assert light.bias_group is None
    bias_verdicts = [c for c in light.considered if c.role == "bias"]
    assert len(bias_verdicts) == 1 and not bias_verdicts[0].used
    assert "binning 2x2 differs from 1x1" in bias_verdicts[0].reason
    flat = plan.flat_plan(light.flat_group)
    assert flat.dark_flat_group == "DARK_FLAT_3s_bin1x1_1530x1020"


def test_scan_skips_output_folder_and_non_fits(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "master.fits").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.fits").write_text("not fits")
    frames, skipped = scan_night(tmp_path, DiscoveryConfig(), exclude=(tmp_path / "out",))
    assert frames == []
    assert [Path(s.path).name for s in skipped] == ["broken.fits"]


def test_premade_master_is_preferred_and_newest_wins():
    frames = [
        _meta("l1.fits", "LIGHT", 60.0, "L"),
        _meta("d1.fits", "Dark Frame", 60.0),
        _meta("d2.fits", "Dark Frame", 60.0),
        FrameMetadata(
            path="/lib/old_master_dark.fits",
            relative_path="old_master_dark.fits",
            type_text="MASTER DARK",
            exposure=60.0,
            filter=None,
            binning=(1, 1),
            shape=(100, 120),
            date_obs="2026-01-01T00:00:00",
        ),
        FrameMetadata(
            path="/lib/new_master_dark.fits",
            relative_path="new_master_dark.fits",
            type_text="MASTER DARK",
            exposure=60.0,
            filter=None,
            binning=(1, 1),
            shape=(100, 120),
            date_obs="2026-06-01T00:00:00",
        ),
    ]
    (light,) = plan_night(frames, DiscoveryConfig()).lights
    assert light.dark_group == "PREMADE_DARK_new_master_dark"
    reasons = {c.group_id: c.reason for c in light.considered if c.role == "dark"}
    assert "pre-made master" in reasons["PREMADE_DARK_new_master_dark"]
    assert "is preferred" in reasons["PREMADE_DARK_old_master_dark"]


def test_library_masters_are_used_and_pinned_master_wins():
    night = [_meta("l1.fits", "LIGHT", 60.0, "L"), _meta("d1.fits", "Dark Frame", 60.0)]
    library = [
        FrameMetadata(
            path="/lib/MasterFlat_L.fits",
            relative_path="MasterFlat_L.fits",
            type_text="Flat Field",
            exposure=2.0,
            filter="L",
            binning=(1, 1),
            shape=(100, 120),
        )
    ]
    (light,) = plan_night(night, DiscoveryConfig(), library=library).lights
    assert light.flat_group == "PREMADE_FLAT_MasterFlat_L"
    pinned = FrameMetadata(
        path="/pins/dark.fits",
        relative_path="dark.fits",
        type_text="Dark",
        exposure=60.0,
        filter=None,
        binning=(1, 1),
        shape=(100, 120),
    )
    (light,) = plan_night(night, DiscoveryConfig(), pinned={FrameType.DARK: pinned}).lights
    assert light.dark_group == "PINNED_DARK_dark"


def test_master_light_in_the_night_folder_is_skipped():
    frames = [
        _meta("l1.fits", "LIGHT", 60.0, "L"),
        _meta("out/master_light_L.fits", "MASTER LIGHT"),
    ]
    plan = plan_night(frames, DiscoveryConfig())
    assert [s.reason for s in plan.skipped] == ["a master light (an output), not a raw frame"]


def test_flats_are_matched_per_night_when_night_is_a_group_keyword():
    def frame(name, kind, exposure, filt, date):
        return FrameMetadata(
            path="/n/" + name,
            relative_path=name,
            type_text=kind,
            exposure=exposure,
            filter=filt,
            binning=(1, 1),
            shape=(100, 120),
            date_obs=date,
        )

    frames = [
        frame("l1.fits", "LIGHT", 60.0, "L", "2026-11-02T22:00:00"),
        frame("f1.fits", "Flat Field", 2.0, "L", "2026-11-01T18:00:00"),
        frame("f2.fits", "Flat Field", 2.0, "L", "2026-11-02T18:00:00"),
    ]
    config = DiscoveryConfig(group_keywords=("night",))
    (light,) = plan_night(frames, config).lights
    assert light.flat_group.endswith("2026-11-02")
    refused = [c for c in light.considered if c.role == "flat" and not c.used]
    assert "night 2026-11-01 differs from 2026-11-02" in refused[0].reason


def test_dark_of_another_temperature_is_refused():
    def frame(name, kind, temperature):
        return FrameMetadata(
            path="/n/" + name,
            relative_path=name,
            type_text=kind,
            exposure=60.0,
            filter="L",
            binning=(1, 1),
            shape=(100, 120),
            temperature=temperature,
        )

    frames = [
        frame("l1.fits", "LIGHT", -10.0),
        frame("d1.fits", "Dark Frame", 0.0),
        frame("d2.fits", "Dark Frame", -9.5),
    ]
    config = DiscoveryConfig(group_keywords=("temperature",))
    plan = plan_night(frames, config)
    (light,) = plan.lights
    assert [f.path for f in plan.group(light.dark_group).frames] == ["/n/d2.fits"]
    refused = [c for c in light.considered if c.role == "dark" and not c.used]
    assert "sensor temperature 0.0 C differs from -10.0 C" in refused[0].reason
