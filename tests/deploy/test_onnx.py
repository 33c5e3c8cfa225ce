"""ONNX export (fp32 parity with PyTorch for every family and head), ONNX Runtime int8 (dynamic
and static), evaluation of an export with the PyTorch metric code, and the CLI's one-line errors.

Tolerances: fp32 ONNX vs PyTorch ``|onnx - torch| <= 1e-4 + 1e-4 |torch|`` (PARITY_ATOL/RTOL);
dynamic int8 accuracy within 2 points of fp32 on 200 real SST-2 dev sentences (and the fp32
label kept for at least 85% of them); static int8
outputs within 8% relative L2 error of fp32 on real SST-2 dev sentences.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import leanbert
from leanbert.cli import main

SST2_DEV_SLICE = 200

pytest.importorskip("onnxruntime", reason="ONNX tests need the export extra: pip install 'leanbert[export]'")
pytest.importorskip("onnxscript", reason="ONNX tests need the export extra: pip install 'leanbert[export]'")

from leanbert.deploy.onnx import (  # noqa: E402
    PARITY_ATOL,
    PARITY_RTOL,
    OnnxModel,
    calibration_batches,
    export_onnx,
    fold_mobilebert_no_norm,
    read_card,
)
from leanbert.deploy.onnx_eval import evaluate_onnx  # noqa: E402

HEADS = ["mlm", "classification", "regression", "span_qa"]
OUTPUTS = {"mlm": ["mlm_logits"], "classification": ["logits"], "regression": ["logits"],
           "span_qa": ["start_logits", "end_logits"]}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for the whole module (tiny models; a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One layer each (the export is per-op work, and every layer is the same code).
# bert: MLM, NSP, span QA and a regression classifier in one export; its classification head is
#   the static-quantization export's fp32 graph below (bert-tiny with an SST-2 classifier).
# mobilebert: MobileBERT (shared Q/K bottleneck, 4 FFNs) with MLM, NSP, span QA and a 3-way
#   classifier; MobileBERT_TINY (Q/K/V from the bottleneck, 2 FFNs) with a regression classifier.
MODELS = {
    "bert-multi": ("bert-tiny", ["mlm", "nsp", "span_qa", "classifier"], {"num_labels": 1, "problem_type": "regression"}),
    "mobilebert-multi": ("mobilebert-test", ["mlm", "nsp", "span_qa", "classifier"], {"num_labels": 3}),
    "mobilebert-reg": ("mobilebert-tiny-test", ["classifier"], {"num_labels": 1, "problem_type": "regression"}),
}
WHERE = {("bert", "mlm"): "bert-multi", ("bert", "span_qa"): "bert-multi", ("bert", "regression"): "bert-multi",
         ("bert", "classification"): "bert-static", ("mobilebert", "mlm"): "mobilebert-multi",
         ("mobilebert", "span_qa"): "mobilebert-multi", ("mobilebert", "classification"): "mobilebert-multi",
         ("mobilebert", "regression"): "mobilebert-reg"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, request, tiny_model):
    """name -> (PyTorch model, export directory), exported once per module."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(name: str) -> tuple[torch.nn.Module, Path]:
        if name == "bert-static":
            out = request.getfixturevalue("static_export")
            return leanbert.from_pretrained(request.getfixturevalue("tiny_checkpoint")), out
        if name not in cache:
            preset, heads, overrides = MODELS[name]
            model = tiny_model(preset, heads, num_layers=1, **overrides)
            out = export_onnx(model, tmp_path_factory.mktemp("onnx") / name)
            cache[name] = (model, out)
        return cache[name]

    return get


def _batch(batch: int, length: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, length - 3 * row:] = 0
    types = torch.zeros_like(ids)
    types[:, length // 2:] = 1
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask, "token_type_ids": types * mask}


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", ["bert", "mobilebert"])
def test_fp32_onnx_equals_pytorch_at_any_batch_size_and_length(exported, family, head):
    model, out = exported(WHERE[family, head])
    onnx_model = OnnxModel(out, variant="fp32", threads=1)
    for batch, length, seed in ((1, 5, 0), (3, 37, 1), (2, 128, 2)):  # none of them the export's (2, 16)
        feed = _batch(batch, length, model.config.vocab_size, seed)
        with torch.no_grad():
            ref = model(**feed)
        got = onnx_model(**feed)
        for name in OUTPUTS[head]:
            expected, actual = getattr(ref, name), getattr(got, name)
            assert actual.shape == expected.shape
            torch.testing.assert_close(actual, expected, atol=PARITY_ATOL, rtol=PARITY_RTOL)
    if head == "regression":
        assert got.logits.shape == (2, 1)


