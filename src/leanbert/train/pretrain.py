"""MLM pretraining (plus NSP / SOP when the data has sentence pairs), as an objective on the
engine (:mod:`leanbert.train.engine`), with token dropping as an algorithm.

The objective (:class:`MLMObjective`) computes the MLM loss only where it is needed: logits
at the predicted positions (V = 30522 columns for ~15% of the tokens), and the *last layer*
only at those rows (:class:`LastLayerQueries`: its queries, attention output and FFN run on
the predicted positions, plus [CLS] when a pooled output is needed; its keys and values still
come from every token). The losses and gradients are the full model's up to float rounding
(tested); BERT-base at length 128 with 20 predictions saves ~7% of the encoder's FLOPs. A model
called directly by a user (``model(...)``) always runs every layer on every token.

Continued pretraining (``init``, ``leanbert pretrain --init DIR``): the run starts from the
weights of a leanbert or transformers checkpoint (:func:`init_model`): domain-adaptive
pretraining (Gururangan et al. 2020, "Don't Stop Pretraining", Sec. 3) or BERT's second phase
at length 512 after 128 (Devlin et al. 2019, Appendix A.2). The model comes from the checkpoint;
heads it lacks (a sentence-embedding BERT has no MLM head) start from BERT's initialisation, the
MLM decoder tied to the checkpoint's word embeddings; a position table shorter than the data's
sequences is extended by copying the learnt rows (Beltagy et al. 2020, "Longformer", Sec. 5).
Optimiser and schedule start fresh; rerunning on a run directory that holds checkpoints resumes
from them, not from ``init``.

Exactness: the loss of a step is the sum of the per-token MLM losses over the *global* batch
divided by the global number of predictions (the engine all-reduces it before the backward
pass), so one process, accumulation and N processes compute the same gradient. Data order and
masks depend only on the global sample index and the seed, so a resume (with any number of
processes, at the same global batch) continues the same stream; with ``train.deterministic``
a run killed at any moment and resumed ends with bitwise the same weights on CPU.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from leanbert import losses
from leanbert.errors import ConfigError
from leanbert.models.base import LayerRouter, gather_positions
from leanbert.models.flops import full_rows, train_flops
from leanbert.train.config import PretrainConfig
from leanbert.train.engine import Engine, Interrupted, TrainingDiverged, autocast

__all__ = ["pretrain", "PretrainResult", "MLMObjective", "LastLayerQueries", "evaluate_mlm",
           "init_model", "InitReport", "check_vocabulary", "extend_positions", "TrainingDiverged", "Interrupted"]

# Keys of the pretraining config that must not change when a run resumes.
RESUME_KEYS = ("model", "data.batch_size", "data.mask_rate", "data.max_predictions",
               "data.whole_word_masking", "train.seed", "token_dropping")


class LastLayerQueries:
    """A router that runs the last layer only at ``query_index`` [B, K] (the predicted positions,
    [CLS] first when needed): the layer's ``query_index`` argument, as token dropping's split
    layer. Wraps another router (token dropping) and applies only when the last layer sees
    every token."""

    def __init__(self, query_index: torch.Tensor, last: int, seq_len: int, inner: LayerRouter | None = None) -> None:
        self.query_index = query_index
        self.last = last
        self.seq_len = seq_len
        self.inner = inner
        self.applied = False

    def before_layer(
        self, index: int, hidden: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        query_index = None
        if self.inner is not None:
            hidden, key_mask, query_index = self.inner.before_layer(index, hidden, key_mask)
        if index == self.last and query_index is None and hidden.shape[1] == self.seq_len:
            self.applied = True
            query_index = self.query_index
        return hidden, key_mask, query_index

    def after_layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.inner is None else self.inner.after_layer(index, hidden)

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.applied or self.inner is None:
            return hidden
        return self.inner.finish(hidden)


def _needs_cls(model: torch.nn.Module) -> bool:
    return model.encoder.pooler is not None or model.nsp is not None


@dataclass
class MLMObjective:
    """Masked-language modelling (Devlin et al. 2019, Sec. 3.1 Task #1) plus next-sentence /
    sentence-order prediction when batches carry ``next_sentence_label`` (Task #2).

    ``sparse_last_layer``: run the last layer only at the predicted positions (see the module
    docstring). Batches hold ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``
    and ``mlm_positions`` [B, P] (the masking collator's compact layout; padded slots have
    label -100) or full-length ``labels`` [B, S].
    """

    with_pairs: bool = False
    sparse_last_layer: bool = True

    @property
    def terms(self) -> tuple[str, ...]:
        return ("mlm", "nsp") if self.with_pairs else ("mlm",)

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"mlm": losses.prediction_count(batch["labels"])}
        if self.with_pairs:
            out["nsp"] = torch.tensor(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        return out

    def last_layer_rows(self, model: torch.nn.Module, num_predictions: int) -> int | None:
        """Rows the last layer runs on with ``num_predictions`` compact slots (None: all)."""
        if not self.sparse_last_layer:
            return None
        return num_predictions + int(_needs_cls(model))

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                 router: LayerRouter | None = None) -> dict[str, torch.Tensor]:
        input_ids, labels = batch["input_ids"], batch["labels"]
        positions = batch.get("mlm_positions")
        sparse = None
        if positions is not None and self.sparse_last_layer:
            rows = positions
            if _needs_cls(model):  # [CLS] first, for the pooled output
                rows = torch.cat([torch.zeros_like(rows[:, :1]), rows], dim=1)
            sparse = LastLayerQueries(rows, len(model.encoder.layers) - 1, input_ids.shape[1], router)
            router = sparse
        enc = model.encoder(input_ids, batch.get("attention_mask"), batch.get("token_type_ids"), router=router)
        last = enc.last_hidden_state
        if sparse is not None and sparse.applied:  # last holds the rows: ([CLS],) predictions
            hidden = last[:, last.shape[1] - positions.shape[1]:]
            flat_labels = labels.reshape(-1)
        elif positions is not None:
            hidden = gather_positions(last, positions)
            flat_labels = labels.reshape(-1)
        else:
            selected = labels != losses.IGNORE_INDEX
            hidden, flat_labels = last[selected], labels[selected]
        logits = model.mlm(hidden, model.mlm_decoder_weight())
        token_loss = losses.mlm_token_losses(logits, flat_labels)
        out = {"loss.mlm": token_loss.sum(), "mlm_token_loss": token_loss, "mlm_label_ids": flat_labels,
               "mlm_logits": logits}
        if self.with_pairs:
            pooled = enc.pooled_output if enc.pooled_output is not None else last[:, 0]
            nsp_logits = model.nsp(pooled)
            out["loss.nsp"] = losses.sentence_pair_losses(nsp_logits, batch["next_sentence_label"]).sum()
            out["nsp_logits"] = nsp_logits
        return out

    def log_stats(self, batch: Mapping[str, torch.Tensor], out: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, str]]:
        """MLM accuracy (an argmax over the vocabulary: only on logged steps)."""
        return {"mlm_accuracy": (mlm_correct(out), "mlm")}

    def flops(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
              rows: Sequence[tuple[int, int]] | None) -> int:
        """Analytic training FLOPs of a micro-batch: the padded shapes the kernels ran on."""
        size, seq_len = batch["input_ids"].shape
        positions = batch.get("mlm_positions")
        slots = batch["labels"].shape[1] if positions is not None else seq_len
        rows = list(rows) if rows is not None else full_rows(model.config, seq_len)
        last_rows = self.last_layer_rows(model, slots) if positions is not None else None
        if last_rows is not None and rows[-1] == (seq_len, seq_len):
            rows[-1] = (min(last_rows, seq_len), seq_len)
        return train_flops(model.config, size, rows, slots)


def mlm_correct(out: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """How many real prediction slots of an objective's output (``mlm_logits``,
    ``mlm_label_ids``) the argmax gets right."""
    labels = out["mlm_label_ids"]
    pred = out["mlm_logits"].detach().reshape(-1, out["mlm_logits"].shape[-1]).argmax(-1)
    return ((pred == labels) & (labels != losses.IGNORE_INDEX)).sum()


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], device: torch.device,
                 precision: str, objective: MLMObjective, td: Any = None) -> dict[str, float]:
    """Held-out MLM loss, accuracy and perplexity (no token dropping unless configured)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        router = td.router(batch, None, training=False) if td is not None else None
        with autocast(device, precision):
            out = objective(model, batch, router)
        valid = out["mlm_label_ids"] != losses.IGNORE_INDEX
        loss_sum += float(out["mlm_token_loss"][valid].sum())
        correct += int(mlm_correct(out))
        count += int(valid.sum())
    model.train(was_training)
    loss = loss_sum / max(count, 1)
    return {"mlm_loss": loss, "mlm_accuracy": correct / max(count, 1), "perplexity": math.exp(min(loss, 50.0))}


# --------------------------------------------------------------------------------------
# Continued pretraining: a run that starts from a checkpoint's weights
# --------------------------------------------------------------------------------------

# Model keys a run started from a checkpoint may set to other values than the checkpoint's:
# regularisation, not architecture. max_position_embeddings may grow (extend_positions).
INIT_FREE_KEYS = ("hidden_dropout", "attention_dropout", "classifier_dropout")
POSITION_KEY = "encoder.embeddings.position.weight"
_CHECKED_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class InitReport:
    """What :func:`init_model` did: the parts it initialised itself, the checkpoint's parts it
    left out, and the position table's growth (old, new) if any."""

    source: Path
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    positions: tuple[int, int] | None = None

    def messages(self) -> list[str]:
        out = []
        if "mlm" in self.new:
            out.append(f"{self.source} has no MLM head: initialised a new one (dense + LayerNorm + output bias, "
                       "BERT's normal(0, 0.02) init) with its decoder tied to the checkpoint's word embeddings")
        names = {"nsp": "NSP head", "pooler": "pooler"}
        for part in self.new:
            if part != "mlm":
                out.append(f"{self.source} has no {names.get(part, part)}: initialised a new one (BERT's init)")
        if self.dropped:
            out.append(f"left out the checkpoint's {', '.join(self.dropped)} (not used by pretraining)")
        if self.positions:
            old, new = self.positions
            out.append(f"extended the position embeddings from {old} to {new}: rows 0-{old - 1} are the "
                       f"checkpoint's, rows {old}-{new - 1} repeat them (Longformer's copy initialisation)")
        return out

    def metadata(self) -> dict[str, Any]:
        return {"from": str(self.source), "new": self.new, "dropped": self.dropped,
                "positions": list(self.positions) if self.positions else None}


def _tokenizer_file(directory: Path) -> Path | None:
    """The file :func:`leanbert.data.tokenizer.load_tokenizer` reads in ``directory``."""
    for name in ("tokenizer.json", "vocab.txt"):
        if (directory / name).is_file():
            return directory / name
    return None


def _tokens_by_id(directory: Path) -> list[str]:
    from leanbert.data.tokenizer import load_tokenizer

    vocab = load_tokenizer(directory).get_vocab(with_added_tokens=True)
    tokens = [""] * (max(vocab.values()) + 1 if vocab else 0)
    for token, i in vocab.items():
        tokens[i] = token
    return tokens


def check_vocabulary(checkpoint: str | Path, model_vocab_size: int, data_tokenizer: str | Path) -> None:
    """The checkpoint's tokenizer and the data's must be the same vocabulary: same size, same ids
    of [PAD] [UNK] [CLS] [SEP] [MASK], same token at every id; else a one-line error naming both
    files. The model's embedding table must hold every id of the data."""
    checkpoint, data_tokenizer = Path(checkpoint), Path(data_tokenizer)
    ours, theirs = _tokenizer_file(checkpoint), _tokenizer_file(data_tokenizer)
    fix = f"prepare the data with the checkpoint's tokenizer (leanbert data prepare ... --tokenizer {checkpoint})"
    if ours is None:
        raise ConfigError(f"{checkpoint} has no tokenizer (tokenizer.json or vocab.txt), so its vocabulary cannot be "
                          f"checked against the data's {theirs}; copy the tokenizer it was trained with into {checkpoint}")
    if theirs is None:
        raise ConfigError(f"the prepared data has no tokenizer in {data_tokenizer}; prepare the data again")
    a, b = _tokens_by_id(checkpoint), _tokens_by_id(data_tokenizer)
    if len(a) != len(b):
        raise ConfigError(f"vocabulary mismatch: {ours} has {len(a)} tokens, the data's {theirs} has {len(b)}; {fix}")
    for token in _CHECKED_SPECIALS:
        ia = a.index(token) if token in a else None
        ib = b.index(token) if token in b else None
        if ia != ib:
            raise ConfigError(f"vocabulary mismatch: {token} is id {ia} in {ours} but id {ib} in the data's {theirs}; {fix}")
    diff = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
    if diff is not None:
        raise ConfigError(f"vocabulary mismatch: id {diff} is {a[diff]!r} in {ours} but {b[diff]!r} in the data's "
                          f"{theirs}; {fix}")
    if model_vocab_size < len(b):
        raise ConfigError(f"{checkpoint / 'config.json'}: vocab_size {model_vocab_size} is smaller than its tokenizer "
                          f"{ours} ({len(b)} tokens); the checkpoint does not match its tokenizer")


@torch.no_grad()
def extend_positions(table: torch.Tensor, length: int) -> torch.Tensor:
    """A position-embedding table [n, H] extended to ``length`` rows by repeating the learnt
    ones (row i gets learnt row i mod n): Longformer's copy initialisation (Beltagy et al. 2020,
    Sec. 5), which keeps the local structure the attention learnt (a random init of the new rows
    costs far more steps to recover)."""
    n = table.shape[0]
    if length <= n:
        return table[:length].clone()
    return table.repeat(math.ceil(length / n), 1)[:length].clone()


def init_model(init: str | Path, *, data_tokenizer: str | Path, seq_length: int,
               heads: Sequence[str], overrides: Mapping[str, Any] | None = None, seed: int = 0):
    """The model a continued-pretraining run starts from: ``init``'s config and weights (a
    leanbert or transformers checkpoint directory), with the ``heads`` pretraining needs (new
    ones initialised as BERT's, the MLM decoder tied to the word embeddings) and the position
    table extended to ``seq_length`` if shorter (:func:`extend_positions`).

    ``overrides``: the run's ``model.KEY=VALUE`` settings. Dropout keys may differ from the
    checkpoint's, ``max_position_embeddings`` may grow; any other key must agree with the
    checkpoint (one-line error otherwise). Returns ``(model, InitReport)``.
    """
    from leanbert.checkpoint import from_pretrained
    from leanbert.models import load_model_config
    from leanbert.models.model import LeanbertModel

    init = Path(init)
    src = from_pretrained(init)
    check_vocabulary(init, src.config.vocab_size, data_tokenizer)
    base = src.config.model_dump(mode="json")
    where = f"{init / 'config.json'}"
    target = dict(base)
    for key, value in (overrides or {}).items():
        if key in ("preset", "heads", "model_type"):
            what = {"preset": "a preset", "heads": "the heads (pretraining picks them from the data)",
                    "model_type": "the model family"}[key]
            raise ConfigError(f"model.{key} cannot be set with --init: the model comes from {init}, not {what}; "
                              f"drop --set model.{key}")
        merged = load_model_config({**base, key: value}, "model section", prefix="model.")  # unknown keys, types
        new, old = getattr(merged, key), getattr(src.config, key)
        if key in INIT_FREE_KEYS:
            target[key] = new
        elif key == "max_position_embeddings":
            if new < old:
                raise ConfigError(f"model.max_position_embeddings={new} is smaller than the checkpoint's {old} "
                                  f"({where}); positions can only be extended")
            target[key] = new
        elif new != old:
            raise ConfigError(f"model.{key}={json.dumps(new)} contradicts the checkpoint {where} ({key} "
                              f"{json.dumps(old)}); with --init the model comes from the checkpoint: drop the --set")
    target["max_position_embeddings"] = max(int(target["max_position_embeddings"]), seq_length)
    target["heads"] = list(heads)
    if "nsp" in heads and base.get("use_pooler") is False and base["model_type"] == "bert":
        target["use_pooler"] = True  # BERT's NSP classifier reads the pooled [CLS]
    config = load_model_config(target, where, prefix="model.")
    torch.manual_seed(seed)
    model = LeanbertModel(config)
    report = InitReport(init)
    src_state = src.state_dict()
    new_state = model.state_dict()
    for key, tensor in new_state.items():
        old = src_state.get(key)
        if old is None:
            part = key.split(".")[0] if not key.startswith("encoder.") else key.split(".")[1]
            if part not in report.new:
                report.new.append(part)
            continue
        if key == POSITION_KEY and old.shape[0] != tensor.shape[0]:
            report.positions = (old.shape[0], tensor.shape[0])
            tensor.copy_(extend_positions(old, tensor.shape[0]))
        else:
            tensor.copy_(old)
    report.dropped = sorted({k.split(".")[0] for k in src_state if k not in new_state})
    return model, report


@dataclass
class PretrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    eval_before: dict[str, float] | None
    eval_after: dict[str, float] | None
    interrupted: bool = False


def pretrain(cfg: PretrainConfig, data_dir: str | Path, output_dir: str | Path, *,
             stop_after: int | None = None, callbacks: Sequence[Any] = ()) -> PretrainResult:
    """Run (or resume) MLM pretraining. ``stop_after`` ends the call after that many optimizer
    steps of this invocation, as if it had been killed right after a checkpoint (for tests);
    ``callbacks`` are extra :class:`leanbert.train.callbacks.Callback` objects.

    With ``cfg.init`` the run starts from that checkpoint's weights (:func:`init_model`), with
    a fresh optimiser and schedule; an ``output_dir`` that already holds checkpoints of the run
    resumes from them (its own weights, optimiser and data position), not from ``cfg.init``."""
    from leanbert.algorithms.token_dropping import TokenDropping
    from leanbert.models import resolve_model_section
    from leanbert.models.model import LeanbertModel
    from leanbert.speedups import optimize
    from leanbert.train.data import PretrainData

    output_dir = Path(output_dir)
    config_dump = cfg.model_dump(mode="json")
    engine = Engine(job="pretrain", output_dir=output_dir, train=cfg.train, optim=cfg.optim,
                    checkpoint=cfg.checkpoint, log=cfg.log, config=config_dump, resume_keys=RESUME_KEYS,
                    callbacks=callbacks)
    with engine:
        device = engine.device
        data = PretrainData(data_dir, cfg.data, seed=cfg.train.seed)
        heads = ["mlm", "nsp"] if data.has_pairs else ["mlm"]
        init_report = None
        if cfg.init is None:
            model_cfg = resolve_model_section(cfg.model, vocab_size=data.vocab_size, heads=heads)
            if model_cfg.max_position_embeddings < data.seq_length:
                raise ConfigError(
                    f"model max_position_embeddings {model_cfg.max_position_embeddings} < data sequence length "
                    f"{data.seq_length}; set model.max_position_embeddings >= {data.seq_length}"
                )
            engine.micro_batching(cfg.data.batch_size, cfg.data.micro_batch_size)  # fail before building anything
            torch.manual_seed(cfg.train.seed)
            model = LeanbertModel(model_cfg)
        else:
            engine.micro_batching(cfg.data.batch_size, cfg.data.micro_batch_size)
            model, init_report = init_model(cfg.init, data_tokenizer=data.tokenizer_dir, seq_length=data.seq_length,
                                            heads=heads, overrides=cfg.model, seed=cfg.train.seed)
            model_cfg = model.config
            # The run's model section is the checkpoint's config as built (what a resume compares).
            config_dump["model"] = model_cfg.model_dump(mode="json")
            if engine.is_main:
                from leanbert.train.state import list_checkpoints

                existing = list_checkpoints(output_dir)
                notes = ([f"{output_dir} holds checkpoints of this run: resuming from {existing[-1].name}, "
                          f"not from {cfg.init}"] if existing else
                         [f"starting from the weights of {cfg.init} (fresh optimiser and schedule)",
                          *init_report.messages()])
                for note in notes:
                    print(f"note: {note}", file=sys.stderr, flush=True)
        model = model.to(device)
        if cfg.train.speedups:
            optimize(model, for_training=True)
        td_cfg = cfg.token_dropping
        if td_cfg.method != "none":
            td_cfg = td_cfg.with_special_ids(data.special_ids)
        from leanbert.train.distributed import all_reduce_sum

        td = TokenDropping(td_cfg, model_cfg, total_steps=cfg.train.max_steps, device=device, all_reduce=all_reduce_sum)
        objective = MLMObjective(with_pairs=data.has_pairs)
        eval_batches = data.eval_batches(cfg.eval.batches, cfg.eval.batch_size) if data.has_eval else []

        def evaluate(m: torch.nn.Module, step: int) -> dict[str, float] | None:
            if not eval_batches:
                return None
            return evaluate_mlm(m, eval_batches, device, cfg.train.precision, objective, td)

        def batches(start_step: int, micro: int, rank: int, world: int) -> Iterator[dict[str, torch.Tensor]]:
            return data.train_batches(start_sample=start_step * cfg.data.batch_size, micro_batch_size=micro,
                                      rank=rank, world_size=world)

        fit = engine.fit(model, objective, batches, total_steps=cfg.train.max_steps,
                         global_batch=cfg.data.batch_size, micro_batch=cfg.data.micro_batch_size,
                         algorithms=[td] if td.enabled else [], evaluate=evaluate, eval_every=cfg.eval.every,
                         eval_at_start=cfg.eval.at_start, tokenizer_dir=data.tokenizer_dir, stop_after=stop_after)
        model_dir = output_dir / "model"
        if fit.interrupted:
            return PretrainResult(output_dir, model_dir, fit.state.step, fit.eval_before, None, True)
        if engine.is_main:
            from leanbert.checkpoint import save_pretrained

            metadata = {"pretrain_steps": fit.state.step, "tokens_seen": fit.state.tokens_seen,
                        "token_dropping": cfg.token_dropping.method}
            if init_report is not None:
                metadata["init"] = init_report.metadata()
            save_pretrained(model, model_dir, tokenizer_dir=data.tokenizer_dir, metadata=metadata)
        from leanbert.train.distributed import barrier

        barrier()
        return PretrainResult(output_dir, model_dir, fit.state.step, fit.eval_before, fit.eval_after)
