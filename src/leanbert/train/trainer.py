"""MLM pretraining (plus NSP / SOP when the data has sentence pairs): the loop that ties the
data, model, algorithm (token dropping), optimiser, checkpoints and metrics together.

Exactness: the loss of a step is the sum of the per-token MLM losses over the *global* batch
divided by the global number of predictions (all-reduced before the backward pass), so one
process, gradient accumulation and N data-parallel processes compute the same gradient. Data
order and masking depend only on the global sample index and the seed, so resuming (with any
number of processes, at the same global batch) continues the same stream. RNG states,
optimiser state, data position and token-dropping scores are in every checkpoint: a run
killed at any moment and resumed ends with the same weights (bitwise on CPU with
``train.deterministic``).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from leanbert.errors import ConfigError, LeanbertError
from leanbert.train.config import PretrainConfig, resolve_model_config
from leanbert.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from leanbert.train.metrics import MetricsLogger, measure_matmul_peak
from leanbert.train.optim import build_optimizer, lr_at, set_lr
from leanbert.train.state import (
    TrainState,
    list_checkpoints,
    load_training_checkpoint,
    read_saved_config,
    save_training_checkpoint,
    set_rng_state,
)


class TrainingDiverged(LeanbertError):
    """The loss or the gradients became NaN or infinite."""


class Interrupted(LeanbertError):
    exit_code = 130


@dataclass
class PretrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    eval_before: dict[str, float] | None
    eval_after: dict[str, float] | None
    interrupted: bool = False


# Keys of the pretraining config that must not change when a run resumes.
_RESUME_KEYS = ("model", "data.batch_size", "data.mask_rate", "data.max_predictions",
                "data.whole_word_masking", "train.seed", "token_dropping")


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


def _device(cfg: PretrainConfig, dist: DistInfo) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA device is available; use train.device=cpu")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _autocast(device: torch.device, precision: str):
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


def _check_resume_compatible(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    for key in _RESUME_KEYS:
        a, b = _get(saved, key), _get(current, key)
        if a != b:
            raise ConfigError(
                f"{where} holds a run with a different {key} ({json.dumps(a)} there, {json.dumps(b)} now); "
                "resume with the same config or choose a new --output"
            )


def pretrain(cfg: PretrainConfig, data_dir: str | Path, output_dir: str | Path, *,
             stop_after: int | None = None) -> PretrainResult:
    """Run (or resume) MLM pretraining. ``stop_after`` ends the call after that many optimizer
    steps of this invocation, as if it had been killed right after a checkpoint (for tests)."""
    from leanbert.algorithms.token_dropping import TokenDropping
    from leanbert.models.model import LeanbertModel
    from leanbert.train.data import PretrainData

    output_dir = Path(output_dir)
    dist = init_distributed("cuda" if cfg.train.device == "cuda" or
                            (cfg.train.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        device = _device(cfg, dist)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        if cfg.train.precision == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision fp16 needs CUDA; use bf16 on the CPU")
        data = PretrainData(data_dir, cfg.data, seed=cfg.train.seed)
        global_batch = cfg.data.batch_size
        micro = cfg.data.micro_batch_size or max(1, global_batch // dist.world_size)
        if global_batch % (micro * dist.world_size):
            raise ConfigError(
                f"data.batch_size {global_batch} must be a multiple of micro_batch_size x processes "
                f"({micro} x {dist.world_size}); change data.micro_batch_size or the number of processes"
            )
        accum = global_batch // (micro * dist.world_size)
        heads = ["mlm", "nsp"] if data.has_pairs else ["mlm"]
        model_cfg = resolve_model_config(cfg.model, vocab_size=data.vocab_size, heads=heads)
        if model_cfg.max_position_embeddings < data.seq_length:
            raise ConfigError(
                f"model max_position_embeddings {model_cfg.max_position_embeddings} < data sequence length "
                f"{data.seq_length}; set model.max_position_embeddings >= {data.seq_length}"
            )
        torch.manual_seed(cfg.train.seed)
        model = LeanbertModel(model_cfg).to(device)
        td_cfg = {**cfg.token_dropping}
        if td_cfg.get("method", "none") != "none":
            td_cfg.setdefault("allow_ids", data.allow_ids)
            td_cfg.setdefault("deny_ids", data.deny_ids)
        td = TokenDropping(td_cfg, model_cfg, total_steps=cfg.train.max_steps, device=device,
                           all_reduce=all_reduce_sum)
        optimizer = build_optimizer(model, cfg.optim)
        state = TrainState()
        config_dump = cfg.model_dump(mode="json")
        if dist.is_main:
            _remove_debris(output_dir)
        barrier()
        existing = list_checkpoints(output_dir)
        if existing:
            _check_resume_compatible(read_saved_config(existing[-1]), config_dump, output_dir)
            state, _, extra = load_training_checkpoint(existing[-1], model, optimizer)
            set_rng_state(extra)
            td.load_state_dict(extra, strict=td.config.method == "token")
        elif dist.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "config.yaml").write_text(_yaml(config_dump), encoding="utf-8")
        return _loop(cfg, data, model, optimizer, td, state, dist, device, output_dir, micro, accum,
                     config_dump, stop_after, resumed=bool(existing))
    finally:
        shutdown()


def _remove_debris(output_dir: Path) -> None:
    """Temporary directories left by a run killed while writing a checkpoint."""
    import shutil

    root = output_dir / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".tmp") or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


@torch.no_grad()
def evaluate(model, batches: list[dict[str, torch.Tensor]], device: torch.device, precision: str,
             td=None) -> dict[str, float]:
    """Held-out MLM loss, accuracy and perplexity (no token dropping unless configured)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        router = td.router_for(batch, None, training=False) if td is not None else None
        with _autocast(device, precision):
            out = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                        labels=batch["labels"], mlm_positions=batch.get("mlm_positions"), router=router)
        valid = out.mlm_label_ids != -100
        loss_sum += float(out.mlm_token_loss[valid].sum())
        pred = out.mlm_logits.reshape(-1, out.mlm_logits.shape[-1]).argmax(-1)
        correct += int((pred[valid] == out.mlm_label_ids[valid]).sum())
        count += int(valid.sum())
    model.train(was_training)
    loss = loss_sum / max(count, 1)
    return {"mlm_loss": loss, "mlm_accuracy": correct / max(count, 1), "perplexity": math.exp(min(loss, 50.0))}


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch.get("attention_mask"),
        "token_type_ids": batch.get("token_type_ids"),
        "labels": batch["labels"],
        "mlm_positions": batch.get("mlm_positions"),
    }