def test_graph_inputs_have_dynamic_batch_and_sequence_axes(exported):
    _, out = exported("bert-multi")
    session = OnnxModel(out, threads=1).session
    assert [(i.name, i.shape, i.type) for i in session.get_inputs()] == [
        (name, ["batch", "sequence"], "tensor(int64)") for name in ("input_ids", "attention_mask", "token_type_ids")]
    assert [o.name for o in session.get_outputs()] == ["mlm_logits", "nsp_logits", "start_logits", "end_logits", "logits"]


def test_card_records_model_heads_opset_sizes_and_measured_parity(exported):
    model, out = exported("mobilebert-multi")
    card = read_card(out)
    assert card["model"]["family"] == "mobilebert"
    assert card["model"]["preset"] is None  # mobilebert-test with vocab_size 1000 is no preset
    assert card["heads"] == ["mlm", "nsp", "span_qa", "classifier"]
    assert card["opset"] == 18 and card["quantization"] == {"mode": "none"}
    assert card["files"]["fp32"]["bytes"] == (out / "model.onnx").stat().st_size
    assert card["default"] == "model.onnx" and not (out / "model.int8.onnx").exists()
    assert 0 < card["parity"]["max_abs_diff"] <= PARITY_ATOL and card["parity"]["within_tolerance"]
    assert card["model"]["parameters"] == model.num_parameters()
    assert any("NoNorm folded" in t for t in card["graph_transforms"])


@pytest.mark.parametrize("preset", ["mobilebert-test", "mobilebert-tiny-test"])
def test_folding_nonorm_removes_every_nonorm_and_keeps_the_function(preset, padded_batch, tiny_model):
    from leanbert.models.mobilebert import NoNorm

    model = tiny_model(preset, ["mlm"])
    folded = fold_mobilebert_no_norm(model)
    ids, mask = padded_batch
    with torch.no_grad():
        torch.testing.assert_close(folded(ids, mask).mlm_logits, model(ids, mask).mlm_logits, atol=1e-5, rtol=1e-5)
    assert sum(isinstance(m, NoNorm) for m in folded.modules()) == 0
    assert sum(isinstance(m, NoNorm) for m in model.modules()) > 0  # the model itself is left alone


def test_the_mobilebert_graph_holds_folded_weights_not_nonorm_parameters(exported):
    import onnx
    from onnx import numpy_helper

    from leanbert.models.mobilebert import NoNorm

    model, out = exported("mobilebert-reg")
    constants = [numpy_helper.to_array(t) for t in onnx.load(str(out / "model.onnx")).graph.initializer]

    def in_graph(v: torch.Tensor) -> bool:
        return any(c.shape == tuple(v.shape) and np.array_equal(c, v.detach().numpy()) for c in constants)

    norms = {name: m for name, m in model.named_modules() if isinstance(m, NoNorm)}
    residual = {n for n in norms if not n.endswith(("embeddings.norm", "input_bottleneck.norm"))}
    assert len(norms) == 6 and len(residual) == 4  # embedding + 1 layer x (bottleneck, attention, 2 FFNs, output)
    assert not any(in_graph(m.bias) for m in norms.values())  # every beta went into a bias
    # Each residual norm's gamma is either propagated into the next products or multiplied in
    # (times the scale carried so far); the last block's output norm multiplies its own gamma in
    # (the scale carried across blocks is 1 in the first block)
    assert [n for n, m in norms.items() if in_graph(m.weight)] == ["encoder.layers.0.output_bottleneck.norm"]
    transforms = json.loads((out / "card.json").read_text())["graph_transforms"]
    counts = [t for t in transforms if t.startswith("residual-norm scales propagated")]
    assert len(counts) == 1
    propagated, multiplied = (int(w) for w in counts[0].replace(",", "").split() if w.isdigit())
    assert propagated >= 1 and multiplied >= 1 and propagated + multiplied == len(residual)


