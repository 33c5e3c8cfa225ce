"""Checkpoints: safetensors weights + JSON config + tokenizer files, written atomically.

A leanbert checkpoint is a directory::

    config.json          {"leanbert_format": 1, "leanbert_version": ..., "model": {...}, "metadata": {...}}
    model.safetensors    weights (the MLM decoder is tied to the word embeddings, stored once)
    vocab.txt, tokenizer.json, tokenizer_config.json   the tokenizer

``from_pretrained`` also reads transformers ``save_pretrained`` directories of BERT and
MobileBERT (``model.safetensors``, sharded safetensors, or ``pytorch_model.bin`` through
``torch.load(weights_only=True)``): nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import weakref
from pathlib import Path
from typing import Any

import torch

from leanbert import __version__
from leanbert.errors import CheckpointError, ConfigError
from leanbert.io import atomic_directory

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied; ask its owner to make it readable (chmod a+r)") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not UTF-8 (byte {e.start}); the checkpoint is corrupt") from None
    if not text.strip():
        raise CheckpointError(f"{path} is empty; the checkpoint is incomplete: re-save or re-export it")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}); fix or re-export it") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return cfg


def _check_directory(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        old = list(p.parent.glob(f".{p.name}.old-*")) if p.parent.exists() else []
        hint = f" (an interrupted save left {old[0]}; rename it to {p.name} to recover)" if old else ""
        raise CheckpointError(
            f"checkpoint not found: {p}{hint}; give a directory written by leanbert or transformers save_pretrained"
        )
    if not p.is_dir():
        raise CheckpointError(f"{p} is a file; give the checkpoint directory that contains it")
    if not (p / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{p} is not a checkpoint directory (no config.json); give a directory written by "
            "'leanbert export', leanbert.save_pretrained or transformers save_pretrained"
        )
    return p


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All weights of a checkpoint directory, on the CPU, without unpickling anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single = directory / WEIGHTS_NAME
    index = directory / "model.safetensors.index.json"
    files: list[Path]
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            raise CheckpointError(f"{index} is not a valid safetensors index; re-export the checkpoint") from None
        files = [directory / f for f in sorted(set(weight_map.values()))]
    elif (directory / "pytorch_model.bin").is_file():
        path = directory / "pytorch_model.bin"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"{path} could not be read safely ({type(e).__name__}); convert it to safetensors"
            ) from None
        return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    else:
        raise CheckpointError(f"{directory} has no weights: expected {WEIGHTS_NAME}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"weights file missing: {f}; the checkpoint is incomplete")
        if f.stat().st_size == 0:
            raise CheckpointError(f"{f} is empty; the checkpoint is incomplete: re-save or re-export it")
        if not os.access(f, os.R_OK):
            raise CheckpointError(f"{f}: permission denied; ask its owner to make it readable (chmod a+r)")
        try:
            state.update(load_file(str(f), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{f} is truncated or corrupt ({str(e).splitlines()[0][:120]}); re-save or re-download the checkpoint"
            ) from None
    return state


def choose_heads(present: list[str], heads: list[str] | None, new_heads: list[str], source: str) -> list[str]:
    """The heads a loaded model gets: ``heads`` (default: those the checkpoint holds) plus
    ``new_heads``; asking for a head without weights that is not new is an error."""
    chosen = list(present) if heads is None else list(heads)
    for h in chosen:
        if h not in present and h not in new_heads:
            raise CheckpointError(
                f"{source} has no weights for the '{h}' head (it holds {', '.join(present) or 'no heads'}); "
                f"load it without that head, or pass new_heads=['{h}'] to start it from random weights"
            )
    return [*chosen, *[h for h in new_heads if h not in chosen]]


def load_weights_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                  skip_heads: set[str] = frozenset()) -> None:
    """load_state_dict with shape checks that name the first mismatching weight."""
    expected = model.state_dict()
    for key, tensor in state.items():
        if key not in expected:
            raise CheckpointError(f"{source}: unexpected weight '{key}'; the checkpoint does not match its config.json")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: weight '{key}' has shape {list(tensor.shape)} but config.json implies "
                f"{list(expected[key].shape)}; the weights and config.json do not belong together"
            )
    missing = [k for k in expected if k not in state and k.split(".", 1)[0] not in skip_heads]
    if missing:
        raise CheckpointError(
            f"{source}: weight '{missing[0]}' is missing ({len(missing)} missing in all); the checkpoint is incomplete"
        )
    model.load_state_dict(state, strict=False)



def from_pretrained(
    path: str | Path,
    *,
    heads: list[str] | None = None,
    new_heads: list[str] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
):
    """Load a leanbert checkpoint directory or a transformers ``save_pretrained`` directory.

    heads: the heads to keep (default: all heads whose weights the checkpoint holds). Asking for a
        head without weights is an error, unless it is also in ``new_heads``, which starts it from
        random weights on purpose (e.g. a classifier for fine-tuning).
    overrides: config values to change (e.g. ``num_labels=3``, ``hidden_dropout=0.0``).
    """
    from leanbert.hf import is_hf_config

    directory = _check_directory(path)
    cfg = _read_config(directory)
    new_heads = list(new_heads or [])
    if is_hf_config(cfg):
        model = _load_hf(directory, cfg, heads, new_heads, overrides)
    elif "leanbert_format" in cfg:
        model = _load_leanbert(directory, cfg, heads, new_heads, overrides)
    else:
        raise CheckpointError(
            f"{directory / CONFIG_NAME} is neither a leanbert nor a transformers config (no model_type); "
            "is this the right directory?"
        )
    _SOURCES[model] = directory
    if dtype is not None:
        model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


# model -> the directory it was loaded from (its tokenizer files); weak, so nothing is kept
# alive and nothing is attached to the module itself.
_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def source_dir(model: torch.nn.Module) -> Path | None:
    """The checkpoint directory ``model`` was loaded from by :func:`from_pretrained`, if any."""
    return _SOURCES.get(model)


def _load_hf(directory: Path, cfg: dict[str, Any], heads: list[str] | None, new_heads: list[str],
             overrides: dict[str, Any]):
    """A leanbert model from a transformers ``save_pretrained`` directory."""
    from leanbert.hf import adapter_for, config_from_hf_checkpoint, heads_in_hf_state, state_from_hf
    from leanbert.models import load_model_config
    from leanbert.models.model import LeanbertModel

    source = str(directory)
    state = read_state_dict(directory)
    lb_cfg = config_from_hf_checkpoint(cfg, state)
    lb_cfg["heads"] = choose_heads(heads_in_hf_state(list(state)), heads, new_heads, source)
    if "classifier" in new_heads:  # a fresh classifier: its width is the task's, not the checkpoint's
        lb_cfg.pop("num_labels", None)
        lb_cfg.pop("problem_type", None)
    lb_cfg.update(overrides)
    config = load_model_config(lb_cfg, f"{source}/config.json")
    model = LeanbertModel(config)
    lb_state = state_from_hf(adapter_for(config.model_type), config, state, source, skip_heads=set(new_heads))
    load_weights_checked(model, lb_state, source, skip_heads=set(new_heads))
    return model


def _load_leanbert(directory: Path, cfg: dict[str, Any], heads: list[str] | None, new_heads: list[str],
                   overrides: dict[str, Any]):
    from leanbert.models import load_model_config
    from leanbert.models.model import LeanbertModel

    fmt = cfg.get("leanbert_format")
    if fmt != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: checkpoint format {fmt} is not supported by leanbert {__version__} "
            f"(format {FORMAT_VERSION}); upgrade leanbert"
        )
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{directory / CONFIG_NAME}: missing the 'model' section")
    source = str(directory / CONFIG_NAME)
    present = list(model_cfg.get("heads", ["mlm"]))
    data = {**model_cfg, **overrides, "heads": choose_heads(present, heads, new_heads, str(directory))}
    try:
        config = load_model_config(data, source)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    model = LeanbertModel(config)
    state = read_state_dict(directory)
    skip = set(new_heads)
    dropped = {h for h in present if h not in config.heads}
    state = {k: v for k, v in state.items() if k.split(".", 1)[0] not in dropped | skip}
    load_weights_checked(model, state, str(directory), skip_heads=skip)
    return model


def copy_tokenizer_files(src: str | Path | None, dst: Path) -> list[str]:
    from leanbert.data.tokenizer import TOKENIZER_FILES

    if src is None:
        return []
    src = Path(src)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied


def checkpoint_file(name: str) -> bool:
    """Whether ``name`` is a file leanbert writes into a checkpoint or export directory (an
    existing directory holding anything else is not replaced without ``overwrite``)."""
    from leanbert.data.tokenizer import TOKENIZER_FILES

    return name in {CONFIG_NAME, WEIGHTS_NAME, "README.md", *TOKENIZER_FILES}


def save_pretrained(model, path: str | Path, *, tokenizer_dir: str | Path | None = None,
                    metadata: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` as a leanbert checkpoint directory, atomically.

    The tokenizer files are copied from ``tokenizer_dir`` (default: the directory the model was
    loaded from, if any). An existing directory is replaced only when it is a checkpoint (or
    empty), unless ``overwrite``.
    """

    path = Path(path)
    tokenizer_dir = tokenizer_dir if tokenizer_dir is not None else source_dir(model)
    with atomic_directory(path, owned=checkpoint_file, overwrite=overwrite) as tmp:
        write_checkpoint_files(tmp, model, tokenizer_dir=tokenizer_dir, metadata=metadata)
    return path


