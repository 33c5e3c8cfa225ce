"""PyTorch int8 (leanbert.deploy.torch_int8): which layers become int8, that the fp32 model and
checkpoints stay safe, and the int8 accuracy on a real SST-2 dev slice against fp32."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings

import pytest
import torch
from torch import nn

import leanbert
from leanbert.deploy.torch_int8 import (
    int8_targets,
    quantize_int8,
    quantized_linears,
    weight_bytes,
)
from leanbert.errors import CheckpointError, ConfigError, LeanbertError
from leanbert.models.mobilebert import NoNorm
from leanbert.speedups import is_optimized

needs_torchao = pytest.mark.skipif(importlib.util.find_spec("torchao") is None,
                                   reason="torchao is not installed (pip install 'leanbert[int8]')")
METHODS = [pytest.param("torchao", marks=needs_torchao), "dynamic"]
# bert-tiny: 2 layers x (QKV, attention output, FFN up, FFN down) + the pooler.
BERT_TINY_LINEARS = 2 * 4 + 1
# mobilebert-test: the embedding projection + 2 layers x (input bottleneck, Q/K bottleneck, Q/K,
# V, attention output, 4 FFNs x (up, down), output bottleneck).
MOBILEBERT_TEST_LINEARS = 1 + 2 * (1 + 1 + 1 + 1 + 1 + 4 * 2 + 1)
SST2_SLICE = 200  # the first 200 dev sentences
TOLERANCE = 0.02  # int8 accuracy within 2 points (4 sentences) of fp32 on them


def quantize(model, method: str, **kwargs):
    with warnings.catch_warnings():  # method="dynamic": leanbert's and torch.ao's own deprecation warnings
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_int8(model, method=method, **kwargs)


def classifier_model(preset: str) -> nn.Module:
    """A classifier of ``preset``; MobileBERT's NoNorms get random gammas (some negative) and
    betas, so that folding them is not the identity."""
    torch.manual_seed(0)
    model = leanbert.build_model(preset, heads=["classifier"]).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NoNorm):
                sign = torch.randint(0, 2, module.weight.shape) * 2 - 1
                module.weight.uniform_(0.5, 1.5).mul_(sign)
                module.bias.normal_(0.0, 0.1)
    return model


IDS = torch.randint(1000, 2000, (3, 20), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("preset", "count"), [("bert-tiny", BERT_TINY_LINEARS),
                                                ("mobilebert-test", MOBILEBERT_TEST_LINEARS)])
def test_every_encoder_linear_is_int8_and_the_classifier_stays_fp32(preset, count, method):
    model = classifier_model(preset)
    q = quantize(model, method)
    assert len(int8_targets(model)) == count
    assert quantized_linears(q) == int8_targets(model)
    assert type(q.classifier.classifier) is nn.Linear and q.classifier.classifier.weight.dtype == torch.float32


@needs_torchao
def test_mobilebert_int8_has_its_nonorms_folded_and_stays_close_to_fp32():
    model = classifier_model("mobilebert-test")
    folded, unfolded = quantize(model, "torchao"), quantize(model, "torchao", fold_norms=False)
    assert not any(isinstance(m, NoNorm) for m in folded.modules())
    assert sum(isinstance(m, NoNorm) for m in unfolded.modules()) == 1 + 2 * 8
    with torch.no_grad():
        ref = model(IDS).last_hidden_state
        a, b = folded(IDS).last_hidden_state, unfolded(IDS).last_hidden_state
    scale = ref.abs().max()
    assert (a - ref).abs().max() / scale < 1e-2  # int8 error (measured 2.9e-3 folded, 3.2e-3 unfolded)
    assert (a - b).abs().max() / scale < 3e-3  # folding moves a few rounding ties (measured 1.4e-3)


@pytest.mark.parametrize("method", METHODS)
def test_the_fp32_model_is_left_as_it_was_even_with_speedups(method):
    model = classifier_model("bert-tiny")
    with torch.no_grad():
        before = model(IDS).logits
    leanbert.optimize(model, for_training=False)
    q = quantize(model, method)
    assert is_optimized(model) and not quantized_linears(model)
    assert len(quantized_linears(q)) == BERT_TINY_LINEARS
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("preset", "count"), [("bert-tiny", BERT_TINY_LINEARS),
                                                ("mobilebert-test", MOBILEBERT_TEST_LINEARS)])
def test_optimize_leaves_the_int8_model_alone(preset, count, method):
    # Neither the int8 layers nor MobileBERT's encoder get the fp32 speed-ups (the packed plan).
    q = quantize(classifier_model(preset), method)
    with torch.no_grad():
        before = q(IDS).last_hidden_state
        leanbert.optimize(q, for_training=False)
        after = q(IDS).last_hidden_state
    assert len(quantized_linears(q)) == count
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_saving_an_int8_model_is_a_one_line_error_that_writes_nothing(method, tmp_path):
    q = quantize(classifier_model("mobilebert-test"), method)
    with pytest.raises(CheckpointError, match="quantized to int8 for inference") as err:
        leanbert.save_pretrained(q, tmp_path / "int8")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "int8").exists() and not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao's own
def test_dynamic_warns_that_torch_ao_is_deprecated():
    with pytest.warns(FutureWarning, match="deprecated"):
        quantize_int8(classifier_model("bert-tiny"), method="dynamic")


def test_an_unknown_method_and_quantizing_twice_are_config_errors():
    model = classifier_model("bert-tiny")
    with pytest.raises(ConfigError, match="unknown int8 method 'int4'; use one of: torchao, dynamic"):
        quantize_int8(model, method="int4")
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(quantize(model, "dynamic"), "dynamic")


@needs_torchao
def test_weight_bytes_count_int8_values_with_their_scales_and_zero_points():
    model = classifier_model("bert-tiny")
    q = quantize(model, "torchao")
    layers = dict(model.named_modules())
    shrink = 0
    for name in int8_targets(model):
        out_features, in_features = layers[name].weight.shape
        # fp32 weight (4 B) -> int8 value (1 B) + one fp32 scale and one int8 zero point per row
        shrink += 4 * out_features * in_features - (out_features * in_features + out_features * (4 + 1))
    assert weight_bytes(model) == sum(p.numel() * 4 for p in model.parameters())
    assert weight_bytes(q) == weight_bytes(model) - shrink


# --------------------------------------------------------------------------------------
# Accuracy: a pretrained MiniLM fine-tuned on 384 SST-2 sentences, the first 200 dev sentences
# --------------------------------------------------------------------------------------

FAST = ["threads=1", "progress=false", "eval_batch_size=128", "tensorboard=false", "max_seq_length=40"]


@pytest.fixture(scope="module")
def sst2(shared_file):
    return shared_file("glue/SST-2")


@pytest.fixture(scope="module")
def sst2_model(minilm_dir, sst2, tmp_path_factory):
    """(checkpoint, fp32 accuracy on the slice): 12 steps of batch 32 reach ~0.75 there."""
    from leanbert.tasks import get_task
    from leanbert.tasks.finetune import finetune, finetune_config

    cfg = finetune_config(get_task("sst2"), overrides=[
        *FAST, "epochs=1", "train_limit=384", "batch_size=32", "lr=3e-4", "predict_test=false",
        f"eval_limit={SST2_SLICE}"])
    out = tmp_path_factory.mktemp("sst2")
    report = finetune("sst2", sst2, minilm_dir, out, cfg)
    return out / "model", report["metrics"]["dev"]["accuracy"]


def test_the_fine_tuned_fp32_model_learned_sst2(sst2_model, sst2):
    _, accuracy = sst2_model
    labels = [line.split("\t")[1] for line in (sst2 / "dev.tsv").read_text().splitlines()[1:SST2_SLICE + 1]]
    majority = max(labels.count("0"), labels.count("1")) / len(labels)
    assert accuracy > majority + 0.1


def test_dynamic_int8_accuracy_is_within_two_points_of_fp32(sst2_model, sst2):
    from leanbert.tasks import get_task
    from leanbert.tasks.finetune import evaluate_checkpoint, finetune_config

    checkpoint, fp32 = sst2_model
    cfg = finetune_config(get_task("sst2"), overrides=[*FAST, f"eval_limit={SST2_SLICE}"])
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        report = evaluate_checkpoint(checkpoint, sst2, cfg=cfg, int8="dynamic")
    assert report["int8"] == "dynamic"
    assert abs(report["metrics"]["dev"]["accuracy"] - fp32) <= TOLERANCE


@needs_torchao
def test_leanbert_evaluate_int8_gives_torchao_accuracy_within_two_points_of_fp32(sst2_model, sst2, capsys):
    from leanbert.cli import main

    checkpoint, fp32 = sst2_model
    args = ["evaluate", "--model", str(checkpoint), "--data", str(sst2), "--int8"]
    for override in [*FAST, f"eval_limit={SST2_SLICE}"]:
        args += ["--set", override]
    assert main(args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["int8"] == "torchao"
    assert abs(shown["metrics"]["dev"]["accuracy"] - fp32) <= TOLERANCE


def test_evaluate_int8_of_an_onnx_export_is_a_one_line_error(tmp_path, capsys):
    from leanbert.cli import main

    assert main(["evaluate", "--onnx", str(tmp_path), "--data", str(tmp_path), "--int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--int8 quantizes a PyTorch checkpoint" in err


def test_a_missing_torchao_is_a_one_line_error_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao now raises ImportError
    with pytest.raises(LeanbertError, match=r"needs torchao, which is not installed; pip install 'leanbert\[int8\]'"):
        quantize_int8(classifier_model("bert-tiny"), method="torchao")


@needs_torchao
def test_importing_torchao_through_leanbert_prints_nothing():
    # torchao 0.18 on a CPU build logs "Failed to load ..." for its CUDA-only kernels and torch logs
    # pytree deprecation notes on its enums; leanbert's import keeps them off the user's terminal.
    import subprocess

    done = subprocess.run([sys.executable, "-c", "from leanbert.deploy.torch_int8 import require_torchao; "
                           "require_torchao(); import torchao; print('imported', torchao.__name__)"],
                          capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "imported torchao"
    assert done.stderr == ""
