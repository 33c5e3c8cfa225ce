"""Checkpoint directories: exact round trips, atomic writes, and one clear error per bad input."""

from __future__ import annotations

import json

import pytest
import torch

import leanbert
from leanbert.checkpoint import read_metadata
from leanbert.errors import CheckpointError


@pytest.fixture
def model():
    return leanbert.build_model("bert-tiny", heads=["mlm", "nsp"]).eval()


@pytest.fixture
def saved(tmp_path, model):
    return leanbert.save_pretrained(model, tmp_path / "ckpt", metadata={"step": 3})


def test_save_load_round_trip_is_exact(saved, model):
    back = leanbert.from_pretrained(saved)
    assert back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert read_metadata(saved) == {"step": 3}


def test_checkpoint_layout_is_safetensors_and_json(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["config.json", "model.safetensors"]
    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["leanbert_format"] == 1 and cfg["model"]["num_layers"] == 2


def test_tokenizer_files_travel_with_the_checkpoint(tmp_path, minilm_dir):
    m = leanbert.from_pretrained(minilm_dir)
    out = leanbert.save_pretrained(m, tmp_path / "c")
    assert (out / "vocab.txt").read_bytes() == (minilm_dir / "vocab.txt").read_bytes()
    assert (out / "tokenizer.json").is_file()


def test_overwrite_replaces_whole_directory(tmp_path, model, saved):
    (saved / "stale.txt").write_text("x")
    leanbert.save_pretrained(model, saved, overwrite=True)
    assert not (saved / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_saving_over_a_directory_with_foreign_files_is_refused(model, saved):
    from leanbert.io import OutputError

    (saved / "stale.txt").write_text("x")
    with pytest.raises(OutputError, match="stale.txt"):
        leanbert.save_pretrained(model, saved)
    assert (saved / "stale.txt").read_text() == "x"


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, model, saved, monkeypatch):
    import safetensors.torch

    before = (saved / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(RuntimeError):
        leanbert.save_pretrained(model, saved)
    assert (saved / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp debris


def test_heads_can_be_dropped_on_load(saved):
    enc = leanbert.from_pretrained(saved, heads=[])
    assert enc.heads == [] and enc.mlm is None


def test_new_head_is_created_only_on_request(saved):
    with pytest.raises(CheckpointError, match="no weights for the 'classifier' head"):
        leanbert.from_pretrained(saved, heads=["classifier"])
    m = leanbert.from_pretrained(saved, heads=["mlm"], new_heads=["classifier"], num_labels=3)
    assert m.classifier.classifier.out_features == 3


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        leanbert.from_pretrained(tmp_path / "nope")


def test_directory_without_config(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        leanbert.from_pretrained(tmp_path / "d")


def test_file_instead_of_directory(saved):
    with pytest.raises(CheckpointError, match="is a file"):
        leanbert.from_pretrained(saved / "model.safetensors")


def test_unknown_config_key(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["model"]["hidden_sise"] = 128
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unknown key 'hidden_sise' \(did you mean 'hidden_size'"):
        leanbert.from_pretrained(saved)


def test_wrongly_typed_config_value(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["model"]["num_layers"] = "two"
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="key 'num_layers'"):
        leanbert.from_pretrained(saved)


def test_invalid_json_config(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        leanbert.from_pretrained(saved)


def test_weights_that_do_not_match_config(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["model"]["intermediate_size"] = 256
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"has shape \[128, 512\] but config.json implies \[128, 256\]"):
        leanbert.from_pretrained(saved)


def test_truncated_safetensors(saved):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        leanbert.from_pretrained(saved)


def test_empty_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        leanbert.from_pretrained(saved)


def test_missing_weight(saved):
    from safetensors.torch import load_file, save_file

    state = load_file(saved / "model.safetensors")
    del state["encoder.layers.1.ffn.up.weight"]
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="'encoder.layers.1.ffn.up.weight' is missing"):
        leanbert.from_pretrained(saved)


def test_newer_format_is_refused(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["leanbert_format"] = 99
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format 99 is not supported"):
        leanbert.from_pretrained(saved)


def test_pickle_checkpoint_is_read_with_weights_only(tmp_path):
    """A pytorch_model.bin that smuggles a Python object is refused, never executed."""
    transformers = pytest.importorskip("transformers")

    class Evil:
        def __reduce__(self):
            return (exec, ("open('PWNED','w').write('x')",))

    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(transformers.BertConfig(num_hidden_layers=1).to_dict()))
    torch.save({"x": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="could not be read safely"):
        leanbert.from_pretrained(d)
    assert not (tmp_path / "PWNED").exists()
