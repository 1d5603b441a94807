from __future__ import annotations

import json

import pytest
import yaml

from pipeline.config.loader import (
    apply_overrides,
    config_schema,
    default_config_yaml,
    load_config,
    parse_config,
)
from pipeline.config.models import PipelineConfig, WinsorizedSigmaRejection
from pipeline.errors import ConfigError


def test_default_yaml_round_trips_to_the_defaults():
    assert parse_config(yaml.safe_load(default_config_yaml())) == PipelineConfig()


def test_default_yaml_comments_every_setting():
    text = default_config_yaml()
    assert "# Reject pixels this many sigma above the median." in text
    assert "# --- Stacking registered subs into the master light." in text


def test_three_mistakes_are_all_reported_with_their_yaml_paths(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "integration:\n"
        "  rejection: {method: sigma_clip, low: -2}\n"
        "preview:\n"
        "  target_backgroud: 0.3\n"
        "calibration:\n"
        "  bias: {rejection: {method: averaged}}\n"
    )
    with pytest.raises(ConfigError, match="3 problems") as caught:
        load_config(path)
    problems = caught.value.problems
    assert len(problems) == 3
    joined = "\n".join(problems)
    assert "integration.rejection.low: -2" in joined and "greater than 0" in joined
    assert "preview.target_backgroud: unknown key" in joined and "target_background" in joined
    assert "calibration.bias.rejection: 'averaged'" in joined and "'winsorized_sigma'" in joined


def test_override_sets_a_nested_value():
    config = load_config(
        None, ["integration.rejection.method=winsorized_sigma", "integration.rejection.high=2.5"]
    )
    assert config.integration.rejection == WinsorizedSigmaRejection(high=2.5)


def test_malformed_override_is_refused():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["integration.rejection.low"])


def test_models_are_frozen():
    config = PipelineConfig()
    with pytest.raises(Exception, match="frozen"):
        config.integration.weighting = "none"  # type: ignore[misc]


def test_not_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("integration: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_schema_is_json_and_names_every_section():
    schema = config_schema()
    json.dumps(schema)
    assert set(schema["properties"]) == set(PipelineConfig.model_fields)


def test_override_of_a_method_setting_keeps_the_other_defaults():
    config = load_config(
        None, ["integration.rejection.method=winsorized_sigma", "integration.rejection.high=2.5"]
    )
    assert config.integration.rejection.method == "winsorized_sigma"
    assert config.integration.rejection.high == 2.5
    assert config.integration.rejection.low == 4.0


def test_setting_of_a_method_without_settings_says_to_choose_another():
    with pytest.raises(ConfigError, match="method 'auto' takes no settings; choose another"):
        load_config(None, ["integration.rejection.high=2.5"])


def test_method_missing_says_which_are_allowed():
    with pytest.raises(ConfigError, match="no 'method' given; add one of"):
        parse_config({"integration": {"rejection": {"low": 3}}})