def write_checkpoint_files(directory: Path, model, *, tokenizer_dir: str | Path | None,
                           metadata: dict[str, Any] | None = None) -> None:
    """Weights, tokenizer files and config.json (last) of a leanbert checkpoint into ``directory``
    (the caller makes the directory atomic; training checkpoints add their own files)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "leanbert_version": __version__})
    copy_tokenizer_files(tokenizer_dir, directory)
    cfg = {
        "leanbert_format": FORMAT_VERSION,
        "leanbert_version": __version__,
        "model": model.config.model_dump(mode="json"),
        "metadata": metadata or {},
    }
    (directory / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata`` section of a leanbert checkpoint (empty for transformers checkpoints)."""
    cfg = _read_config(_check_directory(path))
    meta = cfg.get("metadata", {})
    return meta if isinstance(meta, dict) else {}


def export_to_transformers(model, path: str | Path, *, tokenizer_dir: str | Path | None = None,
                           overwrite: bool = False, metadata: dict[str, Any] | None = None) -> Path:
    """Write a transformers ``save_pretrained`` directory (config.json + model.safetensors +
    tokenizer files + a model card README.md) that ``transformers.AutoModel*`` classes and
    ``transformers.pipeline`` load. ``model`` may be a path. ``metadata`` (default: that of the
    checkpoint the model was loaded from) gives the classifier's label names (``id2label``) and
    the model card's data, recipe and metrics. An existing directory is replaced only when it is
    such an export (or empty), unless ``overwrite``."""
    from safetensors.torch import save_file

    from leanbert.hf import model_card, state_to_hf

    if isinstance(model, (str, Path)):
        model = from_pretrained(model)
    path = Path(path)
    source = source_dir(model)
    tokenizer_dir = tokenizer_dir if tokenizer_dir is not None else source
    if metadata is None:
        metadata = _recorded_metadata(source)
    hf_cfg, state = state_to_hf(model, labels=metadata.get("labels"))
    with atomic_directory(path, owned=checkpoint_file, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        copied = copy_tokenizer_files(tokenizer_dir, tmp)
        if copied and "tokenizer_config.json" not in copied:
            tok_cfg = {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                       "model_max_length": model.config.max_position_embeddings}
            (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(model, hf_cfg, metadata, str(source) if source else None, path.name),
                                       encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_cfg, indent=2) + "\n", encoding="utf-8")
    return path


def _recorded_metadata(source: Path | None) -> dict[str, Any]:
    """What a source checkpoint records: a leanbert checkpoint's metadata; for a transformers
    directory, its classifier's label names when they are not the LABEL_i defaults."""
    if source is None:
        return {}
    cfg = _read_config(source)
    if "leanbert_format" in cfg:
        meta = cfg.get("metadata", {})
        return meta if isinstance(meta, dict) else {}
    id2label = cfg.get("id2label")
    if isinstance(id2label, dict):
        try:
            names = [str(id2label[k]) for k in sorted(id2label, key=int)]
        except (TypeError, ValueError):
            return {}
        if names != [f"LABEL_{i}" for i in range(len(names))]:
            return {"labels": names}
    return {}
