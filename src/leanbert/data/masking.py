"""Dynamic masking for the masked-language-model objective.

Method card
-----------
What: BERT's MLM corruption (Devlin et al. 2019, Sec. 3.1 "Task #1" and Appendix A.1):
choose ``mask_rate`` (15%) of the tokens of each sequence; replace 80% of them by [MASK],
10% by a random token and keep 10% unchanged; predict the original tokens.
Masks are drawn afresh every time a sequence is seen ("dynamic masking", RoBERTa, Liu et
al. 2019, Sec. 4.1). Each row's random numbers come from its own generator seeded by (seed,
global sample index of that row), so a sample gets the same mask whichever batch, micro-batch
or data-parallel rank it lands in: a resumed run, or one with another number of processes or
another micro-batch size, sees exactly the masks it would have seen.

Knobs: ``mask_rate``; ``mask_token_prob`` / ``random_token_prob`` (0.8 / 0.1);
``max_predictions`` (BERT's ``max_predictions_per_seq``: 20 for 128 tokens, 76-80 for 512);
``whole_word`` (whole-word masking, as in BERT's later release: all WordPiece pieces of a
chosen word are masked together).

Details: the number of predictions per sequence is ``min(max_predictions, max(1,
round(mask_rate * n)))`` with ``n`` the maskable tokens, as in BERT's
``create_pretraining_data.py``. Special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) are never
chosen. Random replacements are drawn from the non-special vocabulary. The MLM head gets a
compact list: ``mlm_positions`` [B, P] sorted ascending and ``labels`` [B, P] with -100 in
unused slots (their position is 0, a [CLS], never a prediction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from leanbert.errors import ConfigError

IGNORE_INDEX = -100


class MaskedBatch(dict):
    """The model's keyword arguments (``model(**batch)``), plus bookkeeping attributes.

    Keys: ``input_ids`` [B,S] int64, ``attention_mask`` [B,S] int64 or None (no padding in the
    batch), ``token_type_ids`` [B,S] int64, ``mlm_positions`` [B,P] int64, ``labels`` [B,P]
    int64 (-100 = unused slot), and ``next_sentence_label`` [B] int64 for sentence-pair data.
    Attributes: ``num_tokens`` (real, non-pad tokens), ``num_predictions`` (real prediction
    slots), ``sample_index`` (global index of the first sample of this rank's batch).
    """

    num_tokens: int = 0
    num_predictions: int = 0
    sample_index: int = 0

    def to(self, device: Any, non_blocking: bool = False) -> MaskedBatch:
        out = MaskedBatch(
            {k: (v.to(device, non_blocking=non_blocking) if v is not None else None) for k, v in self.items()}
        )
        out.num_tokens, out.num_predictions, out.sample_index = self.num_tokens, self.num_predictions, self.sample_index
        return out


class PerSampleRandom:
    """Random draws for a batch whose row ``i`` depends only on (seed, first_index + i).

    Every draw asks each row's own generator for that row's values, in the same order for every
    batch, so the values a sample gets do not depend on the batch it is in.
    """

    def __init__(self, seed: int, first_index: int, rows: int) -> None:
        self.generators = [np.random.default_rng([seed, first_index + i]) for i in range(rows)]

    def random(self, shape: tuple[int, int]) -> np.ndarray:
        rows, width = shape
        if rows == 0:
            return np.empty(shape)
        return np.stack([g.random(width) for g in self.generators])

    def integers(self, low: int, high: int, shape: tuple[int, int]) -> np.ndarray:
        rows, width = shape
        if rows == 0:
            return np.empty(shape, np.int64)
        return np.stack([g.integers(low, high, width) for g in self.generators])


class MaskingCollator:
    """Turns token rows (from the shards) into a :class:`MaskedBatch` with fresh masks."""

    def __init__(
        self,
        vocab_size: int,
        special_ids: Mapping[str, int],
        *,
        seq_length: int,
        mask_rate: float = 0.15,
        max_predictions: int | None = None,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        whole_word: bool = False,
        continuation: np.ndarray | None = None,
        pairs: bool = False,
        seed: int = 0,
    ):
        if not 0.0 < mask_rate < 1.0:
            raise ConfigError(f"mask rate must be between 0 and 1 (exclusive), got {mask_rate}")
        if not (0.0 <= mask_token_prob <= 1.0 and 0.0 <= random_token_prob <= 1.0
                and mask_token_prob + random_token_prob <= 1.0):
            raise ConfigError(
                f"mask/random token probabilities must be in [0, 1] and sum to at most 1, got "
                f"{mask_token_prob} and {random_token_prob}"
            )
        if seq_length < 8:
            raise ConfigError(f"sequence length must be at least 8, got {seq_length}")
        if max_predictions is None:
            max_predictions = math.ceil(mask_rate * seq_length)
        if not 1 <= max_predictions <= seq_length:
            raise ConfigError(f"max predictions must be between 1 and the sequence length {seq_length}, got {max_predictions}")
        if whole_word and continuation is None:
            raise ConfigError("whole-word masking needs the vocabulary (which ids continue a word with '##')")
        self.vocab_size = vocab_size
        self.special = dict(special_ids)
        self.pad_id = self.special["[PAD]"]
        self.mask_id = self.special["[MASK]"]
        self.sep_id = self.special["[SEP]"]
        self.seq_length = seq_length
        self.mask_rate = mask_rate
        self.max_predictions = max_predictions
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        self.whole_word = whole_word
        self.continuation = continuation
        self.pairs = pairs
        self.seed = seed
        special_table = np.zeros(vocab_size, bool)
        special_table[list(self.special.values())] = True
        self._special_table = special_table
        self._normal_ids = np.flatnonzero(~special_table)

    @classmethod
    def from_prepared(cls, data_dir, **kwargs: Any) -> MaskingCollator:
        """A collator matching a prepared directory (vocabulary, length, pairs or not)."""
        from pathlib import Path

        from leanbert.data.shards import read_manifest
        from leanbert.data.tokenizer import read_vocab

        manifest = read_manifest(data_dir)
        tok = manifest["tokenizer"]
        continuation = None
        if kwargs.get("whole_word"):
            continuation = continuation_table(read_vocab(Path(data_dir) / tok["dir"] / "vocab.txt"), tok["vocab_size"])
        return cls(
            tok["vocab_size"],
            tok["special_ids"],
            seq_length=manifest["seq_length"],
            pairs=manifest["mode"] == "pairs",
            continuation=continuation,
            **kwargs,
        )

    def num_to_predict(self, maskable: np.ndarray) -> np.ndarray:
        n = maskable.sum(axis=1)
        k = np.maximum(1, np.rint(n * self.mask_rate)).astype(np.int64)
        return np.minimum(np.minimum(k, n), self.max_predictions)

    def choose_positions(self, ids: np.ndarray, rng: PerSampleRandom) -> tuple[np.ndarray, np.ndarray]:
        """Positions to predict: ([B, P] sorted positions, [B, P] bool valid)."""
        B, S = ids.shape
        P = self.max_predictions
        maskable = ~self._special_table[ids]
        k = self.num_to_predict(maskable)
        if self.whole_word:
            # A word = a token not starting with "##" and the "##" tokens after it. Draw one
            # random priority per word; choose whole words in priority order while they fit.
            starts = ~self.continuation[ids] | ~maskable
            word = np.cumsum(starts, axis=1)  # word id per token (row-local)
            priority = rng.random((B, S + 1))[np.arange(B)[:, None], word]
            priority[~maskable] = np.inf
            order = np.lexsort((np.broadcast_to(np.arange(S), (B, S)), priority), axis=1)
            sorted_word = np.take_along_axis(word, order, 1)
            sorted_ok = np.take_along_axis(maskable, order, 1)
            new_word = np.ones((B, S), bool)
            new_word[:, 1:] = sorted_word[:, 1:] != sorted_word[:, :-1]
            # size of each word (in its sorted run) and whether the whole word still fits
            run_id = np.cumsum(new_word, axis=1) - 1
            sizes = np.zeros((B, S + 1), np.int64)
            np.add.at(sizes, (np.arange(B)[:, None], run_id), 1)
            word_size = np.take_along_axis(sizes, run_id, 1)
            end_count = np.cumsum(np.where(new_word, word_size, 0) * sorted_ok, axis=1)
            chosen_sorted = sorted_ok & (end_count <= k[:, None])
            chosen = np.zeros((B, S), bool)
            np.put_along_axis(chosen, order, chosen_sorted, 1)
        else:
            priority = rng.random((B, S))
            priority[~maskable] = np.inf
            order = np.argsort(priority, axis=1, kind="stable")[:, :P]
            chosen = np.zeros((B, S), bool)
            take = np.arange(P)[None, :] < k[:, None]
            np.put_along_axis(chosen, order, take, 1)
        # Compact, sorted list of at most P positions per row.
        key = np.where(chosen, np.arange(S)[None, :], S)
        positions = np.sort(key, axis=1)[:, :P]
        valid = positions < S
        positions = np.where(valid, positions, 0)
        if positions.shape[1] < P:
            pad = P - positions.shape[1]
            positions = np.pad(positions, ((0, 0), (0, pad)))
            valid = np.pad(valid, ((0, 0), (0, pad)))
        return positions, valid

    def __call__(self, rows: np.ndarray, next_sentence: np.ndarray | None = None, sample_index: int = 0) -> MaskedBatch:
        """Mask ``rows`` [B, S] (token ids, [PAD]=0); ``sample_index`` seeds this batch's masks."""
        import torch

        rng = PerSampleRandom(self.seed, int(sample_index), len(rows))
        ids = np.asarray(rows).astype(np.int64)
        B, S = ids.shape
        positions, valid = self.choose_positions(ids, rng)
        rows_idx = np.arange(B)[:, None]
        labels = np.where(valid, ids[rows_idx, positions], IGNORE_INDEX)
        # 80% [MASK], 10% random token, 10% unchanged (BERT Sec. 3.1).
        u = rng.random(positions.shape)
        to_mask = valid & (u < self.mask_token_prob)
        to_random = valid & (u >= self.mask_token_prob) & (u < self.mask_token_prob + self.random_token_prob)
        randoms = self._normal_ids[rng.integers(0, len(self._normal_ids), positions.shape)]
        new = np.where(to_mask, self.mask_id, np.where(to_random, randoms, ids[rows_idx, positions]))
        inputs = ids.copy()
        inputs[rows_idx, positions] = np.where(valid, new, ids[rows_idx, positions])

        is_pad = ids == self.pad_id
        if self.pairs:
            # Segment B starts after the first [SEP] and runs to the second one (BERT's
            # segment ids: [CLS] A [SEP] -> 0, B [SEP] -> 1, padding -> 0).
            sep = ids == self.sep_id
            after_first_sep = (np.cumsum(sep, axis=1) - sep) >= 1
            token_type = (after_first_sep & ~is_pad).astype(np.int64)
        else:
            token_type = np.zeros_like(ids)
        batch = MaskedBatch(
            input_ids=torch.from_numpy(inputs),
            attention_mask=torch.from_numpy((~is_pad).astype(np.int64)) if is_pad.any() else None,
            token_type_ids=torch.from_numpy(token_type),
            mlm_positions=torch.from_numpy(positions.astype(np.int64)),
            labels=torch.from_numpy(labels.astype(np.int64)),
        )
        if self.pairs:
            if next_sentence is None:
                raise ConfigError("sentence-pair data needs next-sentence labels")
            batch["next_sentence_label"] = torch.from_numpy(np.asarray(next_sentence).astype(np.int64))
        batch.num_tokens = int(B * S - is_pad.sum())
        batch.num_predictions = int(valid.sum())
        batch.sample_index = int(sample_index)
        return batch


def continuation_table(vocab: Mapping[str, int] | Sequence[str], vocab_size: int | None = None) -> np.ndarray:
    """Boolean table: True for ids whose token continues a word (WordPiece ``##`` prefix)."""
    items = vocab.items() if isinstance(vocab, Mapping) else ((t, i) for i, t in enumerate(vocab))
    items = list(items)
    size = vocab_size or (max(i for _, i in items) + 1)
    table = np.zeros(size, bool)
    for token, i in items:
        if token.startswith("##") and len(token) > 2 and i < size:
            table[i] = True
    return table
