"""Model families (BERT, MobileBERT) behind one registry, their presets, and ``build_model``.

The registry (:mod:`leanbert.models.registry`) maps ``model_type`` to the module that defines
the family (its config class, encoder, MLM head and per-layer FLOP count, in one ``FAMILY``
entry); the model presets are YAML files in ``leanbert/presets/models/``. Family modules are
imported on first use, so that ``import leanbert`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from leanbert.models.registry import (
    config_class,
    family,
    list_model_presets,
    load_model_config,
    model_preset,
    model_types,
    resolve_model_section,
)

if TYPE_CHECKING:
    from leanbert.models.model import LeanbertModel

__all__ = ["build_model", "config_class", "family", "list_model_presets", "load_model_config", "model_preset",
           "model_types", "resolve_model_section"]


def build_model(config: Any, **overrides: Any) -> LeanbertModel:
    """A freshly initialised model from a config object, a mapping, or a preset name."""
    from leanbert.models.model import LeanbertModel

    if isinstance(config, str):
        config = model_preset(config)
    elif isinstance(config, Mapping):
        config = load_model_config(config)
    if overrides:
        config = load_model_config({**config.model_dump(), **overrides})
    return LeanbertModel(config)