@pytest.mark.parametrize("name", ["bert-multi", "mobilebert-reg"])
def test_attention_is_exported_with_an_additive_mask_and_no_nan_guard(exported, name):
    import onnx

    _, out = exported(name)
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert ops.count("Softmax") == 1  # one layer
    assert "IsNaN" not in ops  # SDPA's guard for fully masked rows, with its Where on the scores
    assert ops.count("Where") <= 1  # at most the boolean-to-additive mask, once per layer


# ----------------------------------------------------------------------------------------
# int8: dynamic on a real model and real dev data, static with calibration
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_probe(tmp_path_factory, minilm_dir, shared_file):
    """all-MiniLM-L6-v2 (real pretrained weights; its untrained pooler dropped) with an SST-2
    classifier head fitted on 192 training sentences (logistic regression on the [CLS] state),
    saved as a checkpoint that records its task, then exported with dynamic int8."""
    from sklearn.linear_model import LogisticRegression

    from leanbert.data.tokenizer import load_tokenizer
    from leanbert.tasks import get_task, glue
    from leanbert.tasks.finetune import collate, encode_glue

    sst2 = shared_file("glue/SST-2")
    spec = get_task("sst2")
    torch.manual_seed(0)
    model = leanbert.from_pretrained(minilm_dir, heads=["classifier"], new_heads=["classifier"], num_labels=2,
                                     use_pooler=False)
    train = encode_glue(spec, glue.read_glue(spec, sst2, "train", limit=192), load_tokenizer(minilm_dir), 64)
    with torch.no_grad():
        cls = torch.cat([model.encoder(**collate(train.input_ids[i:i + 64], train.token_type_ids[i:i + 64]))
                         .last_hidden_state[:, 0] for i in range(0, 192, 64)])
    clf = LogisticRegression(C=0.1, max_iter=1000).fit(cls.numpy(), np.array(train.targets))
    w, b = torch.tensor(clf.coef_[0], dtype=torch.float32), float(clf.intercept_[0])
    with torch.no_grad():
        model.classifier.classifier.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.classifier.classifier.bias.copy_(torch.tensor([-b / 2, b / 2]))
    root = tmp_path_factory.mktemp("probe")
    leanbert.save_pretrained(model, root / "ckpt", tokenizer_dir=minilm_dir,
                             metadata={"task": "sst2", "labels": ["0", "1"], "finetune": {"max_seq_length": 64}})
    out = export_onnx(root / "ckpt", root / "onnx", quantize="dynamic")
    return root / "ckpt", out, sst2


def _eval_cfg():
    from leanbert.tasks import get_task
    from leanbert.tasks.finetune import finetune_config

    return finetune_config(get_task("sst2"), overrides=["max_seq_length=64", f"eval_limit={SST2_DEV_SLICE}",
                                                         "threads=1", "progress=false"])


@pytest.fixture(scope="module")
def probe_accuracy(sst2_probe):
    """SST-2 dev-slice accuracy of the checkpoint (PyTorch), its fp32 export (API) and its int8
    export (through ``leanbert evaluate --onnx``, whose printed JSON is kept under "cli")."""
    import contextlib
    import io

    from leanbert.tasks.finetune import evaluate_checkpoint
    from leanbert.tasks.glue import read_predictions

    ckpt, out, sst2 = sst2_probe
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["evaluate", "--onnx", str(out), "--data", str(sst2), "--set", f"eval_limit={SST2_DEV_SLICE}",
                     "--set", "threads=1", "--output", str(out.parent / "int8-eval")])
    cli = json.loads(printed.getvalue().split("\nwrote ")[0])
    fp32 = evaluate_onnx(out, sst2, cfg=_eval_cfg(), variant="fp32", output=out.parent / "fp32-eval")
    return {
        "torch": evaluate_checkpoint(ckpt, sst2, cfg=_eval_cfg())["metrics"]["dev"]["accuracy"],
        "fp32": fp32["metrics"]["dev"]["accuracy"],
        "int8": cli["metrics"]["dev"]["accuracy"],
        "cli": cli, "cli_exit": code,
        "predictions": [read_predictions(out.parent / f"{v}-eval" / "predictions" / "dev.tsv") for v in ("fp32", "int8")],
    }


