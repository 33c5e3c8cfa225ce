"""The MLM objective (leanbert.train.pretrain): the last layer only at the predicted positions
(and [CLS]), the same losses and gradients as the full model, and the same values as the
pre-redesign code (reference numbers in tests/train/data/reference_losses.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import leanbert
from leanbert.algorithms.token_dropping import TokenDroppingRouter
from leanbert.models.bert import layer_flops
from leanbert.train.pretrain import MLMObjective

VOCAB = 97
BERT = {"model_type": "bert", "vocab_size": VOCAB, "hidden_size": 32, "num_layers": 3, "num_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout": 0.0, "attention_dropout": 0.0}
REFERENCE = Path(__file__).parent / "data" / "reference_losses.json"


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    pass


def build(family: str, heads: list[str]):
    torch.manual_seed(0)
    if family == "bert":
        return leanbert.build_model({**BERT, "heads": heads, "use_pooler": "nsp" in heads})
    return leanbert.build_model("mobilebert-test", vocab_size=VOCAB, max_position_embeddings=64, heads=heads,
                                use_pooler="nsp" in heads, attention_dropout=0.0, hidden_dropout=0.0)


@pytest.fixture
def batch(padded_batch):
    ids, mask = padded_batch
    return {"input_ids": ids, "attention_mask": mask, "mlm_positions": torch.tensor([[2, 5, 9], [1, 7, 0], [3, 0, 0]]),
            "labels": torch.tensor([[11, 12, 13], [14, 15, -100], [16, -100, -100]]),
            "next_sentence_label": torch.tensor([0, 1, 0])}


def loss_and_grads(model, batch, sparse: bool, router=None):
    objective = MLMObjective(with_pairs=model.nsp is not None, sparse_last_layer=sparse)
    model.zero_grad(set_to_none=True)
    out = objective(model, batch, router)
    count = objective.counts(batch)
    loss = sum(out[f"loss.{t}"] / count[t] for t in objective.terms)
    loss.backward()
    return out, loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["bert", "mobilebert"])
@pytest.mark.parametrize("heads", [["mlm"], ["mlm", "nsp"]])
def test_losses_and_gradients_equal_the_full_last_layer(family, heads, batch):
    model = build(family, heads)
    full, l_full, g_full = loss_and_grads(model, batch, sparse=False)
    sparse, l_sparse, g_sparse = loss_and_grads(model, batch, sparse=True)
    torch.testing.assert_close(l_sparse, l_full, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sparse["mlm_token_loss"], full["mlm_token_loss"], atol=1e-6, rtol=1e-6)
    if "nsp" in heads:
        torch.testing.assert_close(sparse["nsp_logits"], full["nsp_logits"], atol=1e-6, rtol=1e-6)
    assert g_sparse.keys() == g_full.keys()
    for name in g_full:
        torch.testing.assert_close(g_sparse[name], g_full[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("family", ["bert", "mobilebert"])
@pytest.mark.parametrize("heads", [["mlm"], ["mlm", "nsp"]])
def test_objective_equals_the_models_own_loss(family, heads, batch):
    """The model's forward (mean losses) and the objective (sums over global counts) agree."""
    model = build(family, heads)
    _, loss, _ = loss_and_grads(model, batch, sparse=True)
    kw = {"next_sentence_label": batch["next_sentence_label"]} if "nsp" in heads else {}
    out = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"],
                mlm_positions=batch["mlm_positions"], **kw)
    torch.testing.assert_close(loss, out.loss, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("key", ["bert-tiny:mlm", "bert-tiny:mlm+nsp", "mobilebert-test:mlm", "mobilebert-test:mlm+nsp"])
@pytest.mark.parametrize("speedups", [False, True])
def test_same_loss_and_gradients_as_before_the_redesign(key, speedups):
    """Numbers recorded with the code before the one-engine redesign (woven-in speed-ups, the
    sparse last layer inside the model): the plain model plus the objective, with and without
    ``leanbert.optimize``, gives the same loss and per-parameter gradient norms."""
    ref = json.loads(REFERENCE.read_text())[key]
    preset, heads = key.split(":")[0], key.split(":")[1].split("+")
    torch.manual_seed(0)
    kw = {"heads": heads, "vocab_size": 97, "hidden_dropout": 0.0, "attention_dropout": 0.0}
    if preset.startswith("mobilebert"):
        kw["use_pooler"] = "nsp" in heads
    model = leanbert.build_model(preset, **kw).train()
    if speedups:
        leanbert.optimize(model)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 97, (3, 16), generator=g)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, 12:] = 0
    mask[2, 9:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    pos = torch.stack([torch.randperm(8, generator=g)[:4] + 1 for _ in range(3)]).sort(1).values
    labels = torch.gather(ids, 1, pos)
    labels[0, -1] = -100
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
             "mlm_positions": pos, "next_sentence_label": torch.tensor([0, 1, 1])}
    out, loss, grads = loss_and_grads(model, batch, sparse=True)
    assert loss.item() == pytest.approx(ref["loss"], abs=1e-5)
    assert grads.keys() == ref["grad_norms"].keys()
    for name, norm in ref["grad_norms"].items():
        assert grads[name].double().norm().item() == pytest.approx(norm, rel=1e-4, abs=1e-7), name


def test_a_user_calling_the_model_gets_full_length_states(batch):
    model = build("bert", ["mlm"])
    out = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"], mlm_positions=batch["mlm_positions"])
    assert out.last_hidden_state.shape == (3, 12, 32)


@pytest.mark.parametrize("end, applied", [(2, True), (3, False)])
def test_combines_with_token_dropping_when_the_last_layer_sees_every_token(end, applied, batch):
    model = build("bert", ["mlm"])
    kept = torch.tensor([[0, 2, 5, 9, 11], [0, 1, 4, 7, 8], [0, 3, 4, 6, 7]])

    def router():
        return TokenDroppingRouter(kept, start=1, end=end)

    _, l_full, g_full = loss_and_grads(model, batch, sparse=False, router=router())
    _, l_sparse, g_sparse = loss_and_grads(model, batch, sparse=True, router=router())
    torch.testing.assert_close(l_sparse, l_full, atol=1e-6, rtol=1e-6)
    for name in g_full:
        torch.testing.assert_close(g_sparse[name], g_full[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("heads, rows", [(["mlm"], 3), (["mlm", "nsp"], 4)])
def test_flops_count_the_last_layer_on_its_rows(heads, rows, batch):
    model = build("bert", heads)
    cfg, n = model.config, 12
    full = 3 * 3 * (3 * layer_flops(cfg, n, n) + 2 * 3 * (32 * 32 + 32 * VOCAB))
    sparse = 3 * 3 * (2 * layer_flops(cfg, n, n) + layer_flops(cfg, rows, n) + 2 * 3 * (32 * 32 + 32 * VOCAB))
    assert MLMObjective(sparse_last_layer=False).flops(model, batch, None) == full
    assert MLMObjective().flops(model, batch, None) == sparse
    assert MLMObjective().last_layer_rows(model, 3) == rows
