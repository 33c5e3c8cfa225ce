"""Quantization-aware fine-tuning (leanbert.deploy.qat): int8 where int8 will be, ReLU6,
gradients through the rounding, plain checkpoints, and the int8 model it trained."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import leanbert
from leanbert.errors import ConfigError
from leanbert.models.mobilebert import FeedForward, NoNorm

pytest.importorskip("torchao", reason="QAT needs torchao (pip install 'leanbert[int8]')")

from leanbert.deploy.qat import convert_qat, fake_quantized_linears, prepare_qat  # noqa: E402
from leanbert.deploy.torch_int8 import int8_targets, quantize_int8, quantized_linears  # noqa: E402

MOBILEBERT_TEST_LINEARS = 1 + 2 * (1 + 1 + 1 + 1 + 1 + 4 * 2 + 1)  # as in test_torch_int8
IDS = torch.randint(1000, 2000, (4, 20), generator=torch.Generator().manual_seed(1))
LABELS = torch.tensor([0, 1, 1, 0])


def mobilebert(**overrides) -> nn.Module:
    """mobilebert-test with a classifier; NoNorms with random gammas and betas, and larger
    weights, so that the int8 rounding and the folding are visible."""
    torch.manual_seed(0)
    model = leanbert.build_model("mobilebert-test", heads=["classifier"], **overrides)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NoNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
            elif isinstance(module, nn.Linear):
                module.weight.mul_(5.0)
    return model


def test_every_int8_target_becomes_a_qat_layer_and_relu_becomes_relu6():
    model = prepare_qat(mobilebert())
    assert fake_quantized_linears(model) == int8_targets(model)
    assert len(fake_quantized_linears(model)) == MOBILEBERT_TEST_LINEARS
    assert "classifier.classifier" not in fake_quantized_linears(model)
    assert model.config.hidden_act == "relu6"
    ffns = [m for m in model.modules() if isinstance(m, FeedForward)]
    assert len(ffns) == 2 * 4 and all(ffn.act is F.relu6 for ffn in ffns)


def test_preparing_twice_is_a_config_error():
    model = prepare_qat(mobilebert())
    with pytest.raises(ConfigError, match="already prepared for QAT"):
        prepare_qat(model)


def test_qat_layers_round_to_int8_in_training_and_in_evaluation():
    # The same weights and activation without the rounding (and without dropout, to compare).
    reference = mobilebert(hidden_act="relu6", attention_dropout=0.0)
    model = prepare_qat(copy.deepcopy(reference))
    for training in (True, False):
        model.train(training)
        reference.train(training)
        with torch.no_grad():
            ref = reference(IDS).last_hidden_state
            diff = (model(IDS).last_hidden_state - ref).abs().max() / ref.abs().max()
        assert 1e-4 < diff < 5e-2  # int8 rounding: visible, and small (measured 1.8e-2)


def test_gradients_pass_the_rounding_and_reach_every_quantized_weight():
    reference = mobilebert(hidden_act="relu6", attention_dropout=0.0).train()  # no rounding
    model = prepare_qat(copy.deepcopy(reference)).train()
    for m in (reference, model):
        m(IDS, task_labels=LABELS).loss.backward()
    ref_layers, layers = dict(reference.named_modules()), dict(model.named_modules())
    for name in fake_quantized_linears(model):
        grad, ref = layers[name].weight.grad, ref_layers[name].weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        # The gradient of the rounded model: near the fp32 one, not equal (measured cosine 0.72-0.9997).
        assert 0.5 < F.cosine_similarity(grad.flatten(), ref.flatten(), dim=0) < 0.99999, name


def test_converting_after_qat_gives_the_outputs_that_training_saw():
    model = prepare_qat(mobilebert()).eval()
    int8 = convert_qat(model)
    assert len(quantized_linears(int8)) == MOBILEBERT_TEST_LINEARS and not fake_quantized_linears(int8)
    with torch.no_grad():
        simulated = model(IDS).last_hidden_state
        real = int8(IDS).last_hidden_state
    # QAT's forward pass runs the int8 layers themselves (NoNorm unfolded): the very same numbers.
    assert torch.equal(real, simulated)


def test_a_qat_checkpoint_is_a_plain_fp32_checkpoint_with_relu6(tmp_path):
    plain = mobilebert()
    model = prepare_qat(copy.deepcopy(plain)).eval()
    leanbert.save_pretrained(model, tmp_path / "qat")
    saved = json.loads((tmp_path / "qat" / "config.json").read_text())["model"]
    assert saved["hidden_act"] == "relu6"
    loaded = leanbert.from_pretrained(tmp_path / "qat").eval()
    assert list(loaded.state_dict()) == list(plain.state_dict())
    assert not fake_quantized_linears(loaded)
    assert all(m.act is F.relu6 for m in loaded.modules() if isinstance(m, FeedForward))
    with torch.no_grad():
        torch.testing.assert_close(quantize_int8(loaded, fold_norms=False)(IDS).last_hidden_state,
                                   convert_qat(model)(IDS).last_hidden_state, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# leanbert finetune --set qat=true
# --------------------------------------------------------------------------------------

FAST = ["threads=1", "progress=false", "eval_batch_size=128", "tensorboard=false", "max_seq_length=32",
        "predict_test=false", "epochs=1", "train_limit=64", "batch_size=16", "eval_limit=64", "lr=1e-3"]


@pytest.fixture(scope="module")
def tiny_mobilebert(tmp_path_factory, minilm_dir):
    torch.manual_seed(0)
    model = leanbert.build_model("mobilebert-test", heads=["mlm"])
    out = tmp_path_factory.mktemp("ckpt") / "mobilebert-test"
    leanbert.save_pretrained(model, out, tokenizer_dir=minilm_dir)
    return out


def test_finetune_with_qat_reports_the_int8_model_it_trained(tiny_mobilebert, shared_file, tmp_path):
    from leanbert.tasks import get_task
    from leanbert.tasks.finetune import evaluate_checkpoint, finetune, finetune_config

    sst2 = shared_file("glue/SST-2")
    cfg = finetune_config(get_task("sst2"), overrides=[*FAST, "qat=true"])
    report = finetune("sst2", sst2, tiny_mobilebert, tmp_path, cfg)
    assert json.loads((tmp_path / "model" / "config.json").read_text())["model"]["hidden_act"] == "relu6"
    assert report["int8"]["method"] == "torchao"
    assert json.loads((tmp_path / "metrics.json").read_text())["int8"] == report["int8"]
    # The dev metrics of fine-tuning are those of the int8 model that the saved checkpoint gives.
    assert report["int8"]["metrics"] == report["metrics"]
    again = evaluate_checkpoint(tmp_path / "model", sst2, cfg=cfg, int8="torchao")
    assert again["metrics"] == report["int8"]["metrics"]


def test_qat_under_bf16_is_a_config_error(tiny_mobilebert, shared_file, tmp_path):
    from leanbert.tasks import get_task
    from leanbert.tasks.finetune import finetune, finetune_config

    cfg = finetune_config(get_task("sst2"), overrides=[*FAST, "qat=true", "precision=bf16"])
    with pytest.raises(ConfigError, match="precision bf16 is not supported; set --set precision=fp32"):
        finetune("sst2", shared_file("glue/SST-2"), tiny_mobilebert, tmp_path, cfg)
