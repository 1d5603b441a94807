"""Load, override and validate the YAML configuration; write the commented default.

All problems are collected and reported at once, each with its dotted YAML path, the offending
value and what would be accepted.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config.models import PipelineConfig
from pipeline.errors import ConfigError

__all__ = ["apply_overrides", "config_schema", "default_config_yaml", "load_config", "parse_config"]


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Read a YAML config file (or the defaults), apply ``section.key=value`` overrides, validate.

    Parameters
    ----------
    path
        YAML file; ``None`` means the built-in defaults.
    overrides
        Strings like ``integration.rejection.low=3.5``; values are parsed as YAML scalars.

    Returns
    -------
    PipelineConfig
        The validated, frozen configuration.

    Raises
    ------
    ConfigError
        Listing every problem found, each with its YAML path.
    """
    source = "defaults" if path is None else str(path)
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    raw = apply_overrides(raw, overrides, source=source)
    return parse_config(raw, source=source)


def parse_config(raw: Mapping[str, Any], *, source: str = "config") -> PipelineConfig:
    """Validate a plain mapping as a :class:`PipelineConfig`, reporting every problem at once."""
    try:
        return PipelineConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [_describe_error(error) for error in exc.errors()]
        raise ConfigError(problems, source=source) from exc


def apply_overrides(
    raw: Mapping[str, Any], overrides: Iterable[str], *, source: str = "config"
) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.path=value`` override applied."""
    result: dict[str, Any] = json.loads(json.dumps(raw))
    defaults: Any = PipelineConfig().model_dump(mode="json")
    problems = []
    for item in overrides:
        dotted, sep, text = item.partition("=")
        if not sep or not dotted.strip():
            problems.append(
                f"--set {item!r}: expected section.key=value, e.g. integration.rejection.low=3"
            )
            continue
        node, default = result, defaults
        keys = dotted.strip().split(".")
        for key in keys[:-1]:
            default = default.get(key) if isinstance(default, dict) else None
            if not isinstance(node.get(key), dict):
                # start from the default so a tagged method keeps its 'method'
                node[key] = json.loads(json.dumps(default)) if isinstance(default, dict) else {}
            node = node[key]
        node[keys[-1]] = yaml.safe_load(text) if text.strip() else None
    if problems:
        raise ConfigError(problems, source=source)
    return result


def config_schema() -> dict[str, Any]:
    """The JSON schema of the configuration file."""
    return PipelineConfig.model_json_schema()


def default_config_yaml() -> str:
    """The default configuration as YAML, every setting commented with its description."""
    lines = [
        "# LinearLink configuration. Every key is optional; shown values are the defaults.",
        "# Validate with `linearlink plan NIGHT -c THIS_FILE`; see `linearlink schema`.",
    ]
    lines += _model_yaml_lines(PipelineConfig(), indent=0)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- internals
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], source=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"the top level must be a mapping of sections, got {type(data).__name__}"],
            source=str(path),
        )
    return data


def _describe_error(error: Mapping[str, Any]) -> str:
    raw = [str(part) for part in error["loc"]]
    # Discriminated unions add the tag to the location: drop it, the YAML has no such key.
    location = [part for part in raw if not _is_union_tag(part)]
    dotted = ".".join(location) or "(top level)"
    value = error.get("input")
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        tagged = _METHOD_MODELS.get(raw[-2]) if len(raw) > 1 else None
        allowed = sorted(tagged.model_fields) if tagged else _allowed_keys(location[:-1])
        message = f"unknown key; allowed keys here: {', '.join(allowed)}"
        if tagged is not None and allowed == ["method"]:
            message += f" (method {raw[-2]!r} takes no settings; choose another method to set it)"
        return f"{dotted}: {message}"
    if error["type"] == "union_tag_not_found":
        methods = ", ".join(repr(tag) for tag in _tags_of(location))
        return f"{dotted}: no 'method' given; add one of: {methods}"
    if error["type"] == "union_tag_invalid":
        message = f"unknown method; allowed: {error['ctx']['expected_tags']}"
        value = error["ctx"].get("tag", value)
    return f"{dotted}: {_short(value)} is not allowed: {message}"


def _method_models() -> dict[str, type[BaseModel]]:
    """Every tagged-union member of the configuration, by its ``method`` tag."""
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            method = annotation.model_fields.get("method")
            tags = typing.get_args(method.annotation) if method is not None else ()
            if len(tags) == 1 and isinstance(tags[0], str):
                found[tags[0]] = annotation
            for field in annotation.model_fields.values():
                visit(field.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(PipelineConfig)
    return found


_METHOD_MODELS = _method_models()


def _is_union_tag(part: str) -> bool:
    return part in _METHOD_MODELS


def _tags_of(location: list[str]) -> list[str]:
    """The method tags allowed at ``location`` (a tagged-union field)."""
    model: Any = PipelineConfig
    annotation: Any = None
    for part in location:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return sorted(_METHOD_MODELS)
        annotation = field.annotation
        model = _model_of(annotation)
    members = [m for m in _METHOD_MODELS.values() if _contains(annotation, m)]
    return [tag for tag, m in _METHOD_MODELS.items() if m in members]


def _contains(annotation: Any, model: type[BaseModel]) -> bool:
    if annotation is model:
        return True
    return any(_contains(arg, model) for arg in typing.get_args(annotation))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(location: list[str]) -> list[str]:
    model: type[BaseModel] | None = PipelineConfig
    for part in location:
        if model is None:
            return []
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _model_yaml_lines(model: BaseModel, *, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(value, BaseModel):
            if indent == 0:
                doc = (type(value).__doc__ or "").strip().splitlines()[0]
                lines.append(f"{pad}# --- {doc}")
            lines.append(f"{pad}{name}:")
            lines += _model_yaml_lines(value, indent=indent + 1)
        else:
            dumped = yaml.safe_dump(
                {name: _plain(value)}, default_flow_style=True, sort_keys=False
            ).strip()
            if dumped.startswith("{") and dumped.endswith("}"):
                dumped = dumped[1:-1]
            lines.append(f"{pad}{dumped}")
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, types.MappingProxyType):
        return dict(value)
    return value
