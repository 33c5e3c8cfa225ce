"""Hugging Face ``transformers`` interop: read and write ``save_pretrained`` directories.

Loading never imports transformers: the directory's ``config.json`` is mapped to a leanbert
config and the safetensors weights are renamed (Q, K, V concatenated into leanbert's fused
projection; the MLM decoder tied to the word embeddings). Exporting writes a directory that
``transformers.AutoModel`` / ``AutoModelForMaskedLM`` / ``AutoModelForPreTraining`` load.

Each family provides an :class:`HFAdapter`: its config mapping and a *key map* from every
leanbert parameter name to the transformers name(s) it corresponds to. Body keys are given
without the base-model prefix (``bert.``), which transformers adds for models with heads.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from leanbert.errors import CheckpointError

# Head -> prefix of its transformers parameter names (shared by BERT and MobileBERT).
HF_HEAD_PREFIXES = {
    "mlm": "cls.predictions.",
    "nsp": "cls.seq_relationship.",
    "classifier": "classifier.",
    "span_qa": "qa_outputs.",
}


@dataclass(frozen=True)
class HFAdapter:
    hf_model_type: str  # "bert"
    base_prefix: str  # "bert."
    arch_prefix: str  # "Bert": architectures are f"{arch_prefix}Model", f"{arch_prefix}ForMaskedLM", ...
    config_from_hf: Callable[[dict[str, Any]], dict[str, Any]]
    config_to_hf: Callable[[Any], dict[str, Any]]
    key_map: Callable[[Any], dict[str, list[str]]]
    # Tied HF keys that are copies of another parameter: hf key -> leanbert key it equals.
    tied_keys: Callable[[Any], dict[str, str]]

    def architecture(self, heads: list[str]) -> str:
        hs = set(heads)
        if not hs:
            return f"{self.arch_prefix}Model"
        if hs == {"mlm", "nsp"}:
            return f"{self.arch_prefix}ForPreTraining"
        if hs == {"mlm"}:
            return f"{self.arch_prefix}ForMaskedLM"
        if hs == {"nsp"}:
            return f"{self.arch_prefix}ForNextSentencePrediction"
        if hs == {"classifier"}:
            return f"{self.arch_prefix}ForSequenceClassification"
        if hs == {"span_qa"}:
            return f"{self.arch_prefix}ForQuestionAnswering"
        raise CheckpointError(
            f"transformers has no single {self.arch_prefix} class with the heads {sorted(hs)}; "
            "export with heads=[] (encoder only) or one of mlm, mlm+nsp, classifier, span_qa"
        )


def adapter_for(hf_model_type: str) -> HFAdapter:
    """The adapter of a model_type (leanbert uses transformers' names: bert, mobilebert)."""
    if hf_model_type == "bert":
        return BERT_ADAPTER
    if hf_model_type == "mobilebert":
        return MOBILEBERT_ADAPTER
    raise CheckpointError(
        f"transformers model_type '{hf_model_type}' is not supported; leanbert reads bert and mobilebert checkpoints"
    )


def is_hf_config(cfg: dict[str, Any]) -> bool:
    """A transformers config.json (not leanbert's own, which has ``leanbert_format``)."""
    return "leanbert_format" not in cfg and "model_type" in cfg


def heads_in_hf_state(keys: list[str]) -> list[str]:
    return [h for h, prefix in HF_HEAD_PREFIXES.items() if any(k.startswith(prefix) for k in keys)]


def config_from_hf_checkpoint(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The leanbert model config (plain data, heads not chosen yet) of a transformers
    ``config.json`` and its weights: the family's mapping, plus what only the weights tell
    (no pooler weights: build none; a classifier's width gives ``num_labels``)."""
    adapter = adapter_for(str(cfg.get("model_type")))
    lb_cfg = adapter.config_from_hf(cfg)
    # BertForMaskedLM (and MobileBertForMaskedLM) have no pooler: build none rather than a random one.
    if not any(k.endswith("pooler.dense.weight") for k in state):
        lb_cfg["use_pooler"] = False
    w = state.get("classifier.weight")
    if w is not None:
        lb_cfg["num_labels"] = int(w.shape[0])
        if w.shape[0] == 1:
            lb_cfg["problem_type"] = "regression"
    return lb_cfg


def state_from_hf(adapter: HFAdapter, config: Any, state: dict[str, torch.Tensor], source: str,
                  skip_heads: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    state = {_modern_name(k): v for k, v in state.items()}
    has_prefix = any(k.startswith(adapter.base_prefix) for k in state)
    out: dict[str, torch.Tensor] = {}
    for lb_key, hf_keys in adapter.key_map(config).items():
        head = lb_key.split(".", 1)[0]
        if head in skip_heads:
            continue
        full = [(adapter.base_prefix + k if has_prefix and _is_body(k) else k) for k in hf_keys]
        missing = [k for k in full if k not in state]
        if missing:
            if lb_key.endswith("mlm.bias") and "cls.predictions.decoder.bias" in state:
                out[lb_key] = state["cls.predictions.decoder.bias"]
                continue
            raise CheckpointError(
                f"{source}: weight '{missing[0]}' is missing ({len(missing)} missing for '{lb_key}'); "
                "the checkpoint is incomplete or its config.json does not match its weights"
            )
        tensors = [state[k] for k in full]
        out[lb_key] = tensors[0] if len(tensors) == 1 else torch.cat(tensors, 0)
    # A decoder that differs from the word embeddings cannot be represented (leanbert ties them).
    dec = state.get("cls.predictions.decoder.weight")
    emb_key = "encoder.embeddings.word.weight"
    if dec is not None and emb_key in out and dec.shape == out[emb_key].shape and not torch.equal(dec, out[emb_key]):
        raise CheckpointError(
            f"{source}: the MLM decoder is not tied to the word embeddings; leanbert ties them as BERT does"
        )
    return out


def _is_body(hf_key: str) -> bool:
    return not any(hf_key.startswith(p) for p in HF_HEAD_PREFIXES.values())


def _modern_name(key: str) -> str:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def state_to_hf(model: Any, labels: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(transformers config.json dict, transformers state dict) for a leanbert model.
    ``labels``: the classifier's label names in output order (``id2label``; default LABEL_i)."""
    config = model.config
    adapter = adapter_for(config.model_type)
    heads = list(config.heads)
    state = model.state_dict()
    prefix = adapter.base_prefix if heads else ""
    arch = adapter.architecture(heads)
    # transformers' *ForMaskedLM and *ForQuestionAnswering classes have no pooler: leave it out.
    no_pooler = arch.endswith(("ForMaskedLM", "ForQuestionAnswering"))
    out: dict[str, torch.Tensor] = {}
    for lb_key, hf_keys in adapter.key_map(config).items():
        if no_pooler and lb_key.startswith("encoder.pooler."):
            continue
        tensor = state[lb_key].detach().cpu()
        parts = [tensor] if len(hf_keys) == 1 else list(tensor.chunk(len(hf_keys), 0))
        for hf_key, part in zip(hf_keys, parts, strict=True):
            out[(prefix + hf_key) if _is_body(hf_key) else hf_key] = part.contiguous().clone()
    for hf_key, lb_key in adapter.tied_keys(config).items():
        if hf_key.split(".")[0] in ("cls",) and "mlm" not in heads:
            continue
        out[hf_key] = state[lb_key].detach().cpu().contiguous().clone()
    hf_cfg = adapter.config_to_hf(config)
    hf_cfg["architectures"] = [arch]
    if "classifier" in heads:
        n = 1 if config.problem_type == "regression" else config.num_labels
        names = [str(x) for x in labels] if labels and len(labels) == n and len(set(labels)) == n else \
            [f"LABEL_{i}" for i in range(n)]
        hf_cfg["id2label"] = {str(i): name for i, name in enumerate(names)}
        hf_cfg["label2id"] = {name: i for i, name in enumerate(names)}
        hf_cfg["problem_type"] = config.problem_type
    return hf_cfg, out


_PIPELINE_TAGS = {"ForSequenceClassification": "text-classification", "ForMaskedLM": "fill-mask",
                  "ForPreTraining": "fill-mask", "ForQuestionAnswering": "question-answering"}


def model_card(model: Any, hf_cfg: Mapping[str, Any], metadata: Mapping[str, Any], source: str | None,
               name: str) -> str:
    """The README.md of an exported checkpoint (a Hugging Face model card): the model, the data
    and recipe it was trained with, and its metrics, as far as the leanbert checkpoint's
    ``config.json`` metadata records them."""
    from leanbert import __version__

    config = model.config
    arch = hf_cfg["architectures"][0]
    tag = next((t for suffix, t in _PIPELINE_TAGS.items() if arch.endswith(suffix)), "feature-extraction")
    lines = ["---", "library_name: transformers", f"pipeline_tag: {tag}", "tags:", "- leanbert",
             f"- {config.model_type}", "---", "", f"# {name}", "",
             f"Exported by leanbert {__version__}" + (f" from `{source}`." if source else "."), "", "## Model", "",
             f"- transformers class: `{arch}` ({model.num_parameters() / 1e6:.2f} M parameters with heads)",
             f"- {config.model_type}: {config.num_layers} layers, hidden size {config.hidden_size}, "
             f"{config.num_heads} attention heads, FFN {config.intermediate_size}, vocabulary {config.vocab_size}, "
             f"{config.max_position_embeddings} positions",
             f"- heads: {', '.join(config.heads) or 'none (encoder only)'}"]
    if "id2label" in hf_cfg:
        lines.append(f"- labels (id2label): {', '.join(f'{i} = {n}' for i, n in hf_cfg['id2label'].items())}")
    lines += ["", "## Data", ""]
    task = metadata.get("task")
    if task:
        lines.append(f"- task: {task}")
    if metadata.get("data"):
        lines.append(f"- fine-tuning data: `{metadata['data']}`")
    if metadata.get("tokens_seen"):
        lines.append(f"- pretraining: {metadata.get('pretrain_steps')} steps, {metadata['tokens_seen']:,} tokens")
    if lines[-1] == "":
        lines.append("Not recorded in the checkpoint.")
    lines += ["", "## Recipe", ""]
    recipe = metadata.get("finetune") or {}
    if metadata.get("base_model"):
        lines.append(f"- fine-tuned from `{metadata['base_model']}` with leanbert (BERT's recipe: AdamW, "
                     "linear warm-up and decay)" + (f", best epoch {metadata['epoch']}" if "epoch" in metadata else ""))
    keys = ("epochs", "batch_size", "lr", "warmup_ratio", "weight_decay", "max_seq_length", "precision", "seed")
    if recipe:
        lines.append("- " + ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe))
    if metadata.get("token_dropping"):
        lines.append(f"- pretrained with token dropping: {metadata['token_dropping']}")
    if metadata.get("distilled_from"):
        lines.append(f"- distilled from `{metadata['distilled_from']}` ({metadata.get('strategy')} knowledge transfer)")
    if lines[-1] == "":
        lines.append("Not recorded in the checkpoint.")
    lines += ["", "## Metrics", ""]
    metrics = metadata.get("metrics") or {}
    rows = [(split, name, value) for split, ms in metrics.items() if isinstance(ms, Mapping)
            for name, value in ms.items() if isinstance(value, (int, float))]
    if rows:
        lines += ["| split | metric | value |", "|---|---|---|"]
        lines += [f"| {split} | {name} | {value:.4f} |" for split, name, value in rows]
    else:
        lines.append("Not recorded in the checkpoint.")
    return "\n".join(lines) + "\n"


def linear_keys(m: dict[str, list[str]], lb: str, hf: str) -> None:
    """Map a linear (or norm) layer's weight and bias."""
    m[f"{lb}.weight"] = [f"{hf}.weight"]
    m[f"{lb}.bias"] = [f"{hf}.bias"]


def embedding_table_keys(m: dict[str, list[str]]) -> None:
    """The word, position and token-type tables, named alike in transformers' BERT and MobileBERT."""
    for name in ("word", "position", "token_type"):
        m[f"encoder.embeddings.{name}.weight"] = [f"embeddings.{name}_embeddings.weight"]


def ffn_keys(m: dict[str, list[str]], lb: str, hf: str) -> None:
    """A feed-forward network (``up``, ``down``, ``norm``) whose transformers names are
    ``intermediate.dense``, ``output.dense`` and ``output.LayerNorm`` under ``hf``."""
    linear_keys(m, f"{lb}.up", f"{hf}.intermediate.dense")
    linear_keys(m, f"{lb}.down", f"{hf}.output.dense")
    linear_keys(m, f"{lb}.norm", f"{hf}.output.LayerNorm")


def add_head_keys(m: dict[str, list[str]], config: Any) -> None:
    """The pooler and the head parameters, named alike in transformers' BERT and MobileBERT
    classes (a family with extra MLM parameters, like MobileBERT's 384-wide decoder part, adds
    those itself)."""
    if config.use_pooler:
        linear_keys(m, "encoder.pooler.dense", "pooler.dense")
    heads = set(config.heads)
    if "mlm" in heads:
        linear_keys(m, "mlm.dense", "cls.predictions.transform.dense")
        linear_keys(m, "mlm.norm", "cls.predictions.transform.LayerNorm")
        m["mlm.bias"] = ["cls.predictions.bias"]
    if "nsp" in heads:
        linear_keys(m, "nsp.classifier", "cls.seq_relationship")
    if "classifier" in heads:
        linear_keys(m, "classifier.classifier", "classifier")
    if "span_qa" in heads:
        linear_keys(m, "span_qa.qa_outputs", "qa_outputs")


def tied_mlm_keys(config: Any) -> dict[str, str]:
    """The MLM decoder tied to the word embeddings (and its bias to the head's bias)."""
    return {"cls.predictions.decoder.weight": "encoder.embeddings.word.weight",
            "cls.predictions.decoder.bias": "mlm.bias"}


# leanbert config field -> transformers config key, for the fields BERT and MobileBERT share.
_SHARED_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
}
_ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "relu": "relu", "relu6": "relu6", "silu": "silu", "swish": "silu"}
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "relu6": "relu6", "silu": "silu"}


def shared_config_from_hf(cfg: dict[str, Any], config_cls: Any) -> dict[str, Any]:
    """The shared fields of a transformers config; a key it omits takes the family's default
    (``config_cls``'s, equal to transformers' own)."""
    defaults = {name: field.default for name, field in config_cls.model_fields.items()}
    act = cfg.get("hidden_act", _ACT_TO_HF[defaults["hidden_act"]])
    if act not in _ACT_FROM_HF:
        raise CheckpointError(f"hidden_act '{act}' is not supported; use one of {', '.join(_ACT_FROM_HF)}")
    out = {lb: cfg.get(hf, defaults[lb]) for lb, hf in _SHARED_FIELDS.items()}
    out["hidden_act"] = _ACT_FROM_HF[act]
    out["pad_token_id"] = cfg.get("pad_token_id") or 0
    if cfg.get("classifier_dropout") is not None:
        out["classifier_dropout"] = cfg["classifier_dropout"]
    return out


def shared_config_to_hf(config: Any) -> dict[str, Any]:
    """The shared fields of a leanbert config, as transformers names them."""
    out = {hf: getattr(config, lb) for lb, hf in _SHARED_FIELDS.items()}
    out.update(hidden_act=_ACT_TO_HF[config.hidden_act], pad_token_id=config.pad_token_id,
               classifier_dropout=config.classifier_dropout, tie_word_embeddings=True)
    return out


# --------------------------------------------------------------------------------------
# BERT
# --------------------------------------------------------------------------------------



def bert_config_from_hf(cfg: dict[str, Any]) -> dict[str, Any]:
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"position_embedding_type '{cfg['position_embedding_type']}' is not supported; leanbert BERT uses absolute positions"
        )
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise CheckpointError("decoder BERT checkpoints (is_decoder / cross-attention) are not supported")
    from leanbert.models.bert import BertConfig

    return {"model_type": "bert", **shared_config_from_hf(cfg, BertConfig)}