def test_fp32_onnx_scores_what_pytorch_scores_on_real_dev_data(probe_accuracy):
    assert probe_accuracy["fp32"] == probe_accuracy["torch"]
    assert probe_accuracy["torch"] > 0.6  # a real classifier: the majority class of the slice is < 0.52


def test_dynamic_int8_keeps_sst2_accuracy_within_two_points_of_fp32(probe_accuracy):
    assert abs(probe_accuracy["int8"] - probe_accuracy["fp32"]) <= 0.02


def test_dynamic_int8_predicts_the_fp32_label_for_most_sentences(probe_accuracy):
    # The probe's margins are small (a linear head on 192 sentences), so some labels flip: 91% of
    # the full SST-2 dev set keeps its fp32 label.
    fp32, int8 = probe_accuracy["predictions"]
    assert len(fp32) == len(int8) == SST2_DEV_SLICE
    assert sum(fp32[k] == int8[k] for k in fp32) >= 0.85 * SST2_DEV_SLICE


def test_dynamic_int8_file_is_at_most_a_third_of_fp32(sst2_probe):
    card = read_card(sst2_probe[1])
    assert card["quantization"]["mode"] == "dynamic" and card["default"] == "model.int8.onnx"
    assert card["files"]["int8"]["bytes"] < card["files"]["fp32"]["bytes"] / 3
    assert card["task"] == "sst2" and card["id2label"] == {"0": "0", "1": "1"}
    assert card["finetune"]["max_seq_length"] == 64


def test_evaluate_onnx_cli_runs_the_int8_file_with_the_recorded_task(probe_accuracy):
    printed = probe_accuracy["cli"]
    assert probe_accuracy["cli_exit"] == 0
    assert printed["task"] == "sst2" and printed["split"] == ["dev"]  # from the card: no --task given
    assert printed["quantization"] == "dynamic" and printed["model"].endswith("model.int8.onnx")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, minilm_dir):
    """bert-tiny with a (random) SST-2 classifier and span-QA head and the uncased BERT tokenizer."""
    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["classifier", "span_qa"], num_labels=2)
    out = tmp_path_factory.mktemp("tiny") / "ckpt"
    leanbert.save_pretrained(model, out, tokenizer_dir=minilm_dir,
                             metadata={"task": "sst2", "labels": ["0", "1"], "finetune": {"max_seq_length": 64}})
    return out


@pytest.fixture(scope="module")
def static_export(tiny_checkpoint, shared_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("static") / "onnx"
    code = main(["export", str(tiny_checkpoint), "--format", "onnx", "--quantize", "static", "--calibration",
                 str(shared_file("glue/SST-2")), "--calibration-size", "32", "--output", str(out)])
    assert code == 0
    return out


def test_static_int8_is_calibrated_on_the_task_training_text(static_export):
    calibration = read_card(static_export)["quantization"]["calibration"]
    assert calibration["what"] == "sst2 train (train.tsv)" and calibration["examples"] == 32


def test_static_int8_outputs_stay_within_eight_percent_of_fp32_on_dev_text(static_export, shared_file):
    import onnx

    fp32, int8 = OnnxModel(static_export, variant="fp32", threads=1), OnnxModel(static_export, threads=1)
    assert int8.variant == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8.file)).graph.node)  # QDQ graph
    dev, _ = calibration_batches(shared_file("glue/SST-2/dev.tsv"), _tokenizer(static_export), task="sst2", limit=64)
    for name in ("logits", "start_logits", "end_logits"):
        ref = np.concatenate([fp32.run(b)[name].ravel() for b in dev])
        got = np.concatenate([int8.run(b)[name].ravel() for b in dev])
        assert np.linalg.norm(got - ref) <= 0.08 * np.linalg.norm(ref)  # relative L2 error (measured 1-4%)


