"""The registry of model families (``model_type`` -> the module defining its ``FAMILY``) and
the model presets (``leanbert/presets/models/*.yaml``): loading and validating model configs."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanbert.config import list_presets, read_config, validate
from leanbert.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from leanbert.models.base import ModelFamily

# model_type -> module defining FAMILY
_FAMILY_MODULES = {
    "bert": "leanbert.models.bert",
    "mobilebert": "leanbert.models.mobilebert",
}


def model_types() -> list[str]:
    return sorted(_FAMILY_MODULES)


def family(model_type: str, source: str = "model config") -> ModelFamily:
    if model_type not in _FAMILY_MODULES:
        raise ConfigError(
            f"{source}: unknown model_type '{model_type}'{did_you_mean(model_type, _FAMILY_MODULES)}; "
            f"choose one of: {', '.join(model_types())}"
        )
    return importlib.import_module(_FAMILY_MODULES[model_type]).FAMILY


def config_class(model_type: str, source: str = "model config") -> type:
    return family(model_type, source).config_cls


def list_model_presets() -> list[str]:
    return list_presets("models")


def load_model_config(data: Mapping[str, Any], source: str = "model config", prefix: str = "") -> Any:
    """Validate a model config mapping, dispatching on its ``model_type`` (default ``bert``)."""
    model_type = data.get("model_type", "bert") if isinstance(data, Mapping) else "bert"
    return validate(config_class(str(model_type), source), data, source, prefix)


def model_preset(name_or_path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A model config from a preset name (``bert-base``) or a YAML file, with overrides."""
    data, source = read_config("models", name_or_path, overrides)
    return load_model_config(data, source)


def resolve_model_section(section: Mapping[str, Any], source: str = "model", **fixed: Any) -> Any:
    """A model config from a run's ``model`` section: ``preset`` (a name or a YAML file) plus
    any keys that override it, plus ``fixed`` values the run imposes (vocabulary size, heads).
    Unknown keys fail with the keys of the family's config (``model.hiden_size``: did you
    mean hidden_size)."""
    data = dict(section)
    preset = data.pop("preset", None)
    base = read_config("models", str(preset))[0] if preset is not None else {}
    merged = {**base, **data, **{k: v for k, v in fixed.items() if v is not None}}
    where = f"{source} section (preset {preset})" if preset else f"{source} section"
    return load_model_config(merged, where, prefix=f"{source}.")
