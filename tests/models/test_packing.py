"""Packed real tokens (models.base.Packing): the layers run on the N real tokens of a padded
batch, attention on the padded layout; every real position gets the padded path's values."""

from __future__ import annotations

import pytest
import torch

import leanbert
from leanbert.models.base import Packing


def build(preset: str = "bert-tiny"):
    torch.manual_seed(0)
    return leanbert.build_model(preset, vocab_size=97, max_position_embeddings=64, heads=["classifier"],
                                hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0)


def test_pack_and_unpack_are_inverse_on_real_tokens(padded_batch):
    ids, mask = padded_batch
    packing = Packing.of(mask)
    x = torch.randn(3, 12, 4)
    packed = packing.pack(x)
    assert packed.shape == (int(mask.sum()), 4)
    back = packing.unpack(packed)
    assert torch.equal(back[mask.bool()], x[mask.bool()]) and not back[~mask.bool()].any()


def test_a_batch_without_padding_is_not_packed():
    assert Packing.of(torch.ones(2, 5, dtype=torch.long)) is None


@pytest.mark.parametrize("speedups", [False, True])
def test_packed_bert_gives_the_padded_values_and_gradients(padded_batch, speedups):
    model = build().train()
    if speedups:
        leanbert.optimize(model)
    ids, mask = padded_batch
    labels = torch.tensor([0, 1, 1])
    results = []
    for packed in (False, True):
        model.zero_grad(set_to_none=True)
        out = model(ids, mask, task_labels=labels, packed=packed)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (padded, g_padded), (packed, g_packed) = results
    real = mask.bool()
    torch.testing.assert_close(packed.last_hidden_state[real], padded.last_hidden_state[real], atol=1e-6, rtol=1e-5)
    assert not packed.last_hidden_state[~real].any()
    torch.testing.assert_close(packed.logits, padded.logits, atol=1e-6, rtol=1e-5)
    for name in g_padded:
        torch.testing.assert_close(g_packed[name], g_padded[name], atol=1e-6, rtol=1e-5, msg=name)


def test_families_without_packing_run_padded(padded_batch):
    model = build("mobilebert-test").eval()
    ids, mask = padded_batch
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, packed=True).logits, model(ids, mask).logits)
