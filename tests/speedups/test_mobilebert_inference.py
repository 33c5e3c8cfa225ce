"""MobileBERT's inference fast path (leanbert.models.mobilebert_fast): folded NoNorm, fused and
pre-packed products. It must equal the module path, run only when nothing needs the module
graph, and follow every change of the weights."""

from __future__ import annotations

import pytest
import torch

import leanbert
from leanbert.speedups import mobilebert_inference as fast

VOCAB = 97
# the three attention sources: shared Q/K bottleneck, TINY's bottleneck, the block input
ARCHITECTURES = {
    "mobilebert": ("mobilebert-test", {}),
    "tiny": ("mobilebert-tiny-test", {}),
    "block-input": ("ib-bert-test", {"normalization_type": "no_norm", "hidden_act": "relu"}),
}


def model_for(arch: str, heads: list[str] | None = None, **more):
    preset, extra = ARCHITECTURES[arch]
    cfg = more | {"vocab_size": VOCAB, "max_position_embeddings": 64, "attention_dropout": 0.0, "hidden_dropout": 0.0}
    model = leanbert.build_model(preset, heads=heads if heads is not None else ["mlm"], **cfg, **extra).eval()
    leanbert.optimize(model, for_training=False)
    torch.manual_seed(3)
    with torch.no_grad():  # gammas far from 1 and betas far from 0, so that folding them matters
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 2.0)
            elif name.endswith("norm.bias"):
                p.normal_(0.0, 0.5)
    return model


@pytest.fixture
def batch(padded_batch):
    ids, mask = padded_batch
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


def module_path(model, *args, **kw):
    with leanbert.plain_modules(model), torch.no_grad():
        return model(*args, **kw)


def fast_path(model, *args, **kw):
    fast.drop_plan(model.encoder)
    with torch.inference_mode():
        out = model(*args, **kw)
    assert model.encoder in fast._PLANS, "the fast path was not taken"
    return out


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fast_path_equals_module_path(arch, batch):
    model = model_for(arch)
    ids, mask, types = batch
    ref = module_path(model, ids, mask, types)
    out = fast_path(model, ids, mask, types)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mlm_logits, ref.mlm_logits, atol=1e-4, rtol=1e-5)


def test_fast_path_without_onednn_equals_module_path(monkeypatch, batch):
    monkeypatch.setattr(fast, "onednn_available", lambda: False)
    model = model_for("mobilebert")
    ids, mask, types = batch
    out = fast_path(model, ids, mask)
    assert not fast._PLANS[model.encoder].blocks[0].first.onednn
    torch.testing.assert_close(out.last_hidden_state, module_path(model, ids, mask).last_hidden_state,
                               atol=1e-5, rtol=1e-5)


def test_fast_path_pooler_and_classifier_equal_module_path(batch):
    model = model_for("mobilebert", heads=["classifier"], use_pooler=True)
    ids, mask, _ = batch
    ref, out = module_path(model, ids, mask), fast_path(model, ids, mask)
    torch.testing.assert_close(out.pooled_output, ref.pooled_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)


def test_fast_path_matches_transformers(tmp_path, batch):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.MobileBertConfig(vocab_size=VOCAB, hidden_size=64, embedding_size=16, num_hidden_layers=2,
                                        num_attention_heads=4, intra_bottleneck_size=32, true_hidden_size=32,
                                        intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.MobileBertModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm" in name:
                p.uniform_(0.5, 2.0) if name.endswith("weight") else p.normal_(0.0, 0.5)
    hf.save_pretrained(tmp_path)
    ours = leanbert.optimize(leanbert.from_pretrained(tmp_path), for_training=False)
    ids, mask, types = batch
    with torch.inference_mode():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        out = ours(ids, mask, types).last_hidden_state
    assert ours.encoder in fast._PLANS
    valid = mask.bool()
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", ["train", "grad", "hidden_states", "attentions", "bf16", "layer_norm", "disabled"])
def test_fast_path_runs_only_when_nothing_needs_the_modules(case, monkeypatch, batch):
    taken = []
    monkeypatch.setattr(fast, "fast_forward", lambda *a: taken.append(1))
    model = model_for("mobilebert") if case != "layer_norm" else leanbert.optimize(leanbert.build_model(
        "ib-bert-test", vocab_size=VOCAB, max_position_embeddings=64).eval(), for_training=False)
    ids, mask, _ = batch
    kw = {}
    if case == "train":
        model.train()
    elif case == "hidden_states":
        kw["output_hidden_states"] = True
    elif case == "attentions":
        kw["output_attentions"] = True
    elif case == "disabled":
        leanbert.restore(model)
    if case == "grad":
        out = model(ids, mask, **kw)
    elif case == "bf16":
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, mask, **kw)
    else:
        with torch.inference_mode():
            out = model(ids, mask, **kw)
    assert taken == [] and out.last_hidden_state.shape == (3, 12, 64)


def test_plan_follows_in_place_weight_changes(batch):
    model = model_for("mobilebert")
    ids, mask, _ = batch
    before = fast_path(model, ids, mask).last_hidden_state
    with torch.no_grad():
        model.encoder.layers[1].ffns[0].norm.weight.mul_(1.5)
    with torch.inference_mode():
        after = model(ids, mask).last_hidden_state
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, module_path(model, ids, mask).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_plan_follows_load_state_dict_and_training_drops_it(batch):
    model, other = model_for("mobilebert"), leanbert.build_model(
        "mobilebert-test", vocab_size=VOCAB, max_position_embeddings=64, heads=["mlm"]).eval()
    ids, mask, _ = batch
    fast_path(model, ids, mask)
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        out = model(ids, mask).last_hidden_state
    torch.testing.assert_close(out, module_path(other, ids, mask).last_hidden_state, atol=1e-5, rtol=1e-5)
    model.train()
    assert model.encoder not in fast._PLANS


def test_plan_is_not_part_of_the_state_dict_or_copies(batch):
    import copy

    model = model_for("mobilebert")
    keys = set(model.state_dict())
    ids, mask, _ = batch
    fast_path(model, ids, mask)
    assert set(model.state_dict()) == keys
    clone = copy.deepcopy(model)
    assert clone.encoder not in fast._PLANS
