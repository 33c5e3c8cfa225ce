"""Mixed precision: MobileBERT trains and runs finite under bf16 autocast, and under fp16
autocast even when its activations pass fp16's range (transformers issue 11327)."""

from __future__ import annotations

import pytest
import torch

import leanbert
from leanbert.models.mobilebert import NoNorm, linear

VOCAB = 97
FP16_MAX = torch.finfo(torch.float16).max


def tiny(preset: str, **kw):
    return leanbert.build_model(preset, vocab_size=VOCAB, max_position_embeddings=64, **kw)


def mlm_batch(b=4, s=16):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, VOCAB, (b, s), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    labels[:, 7] = ids[:, 7]
    ids[:, 3] = 4  # [MASK]
    return ids, mask, labels, torch.tensor([0, 1, 1, 0])


def grow_activations(model, factor: float = 8.0):
    """Scale every NoNorm gamma: activations grow layer by layer as nothing normalises them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NoNorm):
                m.weight.mul_(factor)
    return model


@pytest.mark.parametrize("preset", ["mobilebert-test", "mobilebert-tiny-test", "ib-bert-test"])
def test_bf16_autocast_training_steps_are_finite(preset):
    model = tiny(preset, num_layers=3).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids, mask, labels, nsp = mlm_batch()
    losses = []
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, mask, labels=labels, next_sentence_label=nsp)
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_bf16_autocast_inference_is_close_to_fp32():
    model = tiny("mobilebert-test").eval()
    ids, mask, _, _ = mlm_batch()
    with torch.no_grad():
        ref = model(ids, mask).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids, mask).last_hidden_state
    assert low.dtype == torch.float32  # the residual stream stays fp32 (NoNorm promotes it)
    assert (low - ref).abs().max() / ref.abs().max() < 0.02


def test_range_safe_linear_is_exact_scaling_under_fp16():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8) * 1e6  # far beyond fp16's range
    with torch.autocast("cpu", dtype=torch.float16):
        plain = layer(x)
        safe = linear(layer, x)
    assert not torch.isfinite(plain).all()
    ref = layer(x)
    assert torch.isfinite(safe).all() and (safe - ref).abs().max() / ref.abs().max() < 2e-3


def test_fp16_autocast_stays_finite_beyond_fp16_range():
    model = grow_activations(tiny("mobilebert-test", num_layers=4, heads=["mlm"])).eval()
    ids, mask, _, _ = mlm_batch()
    with torch.no_grad():
        ref = model(ids, mask)
        assert ref.last_hidden_state.abs().max() > 1e3 * FP16_MAX  # fp32 is fine, fp16 could not hold it
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(ids, mask)
    assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.mlm_logits).all()
    rel = (out.last_hidden_state - ref.last_hidden_state).abs().max() / ref.last_hidden_state.abs().max()
    assert rel < 0.02
    assert (out.mlm_logits.float() - ref.mlm_logits).abs().max() / ref.mlm_logits.abs().max() < 0.05


def test_transformers_mobilebert_overflows_where_leanbert_does_not(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.MobileBertConfig(vocab_size=VOCAB, hidden_size=64, embedding_size=16, num_hidden_layers=4,
                                        num_attention_heads=4, intra_bottleneck_size=32, intermediate_size=64,
                                        max_position_embeddings=64)
    hf = transformers.MobileBertModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm.weight" in name:
                p.mul_(8.0)
    hf.save_pretrained(tmp_path / "hf")
    ours = leanbert.from_pretrained(tmp_path / "hf")
    ids, mask, _, _ = mlm_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        mine = ours(ids, mask).last_hidden_state
    assert not torch.isfinite(theirs).all()  # issue 11327, reproduced
    assert torch.isfinite(mine).all()


def test_fp16_training_step_with_grad_scaler_is_finite():
    # MLM only: the shared NSP / classifier heads (models/heads.py) are plain nn.Linear on the
    # [CLS] state and still overflow when the stream passes 65504.
    model = grow_activations(tiny("mobilebert-test", num_layers=3, heads=["mlm"]), factor=4.0).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    ids, mask, labels, _ = mlm_batch()
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(ids, mask, labels=labels)
    assert torch.isfinite(out.loss)
    scaler.scale(out.loss).backward()
    scaler.unscale_(opt)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    scaler.step(opt)
    scaler.update()
