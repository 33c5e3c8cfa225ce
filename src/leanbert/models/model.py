"""An encoder of any family plus the heads its config names: the model users hold.

``LeanbertModel(config)`` is what ``build_model`` and ``from_pretrained`` return. Its forward
follows one contract for every family::

    out = model(input_ids, attention_mask=None, token_type_ids=None, labels=None)
    out.last_hidden_state            # [B, S, H]
    out.mlm_logits                   # [B, S, V] without labels (if the model has an MLM head)
    out.loss                         # with labels: the loss of the model's task head
    out["loss"], out[0], out.to_tuple(), out.keys()   # as transformers' ModelOutput

``labels`` trains whichever task head the model has, as in transformers' ``*ForSequence
Classification`` / ``*ForMaskedLM`` / ``*ForPreTraining`` classes: the classifier (class ids,
or float targets for regression) if there is one, else the MLM head (-100 = ignore). MLM labels
also have their own name, ``mlm_labels`` (a model with an MLM head *and* a classifier takes
them there); span QA takes ``start_positions`` / ``end_positions``; ``next_sentence_label``
the NSP head. ``task_labels`` is the classifier's own name for ``labels``.

``model.save_pretrained(dir)`` and ``LeanbertModel.from_pretrained(dir)`` are the methods
for :func:`leanbert.save_pretrained` and :func:`leanbert.from_pretrained`.

With MLM labels, MLM logits are computed only where they are needed: at the positions whose
label is not -100 (full-length labels), or at ``mlm_positions`` [B, P] with labels [B, P]
(the compact list the masking collator makes). This is the main saving of the MLM head
during pretraining: V = 30522 columns for ~15% of the tokens instead of all of them.

``last_hidden_state`` always has every position. Pretraining goes further than this
forward: the MLM objective (:mod:`leanbert.train.pretrain`) runs the last layer only at the
predicted positions. The losses themselves are in :mod:`leanbert.losses`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanbert import losses
from leanbert.models.base import EncoderConfigBase, LayerRouter, ModelOutput, gather_positions
from leanbert.models.heads import ClassifierHead, NSPHead, SpanQAHead

IGNORE_INDEX = losses.IGNORE_INDEX


class LeanbertModel(nn.Module):
    """Encoder + heads. Submodules: ``encoder``, and ``mlm``, ``nsp``, ``classifier``,
    ``span_qa`` for the heads in ``config.heads`` (None otherwise)."""

    def __init__(self, config: EncoderConfigBase) -> None:
        super().__init__()
        from leanbert.models.registry import family

        fam = family(config.model_type)
        self.config = config
        self.encoder = fam.encoder_cls(config)
        hidden = self.encoder.hidden_size
        heads = set(config.heads)
        self.mlm = fam.mlm_head_cls(config) if "mlm" in heads else None
        self.nsp = NSPHead(hidden) if "nsp" in heads else None
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = getattr(config, "hidden_dropout", 0.1)
        n_out = 1 if config.problem_type == "regression" else config.num_labels
        self.classifier = ClassifierHead(hidden, n_out, dropout) if "classifier" in heads else None
        self.span_qa = SpanQAHead(hidden) if "span_qa" in heads else None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def heads(self) -> list[str]:
        return list(self.config.heads)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for p in self.encoder.embeddings.parameters():
                params.pop(id(p), None)
        return sum(p.numel() for p in params.values())

    def mlm_decoder_weight(self) -> torch.Tensor:
        return self.encoder.embeddings.word.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        mlm_labels: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        task_labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        router: LayerRouter | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        packed: bool = False,
    ) -> ModelOutput:
        if labels is not None:
            mlm_labels, task_labels = self._route_labels(labels, mlm_labels, task_labels)
        if mlm_labels is not None and mlm_positions is not None and mlm_positions.shape != mlm_labels.shape:
            raise ValueError("mlm_positions and labels must have the same shape [batch, predictions]")
        enc = self.encoder(
            input_ids,
            attention_mask,
            token_type_ids,
            router=router,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            packed=packed,
        )
        last = enc.last_hidden_state
        pooled = enc.pooled_output if enc.pooled_output is not None else last[:, 0]
        out = ModelOutput(
            last_hidden_state=last,
            pooled_output=enc.pooled_output,
            hidden_states=enc.hidden_states,
            attention_scores=enc.attention_scores,
            attention_probs=enc.attention_probs,
        )
        if output_hidden_states:
            out.extras["embedding_output"] = enc.embedding_output
        terms = []
        if self.mlm is not None:
            if mlm_labels is None:
                hidden = last if mlm_positions is None else gather_positions(last, mlm_positions)
                out.mlm_logits = self.mlm(hidden, self.mlm_decoder_weight())
            else:
                self._mlm_loss(out, last, mlm_labels, mlm_positions)
                terms.append(out.mlm_loss)
        elif mlm_labels is not None:
            raise ValueError("MLM labels were given but this model has no MLM head")
        if self.nsp is not None:
            out.nsp_logits = self.nsp(pooled)
            if next_sentence_label is not None:
                out.nsp_loss = losses.mean(losses.sentence_pair_losses(out.nsp_logits, next_sentence_label))
                terms.append(out.nsp_loss)
        if self.classifier is not None:
            out.logits = self.classifier(pooled)
            if task_labels is not None:
                regression = self.config.problem_type == "regression"
                out.task_loss = losses.mean(losses.sequence_losses(out.logits, task_labels, regression))
                terms.append(out.task_loss)
        if self.span_qa is not None:
            out.start_logits, out.end_logits = self.span_qa(last)
            if start_positions is not None and end_positions is not None:
                per_example, valid = losses.span_losses(out.start_logits, out.end_logits, start_positions, end_positions)
                out.task_loss = losses.mean(per_example, valid.sum())
                terms.append(out.task_loss)
        if terms:
            out.loss = terms[0] if len(terms) == 1 else torch.stack(terms).sum()
        return out

    def _route_labels(self, labels: torch.Tensor, mlm_labels: torch.Tensor | None,
                      task_labels: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(mlm_labels, task_labels) once ``labels`` went to the model's task head."""
        if self.classifier is not None:
            if task_labels is not None:
                raise ValueError("give the classifier's labels once: labels= or task_labels=, not both")
            return mlm_labels, labels
        if self.mlm is not None:
            if mlm_labels is not None:
                raise ValueError("give the MLM labels once: labels= or mlm_labels=, not both")
            return labels, task_labels
        if self.span_qa is not None:
            raise ValueError("a span-QA model trains on start_positions= and end_positions=, not labels=")
        raise ValueError(f"labels= needs a classifier or an MLM head; this model has heads {self.heads or 'none'}")

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> Path:
        """Write this model as a leanbert checkpoint directory (safetensors + config.json, with
        the tokenizer of the directory it was loaded from); the keyword arguments are those of
        :func:`leanbert.save_pretrained` (``tokenizer_dir``, ``metadata``, ``overwrite``)."""
        import leanbert  # the public API resolves the checkpoint module lazily: no import circle

        return leanbert.save_pretrained(self, path, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> LeanbertModel:
        """Load a leanbert checkpoint or a transformers ``save_pretrained`` directory; keyword
        arguments as :func:`leanbert.from_pretrained` (``heads``, ``new_heads``, ``device``,
        ``dtype``, config overrides such as ``num_labels=3``)."""
        import leanbert

        return leanbert.from_pretrained(path, **kwargs)

    def _mlm_loss(
        self, out: ModelOutput, last: torch.Tensor, labels: torch.Tensor, mlm_positions: torch.Tensor | None
    ) -> None:
        """Logits and per-token cross entropy only at the prediction positions."""
        if mlm_positions is not None:
            # Compact list [B, P]: padded slots carry label -100; they are computed (fixed
            # shapes, no host sync) but ignored by the loss.
            hidden = gather_positions(last, mlm_positions)
            flat_labels = labels.reshape(-1)
        else:
            if labels.shape != last.shape[:2]:
                raise ValueError("labels must have shape [batch, seq_len] (or pass mlm_positions)")
            selected = labels != losses.IGNORE_INDEX
            hidden = last[selected]
            flat_labels = labels[selected]
        logits = self.mlm(hidden, self.mlm_decoder_weight())
        token_loss = losses.mlm_token_losses(logits, flat_labels)
        out.mlm_loss = losses.mean(token_loss, losses.prediction_count(flat_labels))
        out.mlm_logits = logits
        out.mlm_token_loss = token_loss
        out.mlm_label_ids = flat_labels
