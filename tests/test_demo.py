"""`leanbert demo` end to end on a small slice of real text (the full demo runs in `make demo`)."""

from __future__ import annotations

from pathlib import Path

from leanbert.cli import main


def test_demo_pipeline_on_real_text(shared_data, tmp_path, capsys):
    corpus = shared_data / "pretrain" / "wikitext-2-tokens" / "wiki.valid.tokens"
    rc = main(["demo", "--skip-pretrained", "--corpus", str(corpus), "--output", str(tmp_path / "demo"),
               "--vocab-size", "1500", "--length", "32",
               "--set", "model.preset=bert-tiny", "--set", "model.hidden_size=64", "--set", "model.num_heads=2",
               "--set", "model.intermediate_size=128", "--set", "train.max_steps=6", "--set", "eval.every=3",
               "--set", "eval.batches=2", "--set", "log.progress=false", "--set", "data.batch_size=8"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "held-out MLM loss" in out and "fill-mask" in out and "AutoModelForMaskedLM loads it" in out
    demo = Path(tmp_path / "demo")
    for path in ("tokenizer/vocab.txt", "data/manifest.json", "run/model/model.safetensors",
                 "pretrained-transformers/config.json"):
        assert (demo / path).is_file(), path