@pytest.fixture(scope="module")
def per_channel_export(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("per-channel") / "onnx"
    assert main(["export", str(tiny_checkpoint), "--format", "onnx", "--quantize", "dynamic", "--per-channel",
                 "--output", str(out)]) == 0
    return out


def test_per_channel_int8_has_one_scale_per_output_column_of_every_linear_weight(per_channel_export):
    import onnx
    from onnx import numpy_helper

    card = read_card(per_channel_export)
    assert card["quantization"]["per_channel"] is True
    assert card["quantization"]["weights"] == "int8, per output channel, symmetric"
    inits = {i.name: numpy_helper.to_array(i)
             for i in onnx.load(str(per_channel_export / "model.int8.onnx")).graph.initializer}
    weights = {n[: -len("_quantized")]: a.shape for n, a in inits.items()
               if n.endswith("_quantized") and a.ndim == 2 and "embeddings" not in n}
    # bert-tiny: 2 layers x (fused q/k/v, out, up, down) + pooler + classifier + span-QA head
    assert len(weights) == 2 * 4 + 3
    assert {n: inits[f"{n}_scale"].shape for n in weights} == {n: (shape[1],) for n, shape in weights.items()}


def test_a_quantization_aware_checkpoint_exports_per_channel_weights_by_default(tmp_path):
    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["classifier"], num_labels=2)
    leanbert.save_pretrained(model, tmp_path / "ckpt", metadata={"task": "sst2", "finetune": {"qat": True}})
    auto = read_card(export_onnx(tmp_path / "ckpt", tmp_path / "auto", quantize="dynamic"))
    told = read_card(export_onnx(tmp_path / "ckpt", tmp_path / "told", quantize="dynamic", per_channel=False))
    assert (auto["quantization"]["per_channel"], told["quantization"]["per_channel"]) == (True, False)


def _tokenizer(directory: Path):
    from leanbert.data.tokenizer import load_tokenizer

    return load_tokenizer(directory)


def test_static_export_card_names_the_preset_and_the_tokenizer(static_export):
    card = read_card(static_export)
    assert card["model"]["preset"] == "bert-tiny"
    assert "vocab.txt" in card["tokenizer_files"] and (static_export / "vocab.txt").is_file()


def test_squad_evaluation_of_an_export_scores_what_the_checkpoint_scores(static_export, tiny_checkpoint, shared_file):
    from leanbert.tasks import get_task
    from leanbert.tasks.finetune import evaluate_checkpoint, finetune_config

    squad = shared_file("squad/dev-v1.1.json")
    cfg = finetune_config(get_task("squad1"), overrides=["eval_limit=24", "max_seq_length=128", "doc_stride=64",
                                                         "threads=1", "progress=false"])
    onnx_report = evaluate_onnx(static_export, squad, task="squad1", cfg=cfg, variant="fp32")
    torch_report = evaluate_checkpoint(tiny_checkpoint, squad, task="squad1", cfg=cfg)
    assert onnx_report["data"]["dev"]["questions"] == 24
    assert onnx_report["metrics"] == torch_report["metrics"]
    assert onnx_report["metrics"]["dev"]["f1"] > 0  # some token overlap even at random: a real comparison


# ----------------------------------------------------------------------------------------
# calibration formats
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from leanbert.data.tokenizer import load_tokenizer

    return load_tokenizer(minilm_dir)


def test_calibration_text_file_is_one_example_per_line_with_a_tab_for_pairs(tmp_path, tokenizer):
    path = tmp_path / "calib.txt"
    path.write_text("a fine film .\n\nthe cat sat .\tit was on the mat .\nno .\n", encoding="utf-8")
    batches, info = calibration_batches(path, tokenizer, batch_size=2)
    assert info["examples"] == 3 and [b["input_ids"].shape[0] for b in batches] == [2, 1]
    pair = max((b for b in batches), key=lambda b: b["input_ids"].shape[1])
    assert pair["token_type_ids"].max() == 1  # the tab-separated pair has a second segment


def test_calibration_tokenizes_glue_text_exactly_as_fine_tuning_does(shared_file, tokenizer):
    from leanbert.tasks import get_task, glue
    from leanbert.tasks.finetune import encode_glue

    spec = get_task("mrpc")  # sentence pairs, truncated longest-first
    split = glue.read_glue(spec, shared_file("glue/MRPC"), "train", limit=24)
    batches, info = calibration_batches(shared_file("glue/MRPC"), tokenizer, task="mrpc", max_length=32, limit=24)
    enc = encode_glue(spec, split, tokenizer, 32)
    expected = sorted((tuple(i), tuple(t)) for i, t in zip(enc.input_ids, enc.token_type_ids, strict=True))
    got = sorted((tuple(int(x) for x in ids[mask == 1]), tuple(int(x) for x in types[mask == 1]))
                 for b in batches for ids, types, mask in zip(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                                                              strict=True))
    assert info["what"] == "mrpc train (train.tsv)" and got == expected


