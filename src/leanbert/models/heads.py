"""Task heads shared by every encoder family (the MLM head is family-specific).

The heads are tiny, so they always run in fp32, also under bf16/fp16 autocast: a [CLS] state
beyond fp16's range (MobileBERT's NoNorm does not bound activations) cannot overflow them.

- :class:`NSPHead`: next-sentence (or sentence-order) prediction on the pooled [CLS] state
  (Devlin et al. 2019, Sec. 3.1 Task #2).
- :class:`ClassifierHead`: sequence classification or regression (GLUE), dropout + linear
  on the pooled state as in BERT's fine-tuning recipe (Sec. 4.1).
- :class:`SpanQAHead`: start/end logits per token for extractive QA (SQuAD, Sec. 4.2).
"""

from __future__ import annotations

import torch
from torch import nn


def _fp32(x: torch.Tensor):
    """(x in fp32, a context that disables autocast) for a head's forward pass."""
    return x.float(), torch.autocast(device_type=x.device.type, enabled=False)


class NSPHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x, no_autocast = _fp32(pooled)
        with no_autocast:
            return self.classifier(x)


class ClassifierHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x, no_autocast = _fp32(pooled)
        with no_autocast:
            return self.classifier(self.dropout(x))


class SpanQAHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, no_autocast = _fp32(hidden)
        with no_autocast:
            start, end = self.qa_outputs(x).unbind(-1)
        return start, end
