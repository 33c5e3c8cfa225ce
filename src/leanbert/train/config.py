"""The pretraining configuration: typed sections with defaults, presets in
``leanbert/presets/pretrain/*.yaml``, and ``--set section.key=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from leanbert.algorithms.token_dropping import TokenDroppingConfig
from leanbert.config import StrictConfig
from leanbert.errors import ConfigError
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
    # Recompute each encoder layer's activations in the backward pass instead of keeping them
    # (models.base.set_activation_checkpointing): about half the activation memory for about a
    # quarter more step time (BERT-base, 2 x 512, README).
    activation_checkpointing: bool = False


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
    # The checkpoint (leanbert or transformers save_pretrained directory) whose weights the run
    # starts from (continued pretraining); the model section then comes from that checkpoint.
    init: str | None = None
    model: dict[str, Any] = Field(default_factory=lambda: {"preset": "bert-small"})
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    log: LogSection = Field(default_factory=LogSection)
    token_dropping: TokenDroppingConfig = Field(default_factory=TokenDroppingConfig)

    @model_validator(mode="after")
    def _model_has_preset_or_type(self) -> PretrainConfig:
        if self.init is None and "preset" not in self.model and "model_type" not in self.model:
            raise ValueError("the model section needs 'preset' (e.g. bert-small) or a full model config with "
                             "model_type, or start from a checkpoint with --init DIR")
        return self

    @model_validator(mode="after")
    def _check_batches(self) -> PretrainConfig:
        mb = self.data.micro_batch_size
        if mb is not None and self.data.batch_size % mb:
            raise ValueError(
                f"data.batch_size {self.data.batch_size} is not a multiple of data.micro_batch_size {mb}"
            )
        return self


def load_pretrain_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                         init: str | Path | None = None) -> PretrainConfig:
    """A pretraining config from a preset name or YAML file, with ``key=value`` overrides. The
    model section is checked against its family's config here, at start (a typo such as
    ``model.hiden_size`` fails now, naming the valid keys), not when the model is built.

    ``init`` (or an ``init`` key in the file or the overrides): continued pretraining from that
    checkpoint. The model section of the file or preset is then replaced by the ``--set
    model.KEY=VALUE`` overrides alone; they are checked against the checkpoint's config when
    the run starts (:func:`leanbert.train.pretrain.init_model`)."""
    from leanbert.config import apply_overrides, parse_override, read_config, validate
    from leanbert.models import resolve_model_section

    data, source = read_config("pretrain", name_or_path, overrides)
    if init is not None:
        data["init"] = str(init)
    if data.get("init") is not None:
        model_sets = [o for o in overrides if parse_override(o)[0][0] == "model"]
        data["model"] = apply_overrides({}, model_sets).get("model", {})
        if not isinstance(data["model"], dict):
            raise ConfigError(f"{source}: --set model=... cannot replace the model section; "
                              "set single keys (model.KEY=VALUE)")
    cfg = validate(PretrainConfig, data, source)
    if cfg.init is None:
        resolve_model_section(cfg.model, "model")
    return cfg