def bert_config_to_hf(config: Any) -> dict[str, Any]:
    return {"model_type": "bert", **shared_config_to_hf(config), "position_embedding_type": "absolute"}


def bert_key_map(config: Any) -> dict[str, list[str]]:
    m: dict[str, list[str]] = {}

    def lin(lb: str, hf: str) -> None:
        linear_keys(m, lb, hf)

    embedding_table_keys(m)
    lin("encoder.embeddings.norm", "embeddings.LayerNorm")
    for i in range(config.num_layers):
        lb, hf = f"encoder.layers.{i}", f"encoder.layer.{i}"
        for p in ("weight", "bias"):
            m[f"{lb}.attention.qkv.{p}"] = [f"{hf}.attention.self.{n}.{p}" for n in ("query", "key", "value")]
        lin(f"{lb}.attention.out", f"{hf}.attention.output.dense")
        lin(f"{lb}.attention.norm", f"{hf}.attention.output.LayerNorm")
        ffn_keys(m, f"{lb}.ffn", hf)
    add_head_keys(m, config)
    return m


BERT_ADAPTER = HFAdapter(
    hf_model_type="bert",
    base_prefix="bert.",
    arch_prefix="Bert",
    config_from_hf=bert_config_from_hf,
    config_to_hf=bert_config_to_hf,
    key_map=bert_key_map,
    tied_keys=tied_mlm_keys,
)


