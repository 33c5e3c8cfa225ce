"""The int8 graph rewritten for ONNX Runtime (fused attention, composed Q/K) and NoNorm scale
propagation: the same function as the PyTorch model, and the graph it promises."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from leanbert.deploy import ort_graph  # noqa: E402
from leanbert.deploy.onnx import (  # noqa: E402
    PARITY_ATOL,
    PARITY_RTOL,
    OnnxModel,
    _export_graph,
    _ort_rewrite,
    export_onnx,
    fold_mobilebert_no_norm,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_of(tiny_model):
    """``model_of(preset, layers=2, **overrides)``: a tiny MLM model, norms and biases randomised."""
    return lambda preset, layers=2, **overrides: tiny_model(preset, ["mlm"], num_layers=layers, **overrides)


def _feed(batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, length - 3 * row:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _counts(model: torch.nn.Module, **kw) -> dict[str, int]:
    from leanbert.deploy.onnx import _fold_mobilebert

    return _fold_mobilebert(model, propagate=True, **kw)[1]


@pytest.mark.parametrize("preset", ["mobilebert-test", "mobilebert-tiny-test"])
def test_propagating_the_norm_scales_keeps_the_function(preset, model_of):
    model = model_of(preset)
    propagated = fold_mobilebert_no_norm(model, propagate=True)
    feed = _feed(3, 21, 0)
    with torch.no_grad():
        torch.testing.assert_close(propagated(**feed).mlm_logits, model(**feed).mlm_logits, atol=1e-5, rtol=1e-5)


def test_propagation_leaves_one_multiply_per_model_when_the_scales_stay_close(model_of):
    # mobilebert-test: 4 FFNs, so 6 residual norms per block (attention, 4 FFNs, output); 2 blocks
    model = model_of("mobilebert-test")
    with torch.no_grad():  # gammas within [0.9, 1.1]: every spread stays under 4 (1.1 / 0.9 per norm, 12 norms)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.linspace(0.9, 1.1, p.numel())[torch.randperm(p.numel())])
    assert _counts(model) == {"residual_norms_propagated": 11, "residual_norms_multiplied": 1}


def test_a_scale_that_spreads_too_far_is_multiplied_in_and_restarts(model_of):
    model = model_of("mobilebert-test")  # gammas in [0.5, 1.5]: spreads reach 3 after one norm
    counts = _counts(model, max_scale_spread=2.0)
    assert counts["residual_norms_multiplied"] > 1  # multiplied in before the last block too
    assert counts["residual_norms_propagated"] + counts["residual_norms_multiplied"] == 12
    propagated = fold_mobilebert_no_norm(model, propagate=True, max_scale_spread=2.0)
    feed = _feed(2, 9, 1)
    with torch.no_grad():
        torch.testing.assert_close(propagated(**feed).mlm_logits, model(**feed).mlm_logits, atol=1e-5, rtol=1e-5)


def test_a_zero_gamma_is_never_divided_by(model_of):
    model = model_of("mobilebert-test", layers=1)
    with torch.no_grad():
        model.encoder.layers[0].ffns[0].norm.weight[3] = 0.0
    propagated = fold_mobilebert_no_norm(model, propagate=True)
    assert all(torch.isfinite(p).all() for p in propagated.parameters())
    feed = _feed(2, 9, 2)
    with torch.no_grad():
        torch.testing.assert_close(propagated(**feed).mlm_logits, model(**feed).mlm_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["mobilebert-test", "bert-tiny"])
def test_the_rewritten_graph_computes_what_pytorch_does_with_padding_at_any_shape(preset, tmp_path, model_of):
    model = model_of(preset)
    graph_model = fold_mobilebert_no_norm(model, propagate=True)
    rewrite = _ort_rewrite(graph_model)
    assert rewrite is not None
    path = tmp_path / "model.onnx"
    _export_graph(rewrite["model"], path, ["mlm_logits"], 18, translation=rewrite["translation"])
    import onnx

    graph = onnx.load(str(path)).graph
    ops = [(n.domain, n.op_type) for n in graph.node]
    assert ("", "Softmax") not in ops
    if preset == "bert-tiny":  # the masked attention only
        assert ops.count(("com.microsoft", "MultiHeadAttention")) == 2 and ("", "If") not in ops
    else:  # one If per layer: unpadded or padded batch
        assert ops.count(("", "If")) == 2
    for node in (n for n in graph.node if n.op_type == "If"):
        branches = {a.name: [(b.domain, b.op_type, len(b.input)) for b in a.g.node if b.op_type == "MultiHeadAttention"]
                    for a in node.attribute}
        # (padded branch: query, key, value, bias (empty), key_padding_mask)
        assert sorted(branches.values()) == [[("com.microsoft", "MultiHeadAttention", 3)],
                                              [("com.microsoft", "MultiHeadAttention", 5)]]
    # (1, 5): no padding, the unmasked branch; (3, 37) and (2, 128): padded rows, the masked one
    onnx_model = OnnxModel(path, threads=1)
    for batch, length, seed in ((1, 5, 0), (3, 37, 1), (2, 128, 2)):
        feed = _feed(batch, length, seed)
        with torch.no_grad():
            expected = model(**feed).mlm_logits
        torch.testing.assert_close(onnx_model(**feed).mlm_logits, expected, atol=PARITY_ATOL, rtol=PARITY_RTOL)


def test_the_shared_qk_bottleneck_is_composed_into_one_product_of_the_block_input(model_of):
    model = fold_mobilebert_no_norm(model_of("mobilebert-test"), propagate=True)
    composed = fold_mobilebert_no_norm(model_of("mobilebert-test"), propagate=True)
    assert ort_graph.compose_shared_qk(composed) == 2
    layer = composed.encoder.layers[0]
    assert layer.qk_bottleneck is None and layer.attention.query_key.in_features == model.config.hidden_size
    feed = _feed(2, 11, 3)
    with torch.no_grad():
        torch.testing.assert_close(composed(**feed).mlm_logits, model(**feed).mlm_logits, atol=1e-5, rtol=1e-5)


def test_the_block_inputs_three_products_become_one_with_padding_and_the_same_function(model_of):
    model = fold_mobilebert_no_norm(model_of("mobilebert-test"), propagate=True)
    stacked = fold_mobilebert_no_norm(model_of("mobilebert-test"), propagate=True)
    assert ort_graph.fuse_block_input_products(stacked) == 0  # needs the composed Q/K and ORT attention first
    ort_graph.compose_shared_qk(stacked)
    ort_graph.use_ort_attention(stacked)
    assert ort_graph.fuse_block_input_products(stacked) == 2
    layer = stacked.encoder.layers[1]
    a = model.config.intra_bottleneck_size
    assert isinstance(layer, ort_graph.OrtMobileBertLayer)
    assert (layer.block_input_product.in_features, layer.block_input_product.out_features) == (model.config.hidden_size,
                                                                                                4 * a)
    assert layer.input_bottleneck.dense is None and layer.attention.value is None
    assert sum(isinstance(m, torch.nn.Linear) for m in layer.modules()) == 1 + 1 + 2 * 4 + 1  # block input, out, FFNs, output
    for batch, length, seed in ((1, 6, 5), (3, 19, 6)):  # unpadded; padded rows
        feed = _feed(batch, length, seed)
        with torch.no_grad():
            torch.testing.assert_close(stacked(**feed).mlm_logits, model(**feed).mlm_logits, atol=1e-5, rtol=1e-5)


def test_the_authors_minus_six_mask_keeps_the_standard_attention(model_of):
    model = fold_mobilebert_no_norm(model_of("mobilebert-test", padded_key_score=-6.0), propagate=True)
    assert ort_graph.use_ort_attention(model) == 0
    assert ort_graph.use_ort_attention(fold_mobilebert_no_norm(model_of("mobilebert-test"), propagate=True)) == 2


@pytest.fixture(scope="module")
def int8_exports(tmp_path_factory, model_of):
    model = model_of("mobilebert-test")
    root = tmp_path_factory.mktemp("int8")
    return model, {g: export_onnx(model, root / g, quantize="dynamic", int8_graph=g) for g in ("ort", "portable")}


def test_the_ort_int8_file_holds_fused_attention_and_the_portable_one_only_standard_ops(int8_exports):
    import onnx

    _, outs = int8_exports

    def domains(path) -> set[str]:  # of every node, in the If branches too
        def walk(graph):
            for node in graph.node:
                yield node.domain
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        yield from walk(attr.g)
        return set(walk(onnx.load(str(path)).graph))

    assert "com.microsoft" in domains(outs["ort"] / "model.int8.onnx")
    assert domains(outs["portable"] / "model.int8.onnx") <= {"", "ai.onnx"}
    for out in outs.values():  # the fp32 file stays portable either way; the intermediate graph is gone
        assert domains(out / "model.onnx") <= {"", "ai.onnx"}
        assert sorted(p.name for p in out.glob("*.onnx")) == ["model.int8.onnx", "model.onnx"]
    card = json.loads((outs["ort"] / "card.json").read_text())["quantization"]["graph"]
    assert card["kind"] == "ort" and card["fp32_parity_before_quantization"]["max_abs_diff"] < PARITY_ATOL
    assert card["rewrites"] == ["attention as com.microsoft.MultiHeadAttention (2 layers; 2 without the padding mask "
                                "when no key is padded: ORT's flash-attention kernel)",
                                "shared Q/K bottleneck composed into the Q/K projection (2 layers)",
                                "the block input's three products (input bottleneck, Q/K, values) as one (2 layers)"]


def test_both_int8_files_stay_as_close_to_pytorch_as_each_other(int8_exports):
    model, outs = int8_exports
    feed = _feed(3, 40, 4)
    with torch.no_grad():
        expected = model(**feed).mlm_logits
    errors = {g: float((OnnxModel(out, variant="int8", threads=1)(**feed).mlm_logits - expected).abs().mean())
              for g, out in outs.items()}
    scale = float(expected.abs().mean())
    # int8 error: a few percent of the logits' size for both graphs, and of the same size
    assert errors["portable"] < 0.05 * scale and errors["ort"] < 0.05 * scale
    assert 0.5 < errors["ort"] / errors["portable"] < 2.0


def test_an_unknown_int8_graph_is_a_config_error(tmp_path, model_of):
    from leanbert.errors import ConfigError

    with pytest.raises(ConfigError, match="int8_graph must be one of ort, portable"):
        export_onnx(model_of("bert-tiny", layers=1), tmp_path / "x", quantize="dynamic", int8_graph="fast")
