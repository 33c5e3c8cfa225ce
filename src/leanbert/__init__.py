"""leanbert: train BERT-style encoders for less compute and ship small, fast ones.

The public API is imported lazily so that ``import leanbert`` is cheap and has no side
effects (no torch import until a model is needed).

    >>> import leanbert
    >>> model = leanbert.from_pretrained("path/to/checkpoint")   # leanbert or transformers dir
    >>> leanbert.save_pretrained(model, "out/", tokenizer_dir="path/to/checkpoint")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "from_pretrained": "leanbert.checkpoint",
    "save_pretrained": "leanbert.checkpoint",
    "export_to_transformers": "leanbert.checkpoint",
    "build_model": "leanbert.models",
    "load_model_config": "leanbert.models",
    "model_preset": "leanbert.models",
    "list_model_presets": "leanbert.models",
    "BertConfig": "leanbert.models.bert",
    "MobileBertConfig": "leanbert.models.mobilebert",
    "LeanbertModel": "leanbert.models.model",
    "pretrain": "leanbert.train.pretrain",
    "load_pretrain_config": "leanbert.train.config",
    "finetune": "leanbert.tasks.finetune",
    "LeanbertError": "leanbert.errors",
    "optimize": "leanbert.speedups",
    "restore": "leanbert.speedups",
    "plain_modules": "leanbert.speedups",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'leanbert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