# --------------------------------------------------------------------------------------
# MobileBERT
# --------------------------------------------------------------------------------------

def mobilebert_config_from_hf(cfg: dict[str, Any]) -> dict[str, Any]:
    """transformers ``MobileBertConfig`` -> leanbert config. One known difference: with
    ``normalization_type: layer_norm`` transformers builds the embedding LayerNorm and each
    block's last FFN LayerNorm with eps 1e-5 whatever ``layer_norm_eps`` says; leanbert uses
    ``layer_norm_eps`` everywhere (outputs differ by ~3e-4). NoNorm models, the released
    ones included, match to ~1e-7."""
    if not cfg.get("use_bottleneck", True):
        raise CheckpointError(
            "MobileBERT checkpoints without bottlenecks (use_bottleneck: false) are not supported; "
            "such a model is a BERT with NoNorm, which leanbert does not offer"
        )
    norm = cfg.get("normalization_type", "no_norm")
    if norm not in ("no_norm", "layer_norm"):
        raise CheckpointError(f"normalization_type '{norm}' is not supported; use no_norm or layer_norm")
    bottleneck_attention = bool(cfg.get("use_bottleneck_attention", False))
    # MobileBertForMaskedLM is built without the pooler whatever classifier_activation says.
    from leanbert.models.mobilebert import MobileBertConfig

    masked_lm_only = any(str(a).endswith("ForMaskedLM") for a in cfg.get("architectures") or [])
    return {
        "model_type": "mobilebert",
        **shared_config_from_hf(cfg, MobileBertConfig),
        "embedding_size": cfg.get("embedding_size", 128),
        "trigram_input": cfg.get("trigram_input", True),
        "intra_bottleneck_size": cfg.get("intra_bottleneck_size", 128),
        # With bottleneck attention transformers builds the shared bottleneck but never uses it.
        "key_query_shared_bottleneck": bool(cfg.get("key_query_shared_bottleneck", True)) and not bottleneck_attention,
        "use_bottleneck_attention": bottleneck_attention,
        "num_feedforward_networks": cfg.get("num_feedforward_networks", 4),
        "normalization_type": norm,
        "use_pooler": bool(cfg.get("classifier_activation", True)) and not masked_lm_only,
    }


