"""Continued pretraining (``leanbert pretrain --init DIR``): the run starts from a checkpoint's
weights, missing heads are initialised, positions are extended, vocabularies must match."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import leanbert
from leanbert.cli import main
from leanbert.errors import ConfigError
from leanbert.train.config import load_pretrain_config
from leanbert.train.pretrain import (
    MLMObjective,
    evaluate_mlm,
    extend_positions,
    init_model,
    pretrain,
)
from leanbert.train.state import list_checkpoints

RUN = ["data.batch_size=4", "data.max_predictions=5", "train.precision=fp32", "train.deterministic=true",
       "eval.batches=2", "eval.batch_size=4", "eval.every=1000", "log.every=1", "log.progress=false",
       "log.tensorboard=false", "optim.warmup_steps=0", "optim.lr=1e-3", "checkpoint.every=1000"]


@pytest.fixture(scope="module")
def wiki(shared_file) -> Path:
    return shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens")


@pytest.fixture(scope="module")
def bert_vocab_data(tmp_path_factory, wiki, minilm_dir) -> Path:
    """60 KB of WikiText-2 in 32-token examples, tokenised with MiniLM's (= BERT's uncased) vocab."""
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import tokenizer_from_vocab

    root = tmp_path_factory.mktemp("bert-vocab")
    text = root / "wiki.txt"
    text.write_text(wiki.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    prepare(text, tokenizer_from_vocab(minilm_dir / "vocab.txt"), root / "data",
            {"seq_length": 32, "validation_fraction": 0.1})
    return root / "data"


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory, wiki) -> tuple[Path, Path]:
    """(prepared data with a 1,000-token WordPiece vocabulary at length 32, a tiny BERT checkpoint
    without heads and with only 16 positions, saved with that tokenizer)."""
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("small-vocab")
    text = root / "wiki.txt"
    text.write_text(wiki.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    tok = train_tokenizer(text, vocab_size=1000)
    prepare(text, tok, root / "data", {"seq_length": 32, "validation_fraction": 0.1})
    torch.manual_seed(1)
    model = leanbert.build_model("bert-tiny", vocab_size=tok.get_vocab_size(), hidden_size=32, num_heads=2,
                                 intermediate_size=64, num_layers=2, max_position_embeddings=16, heads=[])
    leanbert.save_pretrained(model, root / "ckpt", tokenizer_dir=root / "data" / "tokenizer")
    return root / "data", root / "ckpt"


def run_cfg(init, *extra: str):
    return load_pretrain_config("demo", [*RUN, *extra], init=init)


@pytest.fixture(scope="module")
def minilm_start(minilm_dir, bert_vocab_data):
    """What a run from MiniLM starts with (seed 0): (model, InitReport)."""
    return init_model(minilm_dir, data_tokenizer=bert_vocab_data / "tokenizer", seq_length=32, heads=["mlm"], seed=0)


def test_init_from_minilm_holds_its_weights_and_a_new_tied_mlm_head(minilm_dir, minilm_start):
    model, report = minilm_start
    raw = load_file(minilm_dir / "model.safetensors")
    raw = {k.removeprefix("bert."): v for k, v in raw.items()}
    assert torch.equal(model.encoder.embeddings.word.weight, raw["embeddings.word_embeddings.weight"])
    assert torch.equal(model.encoder.layers[5].ffn.down.weight, raw["encoder.layer.5.output.dense.weight"])
    reference = leanbert.from_pretrained(minilm_dir).state_dict()
    ours = model.state_dict()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)  # every checkpoint weight, unchanged
    assert report.new == ["mlm"] and report.positions is None
    assert model.mlm_decoder_weight() is model.encoder.embeddings.word.weight  # tied, not copied
    assert not model.mlm.bias.any() and torch.equal(model.mlm.norm.weight, torch.ones(384))
    assert "has no MLM head" in report.messages()[0]


def test_pretraining_from_minilm_starts_at_its_weights_and_trains(minilm_dir, minilm_start, bert_vocab_data,
                                                                 tmp_path, capfd):
    cfg = run_cfg(minilm_dir, "train.max_steps=1", "train.speedups=false", "eval.batches=1")
    res = pretrain(cfg, bert_vocab_data, tmp_path / "run")
    err = capfd.readouterr().err
    assert "starting from the weights of" in err and "has no MLM head" in err
    assert res.steps == 1 and math.isfinite(res.eval_after["mlm_loss"])
    # step 0 of the run is the checkpoint (+ the new head built from the same seed): same held-out loss
    from leanbert.train.data import PretrainData

    data = PretrainData(bert_vocab_data, cfg.data, seed=cfg.train.seed)
    expected = evaluate_mlm(minilm_start[0], data.eval_batches(1, 4), torch.device("cpu"), "fp32", MLMObjective())
    assert res.eval_before["mlm_loss"] == pytest.approx(expected["mlm_loss"], rel=1e-5)
    assert res.eval_before["mlm_loss"] > 8.0  # a random head over 30,522 tokens (ln V = 10.3)
    from leanbert.checkpoint import read_metadata

    saved = read_metadata(res.model_dir)
    assert saved["init"]["from"] == str(minilm_dir) and saved["init"]["new"] == ["mlm"]


def test_short_position_table_is_extended_by_copying_the_learnt_rows(small_vocab, tmp_path, capfd):
    data, ckpt = small_vocab
    old = leanbert.from_pretrained(ckpt).encoder.embeddings.position.weight.detach()
    model, report = init_model(ckpt, data_tokenizer=data / "tokenizer", seq_length=32, heads=["mlm"])
    table = model.encoder.embeddings.position.weight
    assert table.shape == (32, 32) and report.positions == (16, 32)
    assert torch.equal(table[:16], old) and torch.equal(table[16:], old)
    assert torch.equal(extend_positions(old, 40)[32:], old[:8])
    pretrain(run_cfg(ckpt, "train.max_steps=1", "eval.at_start=false"), data, tmp_path / "run")
    assert "extended the position embeddings from 16 to 32: rows 0-15 are the checkpoint's, rows 16-31 repeat them" \
        in capfd.readouterr().err


def test_a_longer_position_table_can_be_asked_for(small_vocab):
    data, ckpt = small_vocab
    model, report = init_model(ckpt, data_tokenizer=data / "tokenizer", seq_length=32, heads=["mlm"],
                               overrides={"max_position_embeddings": 48, "hidden_dropout": 0.0})
    assert model.config.max_position_embeddings == 48 and report.positions == (16, 48)
    assert model.config.hidden_dropout == 0.0  # dropout may differ from the checkpoint's


@pytest.mark.parametrize("override,message", [
    ("model.num_layers=3", r"model.num_layers=3 contradicts the checkpoint .*config.json \(num_layers 2\)"),
    ("model.hidden_size=64", r"model.hidden_size=64 contradicts the checkpoint"),
    ("model.preset=bert-base", r"model.preset cannot be set with --init"),
    ("model.max_position_embeddings=8", r"smaller than the checkpoint's 16"),
    ("model.hiden_size=32", r"unknown key 'model.hiden_size' \(did you mean 'hidden_size'\?\)"),
])
def test_a_model_setting_that_contradicts_the_checkpoint_is_refused(small_vocab, tmp_path, override, message):
    data, ckpt = small_vocab
    with pytest.raises(ConfigError, match=message):
        pretrain(run_cfg(ckpt, override), data, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_vocabulary_size_mismatch_names_both_files(minilm_dir, small_vocab, tmp_path, capsys):
    data, _ = small_vocab
    rc = main(["pretrain", "--init", str(minilm_dir), "--data", str(data), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert (f"vocabulary mismatch: {minilm_dir / 'tokenizer.json'} has 30522 tokens, the data's "
            f"{data / 'tokenizer' / 'tokenizer.json'} has 1000") in err


def _with_vocab(ckpt: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``ckpt`` whose tokenizer is only a vocab.txt, edited by ``edit(lines)``."""
    out = tmp_path / "edited"
    shutil.copytree(ckpt, out)
    (out / "tokenizer.json").unlink()
    lines = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (out / "vocab.txt").write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    return out


