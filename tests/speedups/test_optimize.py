"""leanbert.optimize / restore / plain_modules: speed-ups applied to a plain model by one call,
removed by another, invisible to the state dict, and out of the way of quantization."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import leanbert
from leanbert.speedups import is_optimized
from leanbert.speedups.attention import FastAttention
from leanbert.speedups.dropout import FastDropout
from leanbert.speedups.linear import OneDNNLinear
from leanbert.speedups.mobilebert_inference import FastMobileBertEncoder

VOCAB = 97


def tiny(preset: str = "bert-tiny", **kw):
    torch.manual_seed(0)
    return leanbert.build_model(preset, vocab_size=VOCAB, max_position_embeddings=64, **kw)


def classes(model: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules()}


def test_a_built_model_is_plain_pytorch():
    model = tiny()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is nn.Linear for m in linears)
    assert all(type(m) is nn.Dropout for m in model.modules() if isinstance(m, nn.Dropout))
    assert not is_optimized(model)


def test_optimize_swaps_classes_in_place_and_keeps_parameters_and_state_dict():
    model = tiny()
    params = [id(p) for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert leanbert.optimize(model) is model
    assert [id(p) for p in model.parameters()] == params
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    layer = model.encoder.layers[0].attention
    assert type(layer.qkv) is OneDNNLinear and type(layer.dropout) is FastDropout and type(layer.attend) is FastAttention


def test_restore_gives_back_exactly_the_plain_classes():
    model = tiny("mobilebert-test")
    plain = classes(model)
    leanbert.optimize(model, for_training=False)
    assert type(model.encoder) is FastMobileBertEncoder
    leanbert.restore(model)
    assert classes(model) == plain and not is_optimized(model)


def test_optimize_for_training_leaves_out_the_inference_plan():
    model = tiny("mobilebert-test")
    leanbert.optimize(model, for_training=False)
    leanbert.optimize(model, for_training=True)
    assert type(model.encoder) is not FastMobileBertEncoder and is_optimized(model)


def test_plain_modules_context_restores_then_reapplies():
    model = leanbert.optimize(tiny())
    optimized = classes(model)
    with leanbert.plain_modules(model):
        assert not is_optimized(model)
    assert classes(model) == optimized


@pytest.mark.parametrize("preset", ["bert-tiny", "mobilebert-test"])
@pytest.mark.parametrize("for_training", [True, False])
def test_optimized_model_computes_the_same_outputs(preset, for_training, padded_batch):
    model = tiny(preset).eval()
    ids, mask = padded_batch
    with torch.no_grad():
        ref = model(ids, mask).mlm_logits
        leanbert.optimize(model, for_training=for_training)
        out = model(ids, mask).mlm_logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["bert-tiny", "mobilebert-test"])
def test_quantize_dynamic_quantizes_every_encoder_linear_of_a_plain_model(preset, padded_batch):
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    model = tiny(preset).eval()
    leanbert.optimize(model)
    leanbert.restore(model)  # what export does before quantizing
    n_linear = sum(isinstance(m, nn.Linear) for m in model.encoder.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    encoder_linears = [m for m in quantized.encoder.modules() if isinstance(m, (nn.Linear, QuantizedLinear))]
    assert len(encoder_linears) == n_linear > 0
    assert all(isinstance(m, QuantizedLinear) for m in encoder_linears)
    ids, mask = padded_batch
    with torch.no_grad():
        ref, out = model(ids, mask).last_hidden_state, quantized(ids, mask).last_hidden_state
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()  # int8 weights: close, not equal
