"""Model families (BERT, MobileBERT) behind one registry, and ``build_model``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from leanbert.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from leanbert.models.base import ModelFamily
    from leanbert.models.model import LeanbertModel

# model_type -> module defining FAMILY (imported on first use to keep `import leanbert` light)
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
    try:
        module = importlib.import_module(_FAMILY_MODULES[model_type])
    except ModuleNotFoundError as e:
        raise ConfigError(f"{source}: model_type '{model_type}' is not available in this version of leanbert") from e
    return module.FAMILY


def config_class(model_type: str, source: str = "model config") -> type:
    return family(model_type, source).config_cls


def build_model(config: Any, **overrides: Any) -> LeanbertModel:
    """A freshly initialised model from a config object, a mapping, or a preset name."""
    from leanbert.config import load_model_config, model_preset
    from leanbert.models.model import LeanbertModel

    if isinstance(config, str):
        config = model_preset(config)
    elif isinstance(config, dict):
        config = load_model_config(config)
    if overrides:
        config = load_model_config({**config.model_dump(), **overrides})
    return LeanbertModel(config)
