"""Training checkpoints: everything needed to resume a run exactly, written atomically.

``OUTPUT/checkpoints/step-00000100/``::

    config.json, model.safetensors, tokenizer files   a plain leanbert checkpoint (loads anywhere)
    optimizer.safetensors                              optimiser state tensors ("<param index>.<name>")
    extra.safetensors                                  RNG states and algorithm state (token scores)
    trainer_state.json                                 step, data position, optimiser groups, config

The directory is built under a temporary name and renamed into place when complete, so a
kill at any moment leaves either the previous checkpoint or the new one, never a partial one.
Only safetensors and JSON: nothing is unpickled on resume.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from leanbert import __version__
from leanbert.checkpoint import load_weights_checked, read_state_dict, write_checkpoint_files
from leanbert.errors import CheckpointError
from leanbert.io import atomic_directory

STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # global training samples consumed (the data position)
    tokens_seen: int = 0
    best_eval_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{idx}.{name}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        idx, _, name = key.partition(".")
        state.setdefault(int(idx), {})[name] = t
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def save_training_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
    *,
    tokenizer_dir: Path | None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically and keep only the last ``keep_last``."""
    ckpt_root = directory / "checkpoints"
    target = ckpt_root / f"step-{state.step:08d}"
    opt_tensors, groups = _optimizer_to_tensors(optimizer)
    extra = {**rng_state(), **(extra_tensors or {})}
    with atomic_directory(target) as tmp:
        write_checkpoint_files(tmp, model, tokenizer_dir=tokenizer_dir, metadata={"step": state.step})
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(tmp / "extra.safetensors"))
        trainer = {"state": asdict(state), "optimizer_param_groups": groups, "config": config,
                   "leanbert_version": __version__}
        (tmp / "trainer_state.json").write_text(json.dumps(trainer, indent=2) + "\n", encoding="utf-8")
    for old in list_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete training checkpoints of a run, oldest first."""
    root = Path(directory) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def read_saved_config(path: Path) -> dict[str, Any]:
    """The pretraining config a checkpoint was written with (to check a resume is compatible)."""
    try:
        return json.loads((path / "trainer_state.json").read_text(encoding="utf-8")).get("config", {})
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{path}/trainer_state.json is unreadable ({e}); delete this checkpoint to resume from the previous one") from None


def load_training_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[TrainState, dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model and optimiser in place; return (state, saved config, extra tensors)."""
    try:
        trainer = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        state = TrainState(**trainer["state"])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}/trainer_state.json is unreadable ({e}); delete this checkpoint to resume from the previous one") from None
    load_weights_checked(model, read_state_dict(path), str(path))
    try:
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
        extra = load_file(str(path / "extra.safetensors"))
    except Exception as e:
        raise CheckpointError(f"{path}: optimizer or extra state is corrupt ({e}); delete this checkpoint to resume from the previous one") from None
    try:
        optimizer.load_state_dict(_optimizer_from_tensors(opt_tensors, trainer["optimizer_param_groups"]))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: optimizer state does not match this model/optimizer ({e}); "
                              "resume with the same config or start a new output directory") from None
    return state, trainer.get("config", {}), extra