def test_calibration_from_a_squad_file_uses_question_and_context_windows(shared_file, tokenizer):
    batches, info = calibration_batches(shared_file("squad/dev-v1.1.json"), tokenizer, max_length=128, limit=10)
    assert info["examples"] >= 10 and all(b["input_ids"].shape[1] <= 128 for b in batches)
    assert all(b["token_type_ids"].max() == 1 for b in batches)


# ----------------------------------------------------------------------------------------
# the CLI's one-line errors
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm") / "ckpt"
    leanbert.save_pretrained(leanbert.build_model("bert-tiny", heads=["mlm"], vocab_size=1000), out)
    return out


def _fails(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_export_of_a_directory_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    err = _fails(capsys, "export", str(tmp_path), "--format", "onnx", "-o", str(tmp_path / "out"))
    assert "is not a checkpoint directory (no config.json)" in err


def test_export_of_a_head_the_checkpoint_lacks_is_one_line(mlm_checkpoint, tmp_path, capsys):
    err = _fails(capsys, "export", str(mlm_checkpoint), "--format", "onnx", "--heads", "span_qa", "-o", str(tmp_path / "o"))
    assert "no weights for the 'span_qa' head (it holds mlm)" in err


def test_calibration_data_that_does_not_exist_is_one_line(mlm_checkpoint, tmp_path, capsys):
    err = _fails(capsys, "export", str(mlm_checkpoint), "--format", "onnx", "--quantize", "static",
                 "--calibration", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o"))
    assert "calibration data not found" in err


def test_empty_calibration_data_is_one_line(mlm_checkpoint, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    err = _fails(capsys, "export", str(mlm_checkpoint), "--format", "onnx", "--quantize", "static",
                 "--calibration", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "o"))
    assert "is empty" in err


def test_calibration_without_static_quantization_is_one_line(mlm_checkpoint, tmp_path, capsys):
    (tmp_path / "c.txt").write_text("a sentence\n")
    err = _fails(capsys, "export", str(mlm_checkpoint), "--format", "onnx", "--quantize", "dynamic",
                 "--calibration", str(tmp_path / "c.txt"), "-o", str(tmp_path / "o"))
    assert "only used by static quantization" in err


def test_static_quantization_without_calibration_is_one_line(mlm_checkpoint, tmp_path, capsys):
    err = _fails(capsys, "export", str(mlm_checkpoint), "--format", "onnx", "--quantize", "static",
                 "-o", str(tmp_path / "o"))
    assert "--quantize static needs --calibration DATA" in err


def test_per_channel_without_quantization_is_one_line(mlm_checkpoint, tmp_path, capsys):
    err = _fails(capsys, "export", str(mlm_checkpoint), "--format", "onnx", "--per-channel", "-o", str(tmp_path / "o"))
    assert "per-channel weights are an int8 option; add --quantize dynamic" in err


def test_quantize_with_another_format_is_one_line(mlm_checkpoint, tmp_path, capsys):
    err = _fails(capsys, "export", str(mlm_checkpoint), "--quantize", "dynamic", "-o", str(tmp_path / "o"))
    assert "only apply to --format onnx" in err


def test_missing_onnxruntime_names_the_pip_command(mlm_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    err = _fails(capsys, "export", str(mlm_checkpoint), "--format", "onnx", "-o", str(tmp_path / "o"))
    assert "needs onnxruntime, which is not installed; pip install 'leanbert[export]'" in err
    assert not (tmp_path / "o").exists()


def test_asking_for_int8_of_an_fp32_export_says_how_to_get_one(exported):
    from leanbert.errors import ConfigError

    _, out = exported("bert-multi")
    with pytest.raises(ConfigError, match="has no int8 model .* --quantize dynamic or static"):
        OnnxModel(out, variant="int8")