def test_special_token_ids_must_match(small_vocab, tmp_path):
    data, ckpt = small_vocab
    swapped = _with_vocab(ckpt, tmp_path, lambda v: [v[0], v[1], v[3], v[2], *v[4:]])  # [CLS] <-> [SEP]
    with pytest.raises(ConfigError, match=r"\[CLS\] is id 3 in .*edited/vocab.txt but id 2 in the data's .*tokenizer.json"):
        pretrain(run_cfg(swapped), data, tmp_path / "run")


def test_vocabulary_text_must_match(small_vocab, tmp_path):
    data, ckpt = small_vocab
    changed = _with_vocab(ckpt, tmp_path, lambda v: [*v[:500], "zzzz", *v[501:]])
    with pytest.raises(ConfigError, match=r"id 500 is 'zzzz' in .*edited/vocab.txt but '.*' in the data's"):
        pretrain(run_cfg(changed), data, tmp_path / "run")


def test_init_run_resumes_from_its_own_checkpoint(small_vocab, tmp_path, capfd):
    data, ckpt = small_vocab
    cfg = run_cfg(ckpt, "train.max_steps=4", "checkpoint.every=2", "eval.at_start=false")
    pretrain(cfg, data, tmp_path / "full")
    first = pretrain(cfg, data, tmp_path / "cut", stop_after=2)
    assert first.interrupted
    capfd.readouterr()
    second = pretrain(cfg, data, tmp_path / "cut")
    assert second.steps == 4 and "resuming from step-00000002" in capfd.readouterr().err
    a = load_file(list_checkpoints(tmp_path / "full")[-1] / "model.safetensors")
    b = load_file(list_checkpoints(tmp_path / "cut")[-1] / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
