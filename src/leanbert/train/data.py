"""The pretraining data source: prepared shards -> masked batches for the trainer.

A thin layer over :class:`leanbert.data.loader.ShardLoader` and
:class:`leanbert.data.masking.MaskingCollator` that reads the prepared directory's manifest
(tokenizer, vocabulary size, special ids, sequence length, packed or paired mode) and hands
the trainer an endless stream positioned at a global sample index.

Masks are drawn per sample from (seed, global sample index), so a resumed run sees the same
masks, and so does a run with another number of processes or another micro-batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from leanbert.data.loader import ShardLoader
from leanbert.data.masking import MaskingCollator
from leanbert.data.shards import read_manifest
from leanbert.train.config import DataSection


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the columns that are padding in every row (no compute is spent on them).

    Prediction positions always point at real tokens, so they stay valid."""
    mask = batch.get("attention_mask")
    if mask is None:
        return batch
    length = int(mask.sum(1).max())
    if length == mask.shape[1]:
        return batch
    out = dict(batch)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if out.get(key) is not None:
            out[key] = out[key][:, :length].contiguous()
    return out


class PretrainData:
    def __init__(self, data_dir: str | Path, cfg: DataSection, seed: int = 0) -> None:
        self.dir = Path(data_dir)
        self.manifest = read_manifest(self.dir)
        self.cfg = cfg
        self.seed = seed
        tok = self.manifest["tokenizer"]
        self.vocab_size = int(tok["vocab_size"])
        self.special_ids = dict(tok["special_ids"])
        self.tokenizer_dir = self.dir / tok.get("dir", "tokenizer")
        self.seq_length = int(self.manifest["seq_length"])
        self.has_pairs = self.manifest["mode"] == "pairs"
        self.has_eval = cfg.eval_split in self.manifest["splits"] and \
            self.manifest["splits"][cfg.eval_split].get("examples", 0) > 0
        self.allow_ids = [self.special_ids[t] for t in ("[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in self.special_ids]
        self.deny_ids = [self.special_ids["[PAD]"]]

    def collator(self, seed: int) -> MaskingCollator:
        return MaskingCollator.from_prepared(
            self.dir, mask_rate=self.cfg.mask_rate, max_predictions=self.cfg.max_predictions,
            whole_word=self.cfg.whole_word_masking, seed=seed,
        )

    def train_batches(self, *, start_sample: int, micro_batch_size: int, rank: int,
                      world_size: int) -> Iterator[dict[str, torch.Tensor]]:
        loader = ShardLoader(self.dir, "train", batch_size=micro_batch_size, collator=self.collator(self.seed),
                             rank=rank, world_size=world_size, start_index=start_sample, shuffle=True,
                             seed=self.seed, loop=True)
        for batch in loader:
            yield trim_padding({k: v for k, v in batch.items() if v is not None})

    def eval_batches(self, n: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """The first ``n`` batches of the held-out split, masked identically every time."""
        loader = ShardLoader(self.dir, self.cfg.eval_split, batch_size=batch_size,
                             collator=self.collator(self.seed + 1_000_003), shuffle=False, loop=False,
                             drop_last=False, prefetch=0)
        out = []
        for batch in loader:
            out.append(trim_padding({k: v for k, v in batch.items() if v is not None}))
            if len(out) >= n:
                break
        return out
