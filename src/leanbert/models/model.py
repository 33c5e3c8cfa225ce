"""An encoder of any family plus the heads its config names: the model users hold.

``LeanbertModel(config)`` is what ``build_model`` and ``from_pretrained`` return. Its forward
follows one contract for every family::

    out = model(input_ids, attention_mask=None, token_type_ids=None, labels=None)
    out.last_hidden_state            # [B, S, H]
    out.mlm_logits                   # [B, S, V] without labels (if the model has an MLM head)
    out.loss                         # with MLM labels (-100 = ignore)

With labels, MLM logits are computed only where they are needed: at the positions whose
label is not -100 (full-length labels), or at ``mlm_positions`` [B, P] with labels [B, P]
(the compact list the masking collator makes). This is the main saving of the MLM head
during pretraining: V = 30522 columns for ~15% of the tokens instead of all of them.

With compact ``mlm_positions`` the last layer also runs only where its output is used
(:class:`~leanbert.models.base.LastLayerQueries`: queries at the predicted positions and
[CLS], keys and values from all tokens); ``last_hidden_state`` then holds those rows
``[B, (1 +) P, H]``, their positions in ``extras["last_hidden_positions"]``. Same losses and
gradients; set ``model.sparse_last_layer = False`` for full-length states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanbert.models.base import (
    EncoderConfigBase,
    LastLayerQueries,
    LayerRouter,
    ModelOutput,
    gather_positions,
)
from leanbert.models.heads import ClassifierHead, NSPHead, SpanQAHead

IGNORE_INDEX = -100


class LeanbertModel(nn.Module):
    """Encoder + heads. Submodules: ``encoder``, and ``mlm``, ``nsp``, ``classifier``,
    ``span_qa`` for the heads in ``config.heads`` (None otherwise)."""

    def __init__(self, config: EncoderConfigBase) -> None:
        super().__init__()
        from leanbert.models import family

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
        self.sparse_last_layer = True
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

    def last_layer_rows(self, num_predictions: int) -> int | None:
        """How many rows the last layer runs on in MLM pretraining with ``num_predictions``
        compact prediction slots (None: all tokens; see the module docstring)."""
        if not self.sparse_last_layer or self.mlm is None or self.span_qa is not None:
            return None
        needs_cls = self.encoder.pooler is not None or self.nsp is not None or self.classifier is not None
        return num_predictions + int(needs_cls)

    def mlm_decoder_weight(self) -> torch.Tensor:
        return self.encoder.embeddings.word.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        mlm_positions: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        task_labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        router: LayerRouter | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        if labels is not None and mlm_positions is not None and mlm_positions.shape != labels.shape:
            raise ValueError("mlm_positions and labels must have the same shape [batch, predictions]")
        sparse = None
        if labels is not None and mlm_positions is not None and not output_hidden_states and not output_attentions:
            n_rows = self.last_layer_rows(mlm_positions.shape[1])
            if n_rows is not None:
                rows = mlm_positions
                if n_rows > rows.shape[1]:  # [CLS] first, for the pooled output
                    rows = torch.cat([torch.zeros_like(rows[:, :1]), rows], dim=1)
                sparse = LastLayerQueries(rows, len(self.encoder.layers) - 1, input_ids.shape[1], router)
                router = sparse
        enc = self.encoder(
            input_ids,
            attention_mask,
            token_type_ids,
            router=router,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
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
        losses = []
        if self.mlm is not None:
            if labels is None:
                if mlm_positions is None:
                    out.mlm_logits = self.mlm(last, self.mlm_decoder_weight())
                else:
                    out.mlm_logits = self.mlm(gather_positions(last, mlm_positions), self.mlm_decoder_weight())
            elif sparse is not None and sparse.applied:  # last holds the rows: ([CLS],) predictions
                out.extras["last_hidden_positions"] = sparse.query_index
                offset = sparse.query_index.shape[1] - mlm_positions.shape[1]
                self._mlm_loss(out, last[:, offset:], labels, None, compact=True)
                losses.append(out.mlm_loss)
            else:
                self._mlm_loss(out, last, labels, mlm_positions)
                losses.append(out.mlm_loss)
        elif labels is not None:
            raise ValueError("MLM labels were given but this model has no MLM head")
        if self.nsp is not None:
            out.nsp_logits = self.nsp(pooled)
            if next_sentence_label is not None:
                out.nsp_loss = F.cross_entropy(out.nsp_logits.float(), next_sentence_label.view(-1))
                losses.append(out.nsp_loss)
        if self.classifier is not None:
            out.logits = self.classifier(pooled)
            if task_labels is not None:
                if self.config.problem_type == "regression":
                    out.task_loss = F.mse_loss(out.logits.float().view(-1), task_labels.float().view(-1))
                else:
                    out.task_loss = F.cross_entropy(out.logits.float(), task_labels.view(-1))
                losses.append(out.task_loss)
        if self.span_qa is not None:
            out.start_logits, out.end_logits = self.span_qa(last)
            if start_positions is not None and end_positions is not None:
                seq_len = last.shape[1]
                start = start_positions.clamp(0, seq_len)
                end = end_positions.clamp(0, seq_len)
                qa_loss = (
                    F.cross_entropy(out.start_logits.float(), start, ignore_index=seq_len)
                    + F.cross_entropy(out.end_logits.float(), end, ignore_index=seq_len)
                ) / 2
                out.task_loss = qa_loss
                losses.append(qa_loss)
        if losses:
            out.loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        return out

    def _mlm_loss(
        self, out: ModelOutput, last: torch.Tensor, labels: torch.Tensor, mlm_positions: torch.Tensor | None,
        compact: bool = False,
    ) -> None:
        """Logits and per-token cross entropy only at the prediction positions (``compact``:
        ``last`` already holds exactly those rows, [B, P, H])."""
        if compact:
            hidden = last
            flat_labels = labels.reshape(-1)
        elif mlm_positions is not None:
            # Compact list [B, P]: padded slots carry label -100; they are computed (fixed
            # shapes, no host sync) but ignored by the loss.
            hidden = gather_positions(last, mlm_positions)
            flat_labels = labels.reshape(-1)
        else:
            if labels.shape != last.shape[:2]:
                raise ValueError("labels must have shape [batch, seq_len] (or pass mlm_positions)")
            selected = labels != IGNORE_INDEX
            hidden = last[selected]
            flat_labels = labels[selected]
        logits = self.mlm(hidden, self.mlm_decoder_weight())
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()
        token_loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="none")
        n_valid = (flat_labels != IGNORE_INDEX).sum()
        out.mlm_loss = token_loss.sum() / n_valid.clamp(min=1)
        out.mlm_logits = logits
        out.mlm_token_loss = token_loss
        out.mlm_label_ids = flat_labels
