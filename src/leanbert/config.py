"""Typed, validated configuration: model presets, YAML files and ``--set key=value`` overrides.

Configuration is data. Every config class is a pydantic model that forbids unknown keys,
so a typo fails at load time with a message naming the key, the closest valid key and the
allowed values, instead of being silently ignored deep inside a run.

Presets live as YAML files in ``leanbert/presets/<kind>/``. :func:`load_config` is the one
way every config kind is read: a preset name or a YAML file, then ``--set`` overrides, then
validation. The model presets and the model-config registry live with the models
(:mod:`leanbert.models`); this module knows nothing about any particular config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from leanbert.errors import ConfigError, did_you_mean

T = TypeVar("T", bound=BaseModel)


class StrictConfig(BaseModel):
    """Base class of all leanbert configs: unknown keys are errors, types are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def format_validation_error(err: ValidationError, cls: type[BaseModel], source: str, prefix: str = "") -> str:
    """Turn a pydantic error into one line: where, which key, what is wrong, how to fix it.
    ``prefix`` names the section ``cls`` sits in (``"model."``), so keys read as the user set them."""
    first = err.errors()[0]
    loc = prefix + (".".join(str(p) for p in first["loc"]) or "<root>")
    kind = first["type"]
    if kind == "extra_forbidden":
        key = str(first["loc"][-1])
        fields = list(_section_class(cls, first["loc"][:-1]).model_fields)
        hint = did_you_mean(key, fields)
        return (
            f"{source}: unknown key '{loc}'{hint}; valid keys are: {', '.join(sorted(fields))}"
        )
    value = first.get("input")
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    msg = first["msg"].rstrip(".")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    if not first["loc"]:  # a whole-config check (model_validator): its message says it all
        return f"{source}: {msg}{more}"
    return f"{source}: bad value {shown} for key '{loc}': {msg}{more}"


def _section_class(cls: type[BaseModel], path: Sequence[Any]) -> type[BaseModel]:
    """The config class of the section at ``path`` (``("optim",)`` -> OptimConfig), so that an
    unknown key is reported with the keys of its own section."""
    import typing

    for part in path:
        field = cls.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            break
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        cls = nested[0]
    return cls


def validate(cls: type[T], data: Mapping[str, Any], source: str = "config", prefix: str = "") -> T:
    """Validate ``data`` against ``cls``; raise :class:`ConfigError` with one clear line."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, source, prefix)) from None


# --------------------------------------------------------------------------------------
# YAML files and overrides
# --------------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with clear errors for missing, empty or bad files."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}; check the path or use a preset name")
    if p.is_dir():
        raise ConfigError(f"{p} is a directory, expected a YAML config file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: invalid YAML{where}; fix the syntax") from None
    if data is None:
        raise ConfigError(f"{p} is empty; it must contain a mapping of config keys")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (so ``1e-4``, ``true``, ``[1,2]`` work)."""
    if "=" not in item:
        raise ConfigError(f"bad override '{item}': expected key=value, e.g. --set optim.lr=1e-4")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override '{item}': empty key; expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key=value`` override applied (nested keys with dots)."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"bad override '{item}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return out


# --------------------------------------------------------------------------------------
# Model presets
# --------------------------------------------------------------------------------------


def _preset_dir(kind: str) -> Any:
    return resources.files("leanbert") / "presets" / kind


def list_presets(kind: str) -> list[str]:
    """Names of the YAML presets of one kind (``models``, ``pretrain``, ...)."""
    d = _preset_dir(kind)
    if not d.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in d.iterdir() if p.name.endswith(".yaml"))


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """The raw mapping of preset ``name`` of ``kind``; clear error for unknown names."""
    names = list_presets(kind)
    if name not in names:
        raise ConfigError(
            f"unknown {kind.rstrip('s')} preset '{name}'{did_you_mean(name, names)}; "
            f"choose one of: {', '.join(names)} or give a YAML file"
        )
    data = yaml.safe_load((_preset_dir(kind) / f"{name}.yaml").read_text(encoding="utf-8"))
    return dict(data)


def read_config(kind: str, name_or_path: str | Path | Mapping[str, Any],
                overrides: Sequence[str] = ()) -> tuple[dict[str, Any], str]:
    """``(data, source)`` of a config of ``kind``: a preset name (``presets/<kind>/``), a YAML
    file or a mapping, with ``key=value`` overrides applied; ``source`` names it in errors."""
    if isinstance(name_or_path, Mapping):
        data, source = dict(name_or_path), f"{kind} config"
    else:
        p = Path(name_or_path)
        if str(name_or_path).endswith((".yaml", ".yml")) or p.is_file():
            data, source = load_yaml(p), str(p)
        else:
            data, source = load_preset(kind, str(name_or_path)), f"{kind.rstrip('s')} preset '{name_or_path}'"
    return apply_overrides(data, overrides), source


def load_config(cls: type[T], kind: str, name_or_path: str | Path | Mapping[str, Any],
                overrides: Sequence[str] = ()) -> T:
    """The one way every config kind is loaded: a preset of ``kind`` or a YAML file (or a
    mapping), then ``key=value`` overrides, then validation against ``cls``."""
    data, source = read_config(kind, name_or_path, overrides)
    return validate(cls, data, source)
