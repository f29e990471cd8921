"""Spec input for the CLI: YAML + `--set` overrides -> a validated flow spec, errors as one line naming file and key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


class SpecError(Exception):
    """A spec that cannot be built; the message is one line naming where and what."""



def spec_classes() -> dict[str, type[BaseModel]]:
    """The flow specs by subcommand, from flows.specs: no Prefect, torch or Ray is imported to validate."""
    from flows.specs import DemoSpec, DiffSpec, FeaturesSpec, HarvestSpec, SteerSpec, SweepSpec, SyntheticDemoSpec

    return {"harvest": HarvestSpec, "sweep": SweepSpec, "diff": DiffSpec, "demo": DemoSpec,
            "synthetic-demo": SyntheticDemoSpec, "features": FeaturesSpec, "steer": SteerSpec}


def load_yaml(path: str | None) -> dict[str, Any]:
    """The YAML mapping in path ({} without a path); SpecError with line and column on bad syntax."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(f"{path}: invalid YAML at {where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping of spec keys, got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str, origins: dict[str, str]) -> None:
    """Apply one `key=value` (dotted key for nested specs, value parsed as YAML) to data in place."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set num_tokens=4096")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise SpecError(f"--set {key}: value {raw!r} is not valid YAML: {getattr(error, 'problem', error)}") from None
    parts = key.split(".")
    target = data
    for depth, part in enumerate(parts[:-1]):
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: depth + 1])} is not a nested spec")
        target = child
    target[parts[-1]] = value
    origins[key] = f"--set {key}"


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly or as Optional[...]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def check_keys(cls: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Dotted keys of data that cls (and its nested specs) does not have; the specs themselves ignore them."""
    unknown = []
    for key, value in data.items():
        field = cls.model_fields.get(key)
        if field is None:
            unknown.append((f"{prefix}{key}", cls.__name__))
            continue
        inner = nested_model(field.annotation)
        if inner is not None and isinstance(value, dict):
            unknown += check_keys(inner, value, f"{prefix}{key}.")
    return unknown


def origin_of(key: str, origins: dict[str, str], path: str | None) -> str:
    """Where a (dotted) key was set, as a message prefix: '--set KEY' or 'FILE: KEY'."""
    for set_key in origins:
        if key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + "."):
            return f"--set {key}"
    return f"{path or 'defaults'}: {key}"


def build_spec(command: str, path: str | None, overrides: Sequence[str]) -> BaseModel:
    """YAML + overrides -> the validated spec of command; SpecError (one line) otherwise."""
    cls = spec_classes()[command]
    data = load_yaml(path)
    origins: dict[str, str] = {}
    for assignment in overrides:
        apply_override(data, assignment, origins)
    unknown = check_keys(cls, data)
    if unknown:
        messages = [f"{origin_of(key, origins, path)}: unknown key (not a field of {owner})" for key, owner in unknown]
        raise SpecError("; ".join(messages))
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        messages = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            rule = item["msg"].removeprefix("Value error, ")
            if not key:  # a rule across fields (it names them itself)
                messages.append(f"{path or 'spec'}: {rule}")
            elif item["type"] == "missing":
                messages.append(f"{origin_of(key, origins, path)}: required, not set")
            else:
                messages.append(f"{origin_of(key, origins, path)}: {rule} (got {item.get('input')!r})")
        raise SpecError("; ".join(messages)) from None


def check_spec(spec: BaseModel, path: str | None, overrides: Sequence[str]) -> None:
    """flows.preflight's compute-free checks (files, configs, manifests, S3 settings) as a SpecError."""
    from flows.preflight import PreflightError, preflight

    try:
        preflight(spec)
    except PreflightError as error:
        origins = {a.partition("=")[0].strip(): "" for a in overrides}
        raise SpecError(f"{origin_of(error.key, origins, path)}: {error.rule}") from None