def mobilebert_config_to_hf(config: Any) -> dict[str, Any]:
    """leanbert config -> transformers ``MobileBertConfig``; refuses what transformers cannot build."""
    if config.attention_source == "block_input" and config.intra_bottleneck_size != config.hidden_size:
        raise CheckpointError(
            "transformers' MobileBERT cannot express queries and keys from the block input with an "
            f"intra-block size ({config.intra_bottleneck_size}) other than hidden_size ({config.hidden_size}), "
            "as the IB-BERT teacher has; keep it in leanbert's own format (leanbert.save_pretrained)"
        )
    if config.padded_key_score is not None:
        warnings.warn(
            f"this MobileBERT sets padded keys' attention scores to {config.padded_key_score} (the authors' "
            "mask); transformers masks them with a large negative number, so its outputs on padded batches "
            "will differ slightly (unpadded inputs are identical)",
            stacklevel=2,
        )
    return {
        "model_type": "mobilebert",
        **shared_config_to_hf(config),
        "embedding_size": config.embedding_size,
        "trigram_input": config.trigram_input,
        "use_bottleneck": True,
        "intra_bottleneck_size": config.intra_bottleneck_size,
        "true_hidden_size": config.intra_bottleneck_size,
        "key_query_shared_bottleneck": config.key_query_shared_bottleneck,
        "use_bottleneck_attention": config.use_bottleneck_attention,
        "num_feedforward_networks": config.num_feedforward_networks,
        "normalization_type": config.normalization_type,
        "classifier_activation": config.use_pooler,
    }


