"""The one training engine: what every leanbert training job shares.

Pretraining (:mod:`leanbert.train.pretrain`), fine-tuning (:mod:`leanbert.tasks.finetune`) and
knowledge transfer are *objectives* on this engine, not loops of their own. The engine owns:

- the device, precision (fp32; bf16 autocast; fp16 autocast with a gradient scaler on CUDA)
  and, for the duration of a run, torch's thread count and deterministic mode (both restored
  when the run returns);
- ``torchrun`` data parallelism (DDP: gloo on CPU, NCCL on CUDA) and gradient accumulation;
- the optimiser and learning-rate schedule (:mod:`leanbert.train.optim`, one weight-decay
  rule), gradient clipping, and the stop on a NaN / infinite loss (exit 1, as bad data found
  mid-run; :class:`leanbert.errors.RunFailed`);
- activation checkpointing of the encoder layers (``train.activation_checkpointing``, applied
  to the model by :func:`leanbert.models.base.set_activation_checkpointing`);
- atomic training checkpoints with everything needed for a bitwise resume (weights,
  optimiser, RNG states, data position, algorithm state, the job's own state), resume on
  rerun, and a checkpoint on SIGINT / SIGTERM;
- the progress bar, ``metrics.jsonl``, TensorBoard and user callbacks
  (:mod:`leanbert.train.callbacks`: Weights & Biases and MLflow ship as optional ones).

A job plugs in three things:

**An objective** (:class:`Objective`): ``terms``, the names of its loss terms;
``counts(batch)``, each term's normaliser computed from the batch alone (MLM: the number of
prediction slots; a classifier: the number of examples); ``objective(model, batch, router)``,
returning a dict with the *summed* loss of each term under ``"loss.<term>"`` plus whatever the
algorithms need; ``log_stats(batch, out)``, statistics for logged steps; ``flops(model,
batch, rows)``, the analytic forward FLOPs of a micro-batch. The engine divides each term's
sum by its *global* count (all micro-batches, all processes, all-reduced before the backward
pass), so one process, accumulation and N processes compute the same gradient.

**Algorithms** (:class:`Algorithm`, e.g. token dropping): ``router(batch, step)`` for the
layers, ``after_backward(out)`` per micro-batch, ``after_step()`` per optimiser step,
``state_dict()`` / ``load_state_dict()`` for checkpoints, and ``layer_rows(seq_len, step)``
for the FLOP count.

**A data stream and an evaluation**: ``batches(start_step, micro_batch_size, rank,
world_size)`` yields this rank's micro-batches from a global step on (a pure function of the
step, so a resume continues the same stream), and ``evaluate(model, step)`` returns metrics
(main process only).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import torch

from leanbert.errors import BadDataMidRun, ConfigError, DataError, LeanbertError, RunFailed
from leanbert.io import check_output_dir, remove_temporaries
from leanbert.train.callbacks import Callback, RunInfo
from leanbert.train.config import CheckpointSection, LogSection, TrainSection
from leanbert.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from leanbert.train.metrics import MetricsLogger, measure_matmul_peak
from leanbert.train.optim import OptimConfig, build_optimizer, lr_at, set_lr
from leanbert.train.state import (
    TrainState,
    list_checkpoints,
    load_training_checkpoint,
    read_saved_config,
    save_training_checkpoint,
    set_rng_state,
)

Batch = dict[str, torch.Tensor]


class TrainingDiverged(RunFailed):
    """The loss or the gradients became NaN or infinite (exit 1)."""


class Interrupted(LeanbertError):
    """SIGINT / SIGTERM stopped the run after it saved a checkpoint (exit 130; rerun to resume)."""

    exit_code = 130


class Objective(Protocol):
    """What a training job computes (see the module docstring)."""

    terms: tuple[str, ...]

    def counts(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def __call__(self, model: torch.nn.Module, batch: Batch, router: Any = None) -> dict[str, torch.Tensor]: ...

    def log_stats(self, batch: Batch, out: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, str]]: ...

    def flops(self, model: torch.nn.Module, batch: Batch, rows: Sequence[tuple[int, int]] | None) -> int: ...


class Algorithm(Protocol):
    """A training method that plugs into the engine (token dropping)."""

    def router(self, batch: Batch, step: int | None, training: bool = True) -> Any: ...

    def after_backward(self, output: Any) -> None: ...

    def after_step(self) -> None: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None: ...

    def layer_rows(self, seq_len: int, step: int | None = None) -> list[tuple[int, int]] | None: ...


@dataclass
class FitResult:
    state: TrainState
    eval_before: dict[str, float] | None
    eval_after: dict[str, float] | None
    interrupted: bool = False
    job_state: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0  # time in training steps in this call (no evaluation, no checkpoints)
    train_samples: int = 0  # samples trained on in this call


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision name (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _StopFlag:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint at the end of the step and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _ObjectiveModule(torch.nn.Module):
    """The objective applied to the model, as a module returning a dict of tensors: DDP's hooks
    (and torch.compile) follow dicts, not arbitrary output objects."""

    def __init__(self, model: torch.nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch, router: Any = None) -> dict[str, torch.Tensor]:
        return self.objective(self.model, batch, router)


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


class Engine:
    """One training run's environment: ``with Engine(...) as engine: engine.fit(...)``.

    Entering initialises torchrun's process group (if launched by torchrun), picks the
    device and applies ``train.threads`` / ``train.deterministic``; leaving restores torch's
    previous settings and shuts the process group down.
    """

    def __init__(self, *, job: str, output_dir: str | Path, train: TrainSection, optim: OptimConfig,
                 checkpoint: CheckpointSection, log: LogSection, config: dict[str, Any],
                 resume_keys: Sequence[str] = (), callbacks: Sequence[Callback] = ()) -> None:
        self.job = job
        self.output_dir = Path(output_dir)
        self.train_cfg, self.optim_cfg, self.ckpt_cfg, self.log_cfg = train, optim, checkpoint, log
        self.config = config
        self.resume_keys = tuple(resume_keys)
        self.user_callbacks = list(callbacks)
        self.dist = DistInfo()
        self.device = torch.device("cpu")
        self._restore: list[Callable[[], None]] = []

    # Environment ---------------------------------------------------------------------

    def __enter__(self) -> Engine:
        check_output_dir(self.output_dir, f"{self.job} output")
        cfg = self.train_cfg
        cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        if cfg.precision == "fp16" and not cuda:
            raise ConfigError("train.precision fp16 needs CUDA; use bf16 on the CPU")
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA device is available; use train.device=cpu")
        self.dist = init_distributed("cuda" if cuda else "cpu")
        self._restore.append(shutdown)
        self.device = torch.device("cuda", self.dist.local_rank) if cuda else torch.device("cpu")
        if cfg.threads:
            before = torch.get_num_threads()
            torch.set_num_threads(cfg.threads)
            self._restore.append(lambda: torch.set_num_threads(before))
        if cfg.deterministic:
            was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
            torch.use_deterministic_algorithms(True)
            self._restore.append(lambda: torch.use_deterministic_algorithms(was, warn_only=warn))
        return self

    def __exit__(self, *exc: object) -> None:
        while self._restore:
            self._restore.pop()()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def micro_batching(self, global_batch: int, micro_batch: int | None) -> tuple[int, int]:
        """(micro-batch size, accumulation steps) for a global batch on this many processes."""
        world = self.dist.world_size
        micro = micro_batch or max(1, global_batch // world)
        if global_batch % (micro * world):
            raise ConfigError(
                f"the batch size {global_batch} must be a multiple of the micro-batch size x processes "
                f"({micro} x {world}); change the micro-batch size or the number of processes"
            )
        return micro, global_batch // (micro * world)

    # The run ----------------------------------------------------------------------------

    def fit(
        self,
        model: torch.nn.Module,
        objective: Objective,
        batches: Callable[[int, int, int, int], Iterator[Batch]],
        *,
        total_steps: int,
        global_batch: int,
        micro_batch: int | None = None,
        algorithms: Sequence[Algorithm] = (),
        evaluate: Callable[[torch.nn.Module, int], dict[str, float] | None] | None = None,
        eval_every: int | None = None,
        eval_at_start: bool = False,
        job_state: dict[str, Any] | None = None,
        tokenizer_dir: Path | None = None,
        stop_after: int | None = None,
        group_of: Callable[[str], str] | None = None,
        schedule: Callable[[int], tuple[float, dict[str, float]]] | None = None,
        describe: Callable[[int], str] | None = None,
    ) -> FitResult:
        """Train ``model`` (already on :attr:`device`) for ``total_steps`` optimiser steps, or
        resume the run in ``output_dir``. ``job_state`` (JSON data, e.g. fine-tuning's history
        and best epoch) is saved with every checkpoint and restored in place on resume.
        ``stop_after`` ends the call after that many steps of this invocation, as if it had been
        killed right after a checkpoint (for tests). A job with a schedule of its own (knowledge
        transfer's stages) passes ``group_of(parameter name) -> group name`` for the optimiser's
        groups and ``schedule(step) -> (lr, {group name: multiplier})``; ``describe(step)`` labels
        the progress bar ("layer 3 of 24")."""
        dist = self.dist
        job_state = job_state if job_state is not None else {}
        micro, accum = self.micro_batching(global_batch, micro_batch)
        if self.train_cfg.activation_checkpointing:
            from leanbert.models.base import set_activation_checkpointing

            if not set_activation_checkpointing(model):
                raise ConfigError("train.activation_checkpointing needs a leanbert encoder in the model; "
                                  "set train.activation_checkpointing=false")
        optimizer = build_optimizer(model, self.optim_cfg, group_of)
        state = TrainState()
        if dist.is_main:  # what a run killed while writing a checkpoint left
            remove_temporaries(self.output_dir / "checkpoints")
            remove_temporaries(self.output_dir / "checkpoints", ".*.old-*")
        barrier()
        existing = list_checkpoints(self.output_dir)
        if existing:
            self._check_resume_compatible(read_saved_config(existing[-1]))
            state, _, extra = load_training_checkpoint(existing[-1], model, optimizer)
            set_rng_state(extra)
            for algorithm in algorithms:
                algorithm.load_state_dict(extra)
            job_state.clear()
            job_state.update(state.extra.get("job", {}))
        stream = batches(state.step, micro, dist.rank, dist.world_size)
        if not existing:
            # Read the first step's data before anything is written: bad data (a truncated
            # shard, say) must not leave a directory that looks like a run.
            stream = _peek(stream, accum)
            if dist.is_main:
                import yaml

                self.output_dir.mkdir(parents=True, exist_ok=True)
                (self.output_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False),
                                                             encoding="utf-8")
        return self._loop(model, objective, stream, optimizer, state, algorithms, evaluate, eval_every,
                          eval_at_start, job_state, tokenizer_dir, stop_after, total_steps, micro, accum,
                          schedule, describe, resumed=bool(existing))

    def _check_resume_compatible(self, saved: dict[str, Any]) -> None:
        for key in self.resume_keys:
            a, b = _get(saved, key), _get(self.config, key)
            if a != b:
                raise ConfigError(
                    f"{self.output_dir} holds a run with a different {key} ({json.dumps(a)} there, "
                    f"{json.dumps(b)} now); resume with the same config or choose a new --output"
                )

    def _save(self, model, optimizer, state: TrainState, algorithms, job_state, tokenizer_dir,
              callbacks: Sequence[Callback]) -> None:
        if self.dist.is_main:
            extra: dict[str, torch.Tensor] = {}
            for algorithm in algorithms:
                extra.update(algorithm.state_dict())
            state.extra["job"] = job_state
            path = save_training_checkpoint(self.output_dir, model, optimizer, state, self.config,
                                            tokenizer_dir=tokenizer_dir, extra_tensors=extra,
                                            keep_last=self.ckpt_cfg.keep_last)
            for cb in callbacks:
                cb.on_checkpoint(path, state.step)
        barrier()

    def _callbacks(self) -> list[Callback]:
        from leanbert.train.callbacks import make_callbacks

        log = self.log_cfg
        made = make_callbacks(log.callbacks, self.output_dir, wandb_project=log.wandb_project,
                              wandb_mode=log.wandb_mode, mlflow_tracking_uri=log.mlflow_tracking_uri,
                              mlflow_experiment=log.mlflow_experiment)
        return [*made, *self.user_callbacks]

    def _loop(self, model, objective: Objective, stream, optimizer, state: TrainState, algorithms, evaluate,
              eval_every, eval_at_start, job_state, tokenizer_dir, stop_after, total: int, micro: int, accum: int,
              schedule, describe, resumed: bool) -> FitResult:
        from tqdm import tqdm

        dist, device, cfg = self.dist, self.device, self.train_cfg
        world = dist.world_size
        raw_model = model
        step_module: torch.nn.Module = _ObjectiveModule(raw_model, objective)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # static_graph: the set of parameters a job uses never changes between steps.
            step_module = DDP(step_module, device_ids=[device.index] if device.type == "cuda" else None,
                              static_graph=True)
        ddp_module = step_module
        if cfg.compile:
            step_module = torch.compile(step_module)
        scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        callbacks = self._callbacks() if dist.is_main else []
        logger = MetricsLogger(self.output_dir, enabled=dist.is_main, tensorboard=self.log_cfg.tensorboard,
                               resume_step=state.step)

        def log(record: dict[str, Any]) -> None:
            logger.log(record)
            for cb in callbacks:
                cb.on_log(record)

        info = RunInfo(self.output_dir, self.job, self.config, state.step, total, resumed)
        for cb in callbacks:
            cb.on_start(info)
        status = "failed"
        try:
            peak_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
            peak = measure_matmul_peak(device, peak_dtype, seconds=0.3)
            eval_before = eval_after = None
            if evaluate is not None and eval_at_start and not resumed and dist.is_main:
                eval_before = evaluate(raw_model, 0)
                if eval_before is not None:
                    log({"kind": "eval", "step": 0, **eval_before})
            barrier()
            bar = tqdm(total=total, initial=state.step, disable=not (dist.is_main and self.log_cfg.progress),
                       desc=self.job, unit="step", dynamic_ncols=True)
            window = {"tokens": 0, "time": 0.0, "flops": 0.0, "samples": 0}
            totals = {"seconds": 0.0, "samples": 0}
            steps_this_call = 0
            raw_model.train()
            with _StopFlag() as stop:
                while state.step < total:
                    t0 = time.perf_counter()
                    try:
                        micro_batches = [{k: v.to(device, non_blocking=True) for k, v in next(stream).items()}
                                         for _ in range(accum)]
                    except DataError as e:  # read well at the start, bad now: the run failed (exit 1)
                        raise BadDataMidRun(f"bad data at step {state.step + 1}: {e} ({self._last_good()})") from None
                    logging_step = (state.step + 1) % self.log_cfg.every == 0 or state.step + 1 == total
                    # Global normaliser of each loss term (device tensors, no host sync before the forwards).
                    per_micro = [objective.counts(b) for b in micro_batches]
                    counts = torch.stack([torch.stack([c[t].float() for t in objective.terms]) for c in per_micro]).sum(0)
                    all_reduce_sum(counts)
                    scale = world / counts.clamp(min=1)
                    if schedule is None:
                        lr = lr_at(state.step, self.optim_cfg, total)
                        set_lr(optimizer, lr)
                    else:
                        lr, scales = schedule(state.step)
                        for group in optimizer.param_groups:
                            group["lr"] = lr * scales.get(group.get("name", "all"), 1.0)
                    if describe is not None:
                        bar.set_description(describe(state.step), refresh=False)
                    sums = torch.zeros(len(objective.terms), device=device)
                    extra_names: list[str] = []
                    extra_sums: list[torch.Tensor] = []
                    extra_terms: list[str] = []
                    for i, batch in enumerate(micro_batches):
                        sync = contextlib.nullcontext()
                        if dist.enabled and i < accum - 1:
                            sync = ddp_module.no_sync()
                        router = _first(a.router(batch, state.step) for a in algorithms)
                        with sync:
                            with autocast(device, cfg.precision):
                                out = step_module(batch, router)
                            term_sums = torch.stack([out[f"loss.{t}"].float() for t in objective.terms])
                            loss = (term_sums * scale).sum()
                            if scaler is not None:
                                scaler.scale(loss).backward()
                            else:
                                loss.backward()
                        sums += term_sums.detach()
                        if logging_step:
                            with torch.no_grad():
                                stats = objective.log_stats(batch, out)
                            for j, (name, (value, term)) in enumerate(stats.items()):
                                if i == 0:
                                    extra_names.append(name)
                                    extra_terms.append(term)
                                    extra_sums.append(value.detach().float())
                                else:
                                    extra_sums[j] = extra_sums[j] + value.detach().float()
                        view = SimpleNamespace(**out)
                        for algorithm in algorithms:
                            algorithm.after_backward(view)
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    clip = self.optim_cfg.clip_grad_norm
                    params = [p for p in raw_model.parameters() if p.grad is not None]
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
                    tokens = torch.stack([self._tokens(b) for b in micro_batches]).sum().float()
                    samples = torch.tensor(float(sum(b["input_ids"].shape[0] for b in micro_batches)), device=device)
                    reduced = torch.cat([sums, torch.stack(extra_sums) if extra_sums else sums[:0],
                                         torch.stack([tokens, samples])])
                    all_reduce_sum(reduced)
                    n_terms = len(objective.terms)
                    term_losses = (reduced[:n_terms] / counts.clamp(min=1)).tolist()
                    total_loss = float(sum(term_losses))
                    grad_ok = math.isfinite(float(grad_norm)) or scaler is not None  # fp16: the scaler skips inf steps
                    if not (math.isfinite(total_loss) and grad_ok):
                        where = self._last_good()
                        raise TrainingDiverged(
                            f"the loss became {total_loss} (gradient norm {float(grad_norm)}) at step {state.step + 1}; "
                            f"stopped without saving this step; {where}; lower the learning rate, raise the "
                            "warm-up, or use fp32"
                        )
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    for algorithm in algorithms:
                        algorithm.after_step()
                    # Bookkeeping
                    state.step += 1
                    steps_this_call += 1
                    step_tokens, step_samples = int(reduced[-2]), int(reduced[-1])
                    state.samples_seen += step_samples
                    state.tokens_seen += step_tokens
                    step_flops = world * sum(
                        objective.flops(raw_model, b, _first(a.layer_rows(b["input_ids"].shape[1], state.step - 1)
                                                             for a in algorithms))
                        for b in micro_batches)
                    step_seconds = time.perf_counter() - t0
                    window["tokens"] += step_tokens
                    window["samples"] += step_samples
                    window["time"] += step_seconds
                    totals["seconds"] += step_seconds
                    totals["samples"] += step_samples
                    window["flops"] += step_flops
                    bar.update(1)
                    if logging_step:
                        seconds = max(window["time"], 1e-9)
                        rec: dict[str, Any] = {"kind": "train", "step": state.step, "loss": total_loss}
                        for name, value in zip(objective.terms, term_losses, strict=True):
                            rec[f"{name}_loss"] = value
                        extra_values = reduced[n_terms:n_terms + len(extra_names)].tolist()
                        for name, value, term in zip(extra_names, extra_values, extra_terms, strict=True):
                            rec[name] = value / max(float(counts[objective.terms.index(term)]), 1.0)
                        rec.update({
                            "lr": lr, "grad_norm": float(grad_norm),
                            "tokens_per_s": window["tokens"] / seconds, "samples_per_s": window["samples"] / seconds,
                            "flops_per_step": step_flops,
                            "mfu": window["flops"] / seconds / world / peak if peak else None,
                            "samples_seen": state.samples_seen, "tokens_seen": state.tokens_seen,
                        })
                        log(rec)
                        bar.set_postfix(loss=f"{total_loss:.3f}", tok_s=f"{rec['tokens_per_s']:,.0f}",
                                        mfu=f"{(rec['mfu'] or 0):.1%}")
                        window = {"tokens": 0, "time": 0.0, "flops": 0.0, "samples": 0}
                    if evaluate is not None and (state.step == total or (eval_every and state.step % eval_every == 0)):
                        if dist.is_main:
                            ev = evaluate(raw_model, state.step)
                            raw_model.train()
                            if ev is not None:
                                log({"kind": "eval", "step": state.step, **ev})
                                if state.step == total:
                                    eval_after = ev
                                else:
                                    bar.write(f"step {state.step}: " + ", ".join(
                                        f"{k} {v:.4g}" for k, v in ev.items() if isinstance(v, float)))
                        barrier()
                    want_stop = stop.signum is not None or (stop_after is not None and steps_this_call >= stop_after)
                    if state.step % self.ckpt_cfg.every == 0 or state.step == total or want_stop:
                        self._save(raw_model, optimizer, state, algorithms, job_state, tokenizer_dir, callbacks)
                    if want_stop:
                        bar.close()
                        if stop.signum is not None:
                            name = signal.Signals(stop.signum).name
                            print(f"{name}: saved checkpoint at step {state.step} in {self.output_dir}/checkpoints; "
                                  "run the same command to resume", flush=True)
                            status = "interrupted"
                            raise Interrupted(f"stopped by {name} at step {state.step}; checkpoint saved, rerun to resume")
                        status = "interrupted"
                        return FitResult(state, eval_before, None, True, job_state, totals["seconds"],
                                         int(totals["samples"]))
            bar.close()  # the last step (state.step == total) always saved a checkpoint above
            status = "finished"
            return FitResult(state, eval_before, eval_after, False, job_state, totals["seconds"], int(totals["samples"]))
        finally:
            logger.close()
            for cb in callbacks:
                cb.on_end(status)

    def _last_good(self) -> str:
        last = list_checkpoints(self.output_dir)
        return f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"

    @staticmethod
    def _tokens(batch: Batch) -> torch.Tensor:
        mask = batch.get("attention_mask")
        if mask is not None:
            return mask.sum()
        return torch.tensor(batch["input_ids"].numel(), device=batch["input_ids"].device)


def _first(values: Iterable[Any]) -> Any:
    """The first value that is not None (lazily: later algorithms are not asked), or None."""
    return next((v for v in values if v is not None), None)


def _peek(stream: Iterator[Batch], n: int) -> Iterator[Batch]:
    """``stream`` with its first ``n`` items already read (errors surface now)."""
    import itertools

    first = list(itertools.islice(stream, n))
    return itertools.chain(first, stream)
