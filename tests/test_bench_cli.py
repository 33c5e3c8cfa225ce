"""`leanbert bench NAME` runs the benchmarks of benchmarks/ (smoke runs; never timing ratios)."""

from __future__ import annotations

import json

import pytest

from leanbert.cli import main


def test_bench_finetune_quick(tmp_path, shared_file, minilm_dir, capsys):
    pytest.importorskip("transformers")
    data = shared_file("glue/SST-2")
    out = tmp_path / "f.json"
    assert main(["bench", "finetune", "--quick", "--data", str(data), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    names = set(report["candidates"])
    expected = {"transformers fp32", "transformers bf16", "leanbert fp32"}
    if report["leanbert_has_precision"]:
        expected.add("leanbert bf16")
    assert names == expected
    for result in report["candidates"].values():
        assert result["examples_per_s"] > 0
        assert result["whole_call_examples_per_s"] > 0
    assert report["settings"]["examples"] == 64
    assert report["first_step_loss_check"]["abs_diff"] < 1e-3
    assert "leanbert fp32 / transformers fp32" in capsys.readouterr().out