def mobilebert_key_map(config: Any) -> dict[str, list[str]]:
    """leanbert name -> transformers name(s) (body keys without the ``mobilebert.`` prefix)."""
    m: dict[str, list[str]] = {}

    def lin(lb: str, hf: str) -> None:
        linear_keys(m, lb, hf)

    embedding_table_keys(m)
    if config.trigram_input or config.embedding_size != config.hidden_size:
        lin("encoder.embeddings.projection", "embeddings.embedding_transformation")
    lin("encoder.embeddings.norm", "embeddings.LayerNorm")
    n_ffn = config.num_feedforward_networks
    for i in range(config.num_layers):
        lb, hf = f"encoder.layers.{i}", f"encoder.layer.{i}"
        lin(f"{lb}.input_bottleneck.dense", f"{hf}.bottleneck.input.dense")
        lin(f"{lb}.input_bottleneck.norm", f"{hf}.bottleneck.input.LayerNorm")
        if config.attention_source == "shared_bottleneck":
            lin(f"{lb}.qk_bottleneck.dense", f"{hf}.bottleneck.attention.dense")
            lin(f"{lb}.qk_bottleneck.norm", f"{hf}.bottleneck.attention.LayerNorm")
        att = f"{hf}.attention"
        for p in ("weight", "bias"):
            m[f"{lb}.attention.query_key.{p}"] = [f"{att}.self.query.{p}", f"{att}.self.key.{p}"]
        lin(f"{lb}.attention.value", f"{att}.self.value")
        lin(f"{lb}.attention.out", f"{att}.output.dense")
        lin(f"{lb}.attention.norm", f"{att}.output.LayerNorm")
        # transformers: FFNs 1..n-1 are `ffn.j`, the last one is `intermediate` + `output`.
        for j in range(n_ffn - 1):
            ffn_keys(m, f"{lb}.ffns.{j}", f"{hf}.ffn.{j}")
        ffn_keys(m, f"{lb}.ffns.{n_ffn - 1}", hf)
        lin(f"{lb}.output_bottleneck.dense", f"{hf}.output.bottleneck.dense")
        lin(f"{lb}.output_bottleneck.norm", f"{hf}.output.bottleneck.LayerNorm")
    add_head_keys(m, config)
    if "mlm" in config.heads:
        m["mlm.decoder_extra"] = ["cls.predictions.dense.weight"]
    return m


MOBILEBERT_ADAPTER = HFAdapter(
    hf_model_type="mobilebert",
    base_prefix="mobilebert.",
    arch_prefix="MobileBert",
    config_from_hf=mobilebert_config_from_hf,
    config_to_hf=mobilebert_config_to_hf,
    key_map=mobilebert_key_map,
    tied_keys=tied_mlm_keys,
)
