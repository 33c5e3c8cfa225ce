"""Task heads shared by every encoder family (the MLM head is family-specific).

- :class:`NSPHead`: next-sentence (or sentence-order) prediction on the pooled [CLS] state
  (Devlin et al. 2019, Sec. 3.1 Task #2).
- :class:`ClassifierHead`: sequence classification or regression (GLUE), dropout + linear
  on the pooled state as in BERT's fine-tuning recipe (Sec. 4.1).
- :class:`SpanQAHead`: start/end logits per token for extractive QA (SQuAD, Sec. 4.2).
"""

from __future__ import annotations

import torch
from torch import nn


class NSPHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)


class ClassifierHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


class SpanQAHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.qa_outputs(hidden).unbind(-1)
        return start, end
