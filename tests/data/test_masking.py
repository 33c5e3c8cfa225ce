"""Masking collator: statistics over many batches, compact form, determinism, bad options."""

from __future__ import annotations

import numpy as np
import pytest

from leanbert.data.loader import ShardLoader
from leanbert.data.masking import MaskingCollator
from leanbert.errors import ConfigError

SPECIAL = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}


def _rows(data_dir, n=64):
    rows, labels, _ = next(iter(ShardLoader(data_dir, batch_size=n, shuffle=False, prefetch=0)))
    return rows, labels


def test_masking_statistics_over_many_batches(pairs_dir):
    collator = MaskingCollator.from_prepared(pairs_dir)
    loader = ShardLoader(pairs_dir, batch_size=32, prefetch=0)
    chosen = maskable = as_mask = as_random = kept = 0
    for step, (rows, labels, index) in enumerate(loader):
        if step == 60:
            break
        batch = collator(rows, labels, index)
        pos, lab = batch["mlm_positions"].numpy(), batch["labels"].numpy()
        valid = lab != -100
        original = rows[np.arange(len(rows))[:, None], pos][valid]
        new = batch["input_ids"].numpy()[np.arange(len(rows))[:, None], pos][valid]
        assert (lab[valid] == original).all()
        assert not np.isin(original, list(SPECIAL.values())).any()  # never special tokens or padding
        changed = batch["input_ids"].numpy() != rows
        assert changed.sum() <= valid.sum() and not changed[rows == 0].any()
        chosen += valid.sum()
        maskable += (~np.isin(rows, list(SPECIAL.values()))).sum()
        as_mask += (new == 4).sum()
        as_random += ((new != 4) & (new != original)).sum()
        kept += (new == original).sum()
    assert abs(chosen / maskable - 0.15) < 0.01
    assert abs(as_mask / chosen - 0.8) < 0.02
    assert abs(as_random / chosen - 0.1) < 0.015
    assert abs(kept / chosen - 0.1) < 0.015


def test_compact_predictions_are_capped_and_padded_with_ignore(packed_dir):
    rows, _ = _rows(packed_dir)
    batch = MaskingCollator(2000, SPECIAL, seq_length=128, max_predictions=10)(rows, None, 0)
    assert batch["mlm_positions"].shape == batch["labels"].shape == (64, 10)
    maskable = (~np.isin(rows, list(SPECIAL.values()))).sum(axis=1)
    wanted = np.maximum(1, np.rint(0.15 * maskable))  # BERT: max(1, round(rate * n))
    assert (batch["labels"] != -100).sum(dim=1).tolist() == np.minimum(10, wanted).tolist()
    default = MaskingCollator(2000, SPECIAL, seq_length=128)(rows, None, 0)
    assert default["mlm_positions"].shape == (64, 20)  # ceil(0.15 * 128), as BERT's 20
    assert (default["labels"] != -100).sum(dim=1).tolist() == np.minimum(20, wanted).tolist()
    unused = default["labels"] == -100
    assert (default["mlm_positions"][unused] == 0).all()


def test_masks_are_fresh_per_sample_index_and_reproducible(packed_dir):
    rows, _ = _rows(packed_dir)
    collator = MaskingCollator(2000, SPECIAL, seq_length=128, seed=3)
    a, b, c = collator(rows, None, 0), collator(rows, None, 64), collator(rows, None, 0)
    assert not np.array_equal(a["mlm_positions"].numpy(), b["mlm_positions"].numpy())
    assert np.array_equal(a["input_ids"].numpy(), c["input_ids"].numpy())


