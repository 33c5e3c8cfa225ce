"""Knowledge transfer (leanbert.distill.transfer): the loss terms, the stages and their
learning-rate multipliers, resume in mid-stage, and bad input, on real text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from leanbert.distill.transfer import (
    attention_term,
    distill,
    feature_map_terms,
    layer_map,
    load_distill_config,
    lr_multipliers,
    phase_at,
    phases,
    soft_target_ce,
)
from leanbert.errors import CheckpointError, ConfigError
from leanbert.train.state import list_checkpoints

QUIET = ["student.max_position_embeddings=32", "log.every=1", "log.progress=false", "log.tensorboard=false",
         "data.batch_size=8", "eval.every=1000", "train.precision=fp32", "train.deterministic=true",
         "student.attention_dropout=0.0"]


# ---------------------------------------------------------------------------- the losses


def test_feature_map_terms_equal_the_direct_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g) * 2 + 1
    mse, mean, var = feature_map_terms(s, t)

    def norm(x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)

    torch.testing.assert_close(mse, ((norm(s) - norm(t)) ** 2).mean(-1))
    torch.testing.assert_close(mean, (s.mean(-1) - t.mean(-1)) ** 2)
    torch.testing.assert_close(var, (s.var(-1, unbiased=False) - t.var(-1, unbiased=False)).abs())


def test_attention_term_is_the_cross_entropy_from_the_teacher_per_head():
    g = torch.Generator().manual_seed(1)
    s_scores, t_scores = torch.randn(2, 4, 5, 6, generator=g), torch.randn(2, 4, 5, 6, generator=g)
    t_probs = t_scores.softmax(-1)
    got = attention_term(s_scores, t_probs)
    expected = -(t_probs * s_scores.log_softmax(-1)).sum(-1).mean(1)
    torch.testing.assert_close(got, expected)
    kl = F.kl_div(s_scores.log_softmax(-1), t_probs, reduction="none").sum(-1).mean(1)
    entropy = -(t_probs * t_probs.log()).sum(-1).mean(1)
    torch.testing.assert_close(got, kl + entropy)  # KL divergence up to the teacher's entropy


def test_soft_target_cross_entropy_mixes_one_hot_and_teacher_halves():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    labels = torch.tensor([1, -100, 4])
    got = soft_target_ce(student, teacher, labels, temperature=2.0, teacher_weight=0.5)
    target = 0.5 * F.one_hot(labels.clamp(min=0), 7).float() + 0.5 * (teacher / 2.0).softmax(-1)
    expected = -(target * student.log_softmax(-1)).sum(-1)
    assert got[1] == 0.0
    torch.testing.assert_close(got[[0, 2]], expected[[0, 2]])


def test_layer_map_takes_every_kth_teacher_layer():
    assert layer_map(4, 4) == [0, 1, 2, 3]
    assert layer_map(4, 12) == [2, 5, 8, 11]
    with pytest.raises(ConfigError, match="not a multiple"):
        layer_map(5, 12)


# ---------------------------------------------------------------------------- the stages


def test_progressive_plan_has_one_stage_per_layer_then_pretraining_distillation():
    cfg = load_distill_config("demo", ["transfer.steps_per_stage=5", "pretrain_distill.steps=7"])
    plan = phases("progressive", 3, cfg)
    assert [(p.kind, p.layers, p.start, p.length) for p in plan] == [
        ("transfer", (0,), 0, 5), ("transfer", (1,), 5, 5), ("transfer", (2,), 10, 5), ("pretrain_distill", (), 15, 7)]
    assert phase_at(plan, 7).trained_layer == 1 and phase_at(plan, 21).kind == "pretrain_distill"
    assert [p.kind for p in phases("joint", 3, cfg)] == ["transfer", "pretrain_distill"]
    assert phases("joint", 3, cfg)[0].layers == (0, 1, 2)
    assert [(p.kind, p.layers) for p in phases("auxiliary", 3, cfg)] == [("pretrain_distill", (0, 1, 2))]


@pytest.mark.parametrize(("mode", "below"), [("multipliers", 0.3), ("freeze_previous", 0.0)])
def test_stage_multipliers_follow_the_reference(mode, below):
    cfg = load_distill_config("demo", [f"transfer.lr_mode={mode}", "transfer.steps_per_stage=5"])
    stage = phases("progressive", 4, cfg)[2]
    assert lr_multipliers(stage, 4, cfg.transfer) == {
        "other": 0.0, "layer.0": below, "layer.1": below, "layer.2": 3.0, "layer.3": 0.0}
    assert lr_multipliers(phases("progressive", 4, cfg)[-1], 4, cfg.transfer) == {}  # distillation: all x1


# ---------------------------------------------------------------------------- runs on real text


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_file):
    """WikiText-2 validation text in 32-token examples, and an ib-bert-test teacher pretrained
    for a few steps on it."""
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("distill")
    text = shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens")
    prepare(text, train_tokenizer(text, vocab_size=1500), root / "data", {"seq_length": 32, "validation_fraction": 0.05},
            workers=0)
    pretrain(load_pretrain_config("demo", ["model.preset=ib-bert-test", "model.max_position_embeddings=32",
                                           "train.max_steps=20", "log.progress=false", "log.tensorboard=false",
                                           "data.batch_size=8", "eval.every=1000", "optim.lr=2e-3"]),
             root / "data", root / "teacher")
    return root / "data", root / "teacher" / "model"


def run(setup, out: Path, *sets: str, **kw):
    data, teacher = setup
    return distill(load_distill_config("demo", [*QUIET, *sets]), teacher, data, out, **kw)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(out)[-1] / "model.safetensors")


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["multipliers", "freeze_previous"])
def test_parameters_outside_the_stage_stay_bit_identical(setup, tmp_path, mode):
    # After stage 0 and after stage 1 (layer 0 trained, then layer 1), with 2 layers.
    sets = ["transfer.steps_per_stage=3", "pretrain_distill.steps=0", f"transfer.lr_mode={mode}",
            "checkpoint.every=3", "checkpoint.keep_last=3"]
    run(setup, tmp_path / "run", *sets, stop_after=0)  # stops after step 1 (stage 0: layer 0 only)
    start = load_file(list_checkpoints(tmp_path / "run")[-1] / "model.safetensors")
    run(setup, tmp_path / "run", *sets)
    after0 = load_file(list_checkpoints(tmp_path / "run")[-2] / "model.safetensors")
    after1 = load_file(list_checkpoints(tmp_path / "run")[-1] / "model.safetensors")

    def same(a, b, prefix):
        keys = [k for k in a if k.startswith(prefix)]
        return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)

    assert same(start, after0, "encoder.layers.1.") and same(start, after0, "encoder.embeddings.")
    assert not same(start, after0, "encoder.layers.0.")
    assert same(after0, after1, "encoder.embeddings.") and not same(after0, after1, "encoder.layers.1.")
    assert same(after0, after1, "encoder.layers.0.") == (mode == "freeze_previous")


def test_the_students_transfer_loss_falls_on_real_text(setup, tmp_path):
    run(setup, tmp_path / "run", "transfer.steps_per_stage=25", "pretrain_distill.steps=0", "student.num_layers=2",
        "optim.lr=3e-3")
    hidden = [r["hidden_loss"] for r in records(tmp_path / "run") if r["kind"] == "train"][:25]  # stage 0: layer 1
    assert sum(hidden[-5:]) / 5 < 0.8 * sum(hidden[:5]) / 5
    assert all(math.isfinite(r["loss"]) for r in records(tmp_path / "run") if r["kind"] == "train")


def test_resume_in_mid_stage_is_bitwise_identical(setup, tmp_path):
    sets = ["transfer.steps_per_stage=4", "pretrain_distill.steps=3", "checkpoint.every=2"]
    run(setup, tmp_path / "full", *sets)
    first = run(setup, tmp_path / "cut", *sets, stop_after=5)  # in the middle of stage 1 (layer 2 of 2)
    assert first.interrupted and first.steps == 5
    second = run(setup, tmp_path / "cut", *sets)
    assert second.steps == 11
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_loss_term_is_logged_and_distillation_ends_with_the_mlm(setup, tmp_path):
    result = run(setup, tmp_path / "run", "transfer.steps_per_stage=2", "pretrain_distill.steps=2", "eval.every=2")
    train = [r for r in records(tmp_path / "run") if r["kind"] == "train"]
    assert {"hidden_loss", "attention_loss", "mean_loss", "variance_loss", "mlm_loss"} <= set(train[0])
    assert train[0]["hidden_loss"] > 0 and train[0]["mlm_loss"] == 0
    assert train[-1]["mlm_loss"] > 0 and train[-1]["hidden_loss"] == 0
    assert result.eval_after is not None and (tmp_path / "run" / "model" / "config.json").is_file()
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model"]
    assert saved["model_type"] == "mobilebert" and saved["intra_bottleneck_size"] == 32


def test_the_student_starts_from_the_teachers_embeddings_and_heads(setup, tmp_path):
    from leanbert.checkpoint import read_state_dict

    run(setup, tmp_path / "run", "transfer.steps_per_stage=2", "pretrain_distill.steps=0", stop_after=0)
    student = load_file(list_checkpoints(tmp_path / "run")[-1] / "model.safetensors")
    teacher = read_state_dict(setup[1])
    for key in ("encoder.embeddings.word.weight", "encoder.embeddings.projection.weight", "mlm.dense.weight"):
        assert torch.equal(student[key], teacher[key]), key


# ---------------------------------------------------------------------------- bad input


def test_a_bert_student_is_refused(setup, tmp_path):
    with pytest.raises(ConfigError, match="MobileBERT-shaped student"):
        run(setup, tmp_path / "run", "student={preset: bert-tiny}")


def test_different_widths_without_a_projection_are_refused(setup, tmp_path):
    with pytest.raises(ConfigError, match="transfer.projection is off"):
        run(setup, tmp_path / "run", "student.hidden_size=32", "student.embedding_size=16", "transfer.projection=false")


def test_different_widths_train_through_a_projection(setup, tmp_path):
    result = run(setup, tmp_path / "run", "student.hidden_size=32", "transfer.steps_per_stage=2",
                 "pretrain_distill.steps=0", "transfer.copy_from_teacher=false")
    assert result.steps == 4


def test_a_plain_bert_teacher_of_another_width_and_head_count_distils_through_a_projection(setup, tmp_path, capsys):
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    data, _ = setup
    pretrain(load_pretrain_config("demo", ["model.preset=bert-tiny", "model.max_position_embeddings=32",
                                           "train.max_steps=2", "log.progress=false", "log.tensorboard=false",
                                           "data.batch_size=8", "eval.every=1000"]), data, tmp_path / "bert")
    result = distill(load_distill_config("demo", [*QUIET, "transfer.steps_per_stage=2", "pretrain_distill.steps=2"]),
                     tmp_path / "bert" / "model", data, tmp_path / "run")
    assert result.steps == 6  # 2 layers x 2 transfer steps + 2 distillation steps
    assert "attention transfer is skipped" in capsys.readouterr().err
    train = [r for r in records(tmp_path / "run") if r["kind"] == "train"]
    assert train[0]["hidden_loss"] > 0 and train[0]["attention_loss"] == 0


def test_a_teacher_that_is_not_a_checkpoint_is_one_error(setup, tmp_path):
    data, _ = setup
    with pytest.raises(CheckpointError, match="not a checkpoint directory|checkpoint not found"):
        distill(load_distill_config("demo", QUIET), tmp_path, data, tmp_path / "run")


# ---------------------------------------------------------------------------- token dropping


def test_token_dropping_in_pretraining_distillation_lowers_the_counted_flops(setup, tmp_path):
    sets = ["transfer.steps_per_stage=1", "pretrain_distill.steps=3"]
    run(setup, tmp_path / "full", *sets)
    run(setup, tmp_path / "drop", *sets, "token_dropping.method=token", "token_dropping.keep=0.5")
    full = [r for r in records(tmp_path / "full") if r["kind"] == "train"]
    drop = [r for r in records(tmp_path / "drop") if r["kind"] == "train"]
    assert [r["flops_per_step"] for r in drop[:2]] == [r["flops_per_step"] for r in full[:2]]  # transfer stages
    assert all(d["flops_per_step"] < f["flops_per_step"] for d, f in zip(drop[2:], full[2:], strict=True))
    assert all(math.isfinite(r["mlm_loss"]) for r in drop[2:])
    extra = load_file(list_checkpoints(tmp_path / "drop")[-1] / "extra.safetensors")
    assert "token_dropping.scores" in extra and not torch.all(extra["token_dropping.scores"] == 10.0)


def test_token_dropping_with_auxiliary_transfer_is_refused():
    with pytest.raises(ConfigError, match="pretraining distillation alone"):
        load_distill_config("demo", ["strategy=auxiliary", "token_dropping.method=token"])
