"""MLM pretraining runs the last layer only at the predicted positions (and [CLS]):
models.base.LastLayerQueries. Losses and gradients must equal the full computation."""

from __future__ import annotations

import pytest
import torch

import leanbert
from leanbert.algorithms.token_dropping import TokenDroppingRouter
from leanbert.train.flops import encoder_forward_flops, train_step_flops

VOCAB = 97
BERT = {"model_type": "bert", "vocab_size": VOCAB, "hidden_size": 32, "num_layers": 3, "num_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout": 0.0, "attention_dropout": 0.0}


def build(family: str, heads: list[str]):
    torch.manual_seed(0)
    if family == "bert":
        return leanbert.build_model({**BERT, "heads": heads, "use_pooler": "nsp" in heads})
    return leanbert.build_model("mobilebert-test", vocab_size=VOCAB, max_position_embeddings=64, heads=heads,
                                use_pooler="nsp" in heads, attention_dropout=0.0, hidden_dropout=0.0)


@pytest.fixture
def batch(padded_batch):
    ids, mask = padded_batch
    positions = torch.tensor([[2, 5, 9], [1, 7, 0], [3, 0, 0]])
    labels = torch.tensor([[11, 12, 13], [14, 15, -100], [16, -100, -100]])
    return ids, mask, positions, labels


def loss_and_grads(model, batch, sparse: bool, router=None):
    model.sparse_last_layer = sparse
    model.zero_grad(set_to_none=True)
    ids, mask, positions, labels = batch
    kw = {"next_sentence_label": torch.tensor([0, 1, 0])} if model.nsp is not None else {}
    out = model(ids, mask, labels=labels, mlm_positions=positions, router=router, **kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["bert", "mobilebert"])
@pytest.mark.parametrize("heads", [["mlm"], ["mlm", "nsp"]])
def test_losses_and_gradients_equal_the_full_last_layer(family, heads, batch):
    model = build(family, heads)
    full, g_full = loss_and_grads(model, batch, sparse=False)
    sparse, g_sparse = loss_and_grads(model, batch, sparse=True)
    torch.testing.assert_close(sparse.loss, full.loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sparse.mlm_token_loss, full.mlm_token_loss, atol=1e-6, rtol=1e-6)
    if "nsp" in heads:
        torch.testing.assert_close(sparse.nsp_logits, full.nsp_logits, atol=1e-6, rtol=1e-6)
    assert g_sparse.keys() == g_full.keys()
    for name in g_full:
        torch.testing.assert_close(g_sparse[name], g_full[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("heads, rows", [(["mlm"], 3), (["mlm", "nsp"], 4)])
def test_last_hidden_state_holds_the_predicted_rows_then(heads, rows, batch):
    model = build("bert", heads)
    out, _ = loss_and_grads(model, batch, sparse=True)
    assert out.last_hidden_state.shape == (3, rows, 32)
    assert out.extras["last_hidden_positions"].shape == (3, rows)
    assert model.last_layer_rows(3) == rows
    model.sparse_last_layer = False
    assert model.last_layer_rows(3) is None


def test_full_length_labels_or_inference_keep_every_row(batch):
    model = build("bert", ["mlm"]).eval()
    ids, mask, positions, labels = batch
    full_labels = torch.full_like(ids, -100).scatter_(1, positions, labels)
    assert model(ids, mask, labels=full_labels).last_hidden_state.shape == (3, 12, 32)
    assert model(ids, mask).last_hidden_state.shape == (3, 12, 32)


@pytest.mark.parametrize("end, applied", [(2, True), (3, False)])
def test_combines_with_token_dropping_when_the_last_layer_sees_every_token(end, applied, batch):
    model = build("bert", ["mlm"])
    kept = torch.tensor([[0, 2, 5, 9, 11], [0, 1, 4, 7, 8], [0, 3, 4, 6, 7]])

    def router():
        return TokenDroppingRouter(kept, start=1, end=end)

    full, g_full = loss_and_grads(model, batch, sparse=False, router=router())
    sparse, g_sparse = loss_and_grads(model, batch, sparse=True, router=router())
    assert (sparse.last_hidden_state.shape[1] == 3) is applied
    torch.testing.assert_close(sparse.loss, full.loss, atol=1e-6, rtol=1e-6)
    for name in g_full:
        torch.testing.assert_close(g_sparse[name], g_full[name], atol=1e-6, rtol=1e-5, msg=name)


def test_flops_count_the_last_layer_on_its_rows():
    cfg = build("bert", ["mlm"]).config
    h, f, n = 32, 64, 128
    full_layer = 2 * n * (4 * h * h + 2 * h * f) + 4 * n * n * h
    last = 2 * (2 * 21 * h * h + 2 * n * h * h + 2 * 21 * h * f) + 4 * 21 * n * h  # 21 queries, 128 keys
    assert encoder_forward_flops(cfg, n) == 3 * full_layer
    assert encoder_forward_flops(cfg, n, last_layer_rows=21) == 2 * full_layer + last
    assert train_step_flops(cfg, 2, n, 20, last_layer_rows=21) < train_step_flops(cfg, 2, n, 20)


def test_positions_and_labels_of_different_shapes_are_refused(batch):
    model = build("bert", ["mlm"])
    ids, mask, positions, labels = batch
    with pytest.raises(ValueError, match="same shape"):
        model(ids, mask, labels=labels[:, :2], mlm_positions=positions)