def test_whole_word_masking_masks_every_piece_of_a_word(pairs_dir):
    from leanbert.data.masking import continuation_table
    from leanbert.data.tokenizer import read_vocab

    rows, labels = _rows(pairs_dir)
    cont = continuation_table(read_vocab(pairs_dir / "tokenizer" / "vocab.txt"))
    batch = MaskingCollator.from_prepared(pairs_dir, whole_word=True)(rows, labels, 0)
    chosen = np.zeros(rows.shape, bool)
    pos, lab = batch["mlm_positions"].numpy(), batch["labels"].numpy()
    for r in range(len(rows)):
        chosen[r, pos[r][lab[r] != -100]] = True
    # token j+1 continues the word of token j (a "##" piece right after a special token, from a
    # segment cut in mid-word, is a word of its own)
    word_pieces = cont[rows[:, 1:]] & ~np.isin(rows[:, :-1], list(SPECIAL.values()))
    assert (chosen[:, 1:][word_pieces] == chosen[:, :-1][word_pieces]).all()
    assert word_pieces[chosen[:, 1:]].any()  # some multi-piece words were masked
    maskable = (~np.isin(rows, list(SPECIAL.values()))).sum(1)
    budget = np.minimum(np.maximum(1, np.rint(maskable * 0.15)), batch["labels"].shape[1])
    assert (chosen.sum(1) <= budget).all()  # whole words are taken only while they fit the budget
    assert 0.12 < chosen.sum() / maskable.sum() <= budget.sum() / maskable.sum()


def test_pairs_get_segment_ids_and_next_sentence_labels(pairs_dir):
    rows, labels = _rows(pairs_dir, 8)
    batch = MaskingCollator.from_prepared(pairs_dir)(rows, labels, 0)
    types = batch["token_type_ids"].numpy()
    for r, row in enumerate(rows):
        first, second = np.flatnonzero(row == 3)[:2]
        assert (types[r, : first + 1] == 0).all() and (types[r, first + 1: second + 1] == 1).all()
        assert (types[r, second + 1:] == 0).all()
    assert batch["next_sentence_label"].tolist() == labels.tolist()
    assert batch.num_tokens == int((rows != 0).sum())


def test_attention_mask_only_when_there_is_padding(packed_dir, pairs_dir):
    rows, _ = _rows(packed_dir)
    rows = rows[(rows != 0).all(axis=1)]  # packed data: only the split's last example has padding
    assert MaskingCollator(2000, SPECIAL, seq_length=128)(rows, None, 0)["attention_mask"] is None
    prow, plab = _rows(pairs_dir)
    mask = MaskingCollator.from_prepared(pairs_dir)(prow, plab, 0)["attention_mask"]
    assert mask.dtype.is_floating_point is False and mask.numpy().tolist() == (prow != 0).astype(int).tolist()


def test_batch_feeds_the_model(pairs_dir):
    from leanbert.models import build_model

    rows, labels = _rows(pairs_dir, 4)
    batch = MaskingCollator.from_prepared(pairs_dir)(rows, labels, 0)
    model = build_model("bert-tiny", vocab_size=2000, heads=["mlm", "nsp"])
    out = model(**batch)
    assert out.loss is not None and bool(out.loss.isfinite())


@pytest.mark.parametrize("rate", [0.0, 1.0, 1.5, -0.1])
def test_mask_rate_outside_zero_one_is_a_config_error(rate):
    with pytest.raises(ConfigError, match="mask rate must be between 0 and 1"):
        MaskingCollator(2000, SPECIAL, seq_length=128, mask_rate=rate)


def test_replacement_probabilities_over_one_are_a_config_error():
    with pytest.raises(ConfigError, match="sum to at most 1"):
        MaskingCollator(2000, SPECIAL, seq_length=128, mask_token_prob=0.9, random_token_prob=0.2)


def test_a_sample_gets_the_same_mask_in_any_batch(pairs_dir):
    rows, labels = _rows(pairs_dir, 8)
    collate = MaskingCollator.from_prepared(pairs_dir, seed=3)
    whole = collate(rows, labels, 100)          # samples 100..107 in one batch
    tail = collate(rows[5:], labels[5:], 105)   # samples 105..107 in a micro-batch of their own
    for key in ("input_ids", "mlm_positions", "labels"):
        assert np.array_equal(whole[key].numpy()[5:], tail[key].numpy())