class _PretrainForward(torch.nn.Module):
    """The model's pretraining forward returning a plain dict of tensors: DDP's hooks (and
    torch.compile) follow dicts, not arbitrary output objects."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], router: Any = None) -> dict[str, torch.Tensor]:
        out = self.model(**_model_inputs(batch), router=router)
        res = {"mlm_token_loss": out.mlm_token_loss, "mlm_label_ids": out.mlm_label_ids,
               "mlm_logits": out.mlm_logits}
        if out.nsp_logits is not None:
            res["nsp_logits"] = out.nsp_logits
        return res


def _step_flops(td: Any, model: Any, batch: dict[str, torch.Tensor], step: int) -> int:
    """Analytic FLOPs of one micro-batch: the padded shapes the kernels ran on."""
    size, seq_len = batch["input_ids"].shape
    if batch.get("mlm_positions") is None:
        return td.flops_per_step(size, seq_len, seq_len, step)
    slots = batch["labels"].shape[1]
    return td.flops_per_step(size, seq_len, slots, step, last_layer_rows=model.last_layer_rows(slots))


def _loop(cfg, data, model, optimizer, td, state: TrainState, dist: DistInfo, device, output_dir: Path,
          micro: int, accum: int, config_dump: dict, stop_after: int | None, resumed: bool) -> PretrainResult:
    from tqdm import tqdm

    raw_model = model
    model = _PretrainForward(raw_model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # static_graph: the pooler is unused without NSP; the set of used parameters never changes.
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)
    step_model = torch.compile(model) if cfg.train.compile else model
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None
    total = cfg.train.max_steps
    world = dist.world_size
    global_batch = cfg.data.batch_size
    logger = MetricsLogger(output_dir, enabled=dist.is_main, tensorboard=cfg.log.tensorboard,
                           resume_step=state.step)
    peak_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.precision]
    peak = measure_matmul_peak(device, peak_dtype, seconds=0.3)
    eval_batches = data.eval_batches(cfg.eval.batches, cfg.eval.batch_size) if data.has_eval else []
    eval_before = None
    if eval_batches and dist.is_main and (cfg.eval.at_start and not resumed):
        eval_before = evaluate(raw_model, eval_batches, device, cfg.train.precision, td)
        logger.log({"kind": "eval", "step": 0, **eval_before})
    stream = data.train_batches(start_sample=state.samples_seen, micro_batch_size=micro,
                                rank=dist.rank, world_size=world)
    bar = tqdm(total=total, initial=state.step, disable=not (dist.is_main and cfg.log.progress),
               desc="pretrain", unit="step", dynamic_ncols=True)
    tokens_window, time_window, flops_window = 0, 0.0, 0.0
    last_log = time.perf_counter()
    steps_this_call = 0
    last_ckpt_step = state.step if resumed else None
    eval_after = None
    model.train()
    with _StopFlag() as stop:
        while state.step < total:
            t0 = time.perf_counter()
            micro_batches = [next(stream) for _ in range(accum)]
            micro_batches = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in micro_batches]
            # Global prediction count (device tensors, no host sync before the forward passes).
            n_pred = torch.stack([(b["labels"] != -100).sum() for b in micro_batches]).sum().float()
            all_reduce_sum(n_pred)
            logging_step = (state.step + 1) % cfg.log.every == 0 or state.step + 1 == total
            tokens = torch.stack([b["attention_mask"].sum() if b.get("attention_mask") is not None
                                  else torch.tensor(b["input_ids"].numel(), device=device)
                                  for b in micro_batches]).sum().float()
            lr = lr_at(state.step, cfg.optim, total)
            set_lr(optimizer, lr)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            nsp_sum = torch.zeros((), device=device)
            for i, batch in enumerate(micro_batches):
                sync = contextlib.nullcontext() if (not dist.enabled or i == accum - 1) else model.no_sync()
                router = td.router_for(batch, state.step)
                with sync:
                    with _autocast(device, cfg.train.precision):
                        out = SimpleNamespace(**step_model(batch, router))
                    token_loss = out.mlm_token_loss
                    loss = token_loss.sum() * (world / n_pred.clamp(min=1))
                    if "next_sentence_label" in batch and getattr(out, "nsp_logits", None) is not None:
                        nsp = torch.nn.functional.cross_entropy(
                            out.nsp_logits.float(), batch["next_sentence_label"].view(-1), reduction="sum")
                        loss = loss + nsp * (world / global_batch)
                        nsp_sum += nsp.detach()
                    if scaler is not None:
                        scaler.scale(loss).backward()
                    else:
                        loss.backward()
                loss_sum += token_loss.detach().sum()
                if logging_step:  # MLM accuracy only where it is logged (an argmax over the vocabulary)
                    with torch.no_grad():
                        pred = out.mlm_logits.detach().reshape(-1, out.mlm_logits.shape[-1]).argmax(-1)
                        correct += ((pred == out.mlm_label_ids) & (out.mlm_label_ids != -100)).sum()
                td.record_losses(out)
            if scaler is not None:
                scaler.unscale_(optimizer)
            clip = cfg.optim.clip_grad_norm
            params = [p for p in raw_model.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
            stats = torch.stack([loss_sum, correct.float(), nsp_sum, tokens])
            all_reduce_sum(stats)
            mlm_loss = float(stats[0] / n_pred.clamp(min=1))
            if not (math.isfinite(mlm_loss) and math.isfinite(float(grad_norm))):
                last = list_checkpoints(output_dir)
                where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
                raise TrainingDiverged(
                    f"the loss became {mlm_loss} (gradient norm {float(grad_norm)}) at step {state.step + 1}; "
                    f"stopped without saving this step; {where}; lower optim.lr, raise warm-up, or use fp32"
                )
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            td.apply_recorded()
            # Bookkeeping
            state.step += 1
            steps_this_call += 1
            state.samples_seen += global_batch
            tokens = int(stats[3])  # all ranks, reduced with the other statistics
            state.tokens_seen += tokens
            # Analytic FLOPs of what was really computed: per micro-batch (padding trimmed), all ranks.
            step_flops = world * sum(_step_flops(td, raw_model, b, state.step - 1) for b in micro_batches)
            dt = time.perf_counter() - t0
            tokens_window += tokens
            time_window += dt
            flops_window += step_flops
            bar.update(1)
            if state.step % cfg.log.every == 0 or state.step == total:
                tok_s = tokens_window / max(time_window, 1e-9)
                achieved = flops_window / max(time_window, 1e-9) / world
                rec = {
                    "kind": "train", "step": state.step, "loss": mlm_loss + float(stats[2]) / global_batch,
                    "mlm_loss": mlm_loss, "mlm_accuracy": float(stats[1] / n_pred.clamp(min=1)),
                    "lr": lr, "grad_norm": float(grad_norm), "tokens_per_s": tok_s,
                    "flops_per_step": step_flops, "mfu": achieved / peak if peak else None,
                    "samples_seen": state.samples_seen, "tokens_seen": state.tokens_seen,
                    "elapsed_s": time.perf_counter() - last_log,
                }
                if data.has_pairs:
                    rec["nsp_loss"] = float(stats[2]) / global_batch
                logger.log(rec)
                bar.set_postfix(loss=f"{mlm_loss:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{(rec['mfu'] or 0):.1%}")
                tokens_window, time_window, flops_window = 0, 0.0, 0.0
            if eval_batches and state.step % cfg.eval.every == 0 and state.step < total:
                if dist.is_main:
                    ev = evaluate(raw_model, eval_batches, device, cfg.train.precision, td)
                    logger.log({"kind": "eval", "step": state.step, **ev})
                    bar.write(f"step {state.step}: held-out MLM loss {ev['mlm_loss']:.4f}, "
                              f"accuracy {ev['mlm_accuracy']:.3f}, perplexity {ev['perplexity']:.1f}")
                barrier()
            want_stop = stop.signum is not None or (stop_after is not None and steps_this_call >= stop_after)
            if state.step % cfg.checkpoint.every == 0 or state.step == total or want_stop:
                _save(output_dir, raw_model, optimizer, state, config_dump, data, td, cfg, dist)
                last_ckpt_step = state.step
            if want_stop:
                bar.close()
                logger.close()
                if stop.signum is not None:
                    name = signal.Signals(stop.signum).name
                    print(f"{name}: saved checkpoint at step {state.step} in {output_dir}/checkpoints; "
                          "run the same command to resume", flush=True)
                    raise Interrupted(f"stopped by {name} at step {state.step}; checkpoint saved, rerun to resume")
                return PretrainResult(output_dir, output_dir / "model", state.step, eval_before, None, True)
    bar.close()
    if eval_batches and dist.is_main:
        eval_after = evaluate(raw_model, eval_batches, device, cfg.train.precision, td)
        logger.log({"kind": "eval", "step": state.step, **eval_after})
    if last_ckpt_step != state.step:
        _save(output_dir, raw_model, optimizer, state, config_dump, data, td, cfg, dist)
    model_dir = output_dir / "model"
    if dist.is_main:
        from leanbert.checkpoint import save_pretrained

        save_pretrained(raw_model, model_dir, tokenizer_dir=data.tokenizer_dir,
                        metadata={"pretrain_steps": state.step, "tokens_seen": state.tokens_seen,
                                  "token_dropping": cfg.token_dropping.get("method", "none")})
    barrier()
    logger.close()
    return PretrainResult(output_dir, model_dir, state.step, eval_before, eval_after)


def _save(output_dir, model, optimizer, state, config_dump, data, td, cfg, dist) -> None:
    if dist.is_main:
        save_training_checkpoint(output_dir, model, optimizer, state, config_dump,
                                 tokenizer_dir=data.tokenizer_dir, extra_tensors=td.state_dict(),
                                 keep_last=cfg.checkpoint.keep_last)
    barrier()
