"""The pretraining configuration: typed sections with defaults, presets in
``leanbert/presets/pretrain/*.yaml``, and ``--set section.key=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from leanbert.algorithms.token_dropping import TokenDroppingConfig
from leanbert.config import StrictConfig, load_config
from leanbert.train.optim import OptimConfig


class DataSection(StrictConfig):
    batch_size: int = Field(128, ge=1, description="global sequences per optimizer step")
    micro_batch_size: int | None = Field(None, ge=1, description="sequences per process per forward")
    mask_rate: float = Field(0.15, gt=0, lt=1)
    max_predictions: int | None = Field(None, ge=1, description="MLM slots per sequence (default: ceil(rate*len))")
    whole_word_masking: bool = False
    eval_split: str = "validation"


class TrainSection(StrictConfig):
    max_steps: int = Field(1000, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    speedups: bool = True  # leanbert.optimize(model): oneDNN products, cheaper dropout mask (CPU)


class CheckpointSection(StrictConfig):
    every: int = Field(500, ge=1)
    keep_last: int = Field(2, ge=1)


class EvalSection(StrictConfig):
    every: int = Field(500, ge=1)
    batches: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    at_start: bool = True


class LogSection(StrictConfig):
    every: int = Field(10, ge=1)
    tensorboard: bool = True
    progress: bool = True
    # Optional loggers (leanbert.train.callbacks); both work offline by default.
    callbacks: list[Literal["wandb", "mlflow"]] = Field(default_factory=list)
    wandb_project: str = "leanbert"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    mlflow_tracking_uri: str | None = None  # default: a file store in the run directory
    mlflow_experiment: str = "leanbert"


class PretrainConfig(StrictConfig):
    model: dict[str, Any] = Field(default_factory=lambda: {"preset": "bert-small"})
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    log: LogSection = Field(default_factory=LogSection)
    token_dropping: TokenDroppingConfig = Field(default_factory=TokenDroppingConfig)

    @field_validator("model")
    @classmethod
    def _model_has_preset_or_type(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "preset" not in v and "model_type" not in v:
            raise ValueError("the model section needs 'preset' (e.g. bert-small) or a full model config with model_type")
        return v

    @model_validator(mode="after")
    def _check_batches(self) -> PretrainConfig:
        mb = self.data.micro_batch_size
        if mb is not None and self.data.batch_size % mb:
            raise ValueError(
                f"data.batch_size {self.data.batch_size} is not a multiple of data.micro_batch_size {mb}"
            )
        return self


def load_pretrain_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """A pretraining config from a preset name or YAML file, with ``key=value`` overrides. The
    model section is checked against its family's config here, at start (a typo such as
    ``model.hiden_size`` fails now, naming the valid keys), not when the model is built."""
    from leanbert.models import resolve_model_section

    cfg = load_config(PretrainConfig, "pretrain", name_or_path, overrides)
    resolve_model_section(cfg.model, "model")
    return cfg
