"""The `leanbert` program: help, version, stages, and errors as one line without traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import leanbert
from leanbert.cli import STAGES, main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"leanbert {leanbert.__version__}"


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for stage in ("tokenizer", "data", "pretrain", "distill", "finetune", "evaluate", "export", "bench", "report", "demo"):
        assert stage in out


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as e:
        main([stage, "--help"])
    assert e.value.code == 0


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2


def test_info_counts_parameters_of_a_preset(capsys):
    assert main(["info", "bert-base", "--heads", "", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == 109_482_240


def test_info_on_bad_preset_is_one_line(capsys):
    assert main(["info", "bert-huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model preset 'bert-huge'" in err[0]


def test_export_round_trip_through_cli(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    model = leanbert.build_model("bert-tiny", heads=["mlm"])
    leanbert.save_pretrained(model, tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--output", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")
    assert type(hf).__name__ == "BertForMaskedLM"
    assert main(["export", str(tmp_path / "hf"), "--format", "leanbert", "--output", str(tmp_path / "back")]) == 0
    back = leanbert.from_pretrained(tmp_path / "back")
    assert back.heads == ["mlm"]


@pytest.mark.parametrize("make_bad,expected", [
    (lambda p: None, "checkpoint not found"),
    (lambda p: p.mkdir(), "not a checkpoint directory"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("[1, 2")), "not valid JSON"),
])
def test_bad_checkpoint_is_one_line_without_traceback(tmp_path, make_bad, expected):
    bad = tmp_path / "bad"
    make_bad(bad)
    proc = subprocess.run([sys.executable, "-m", "leanbert.cli", "export", str(bad), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]
    assert "Traceback" not in proc.stderr


def test_import_leanbert_is_light_and_has_no_side_effects():
    code = "import sys, leanbert; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_export_int8_graph_without_quantize_is_one_line_error(tmp_path, capsys):
    from leanbert.cli import main

    code = main(["export", str(tmp_path), "--format", "onnx", "--int8-graph", "portable", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--int8-graph chooses how the int8 file is built; add --quantize dynamic" in err
    assert "Traceback" not in err


def test_the_cli_drops_torchaos_known_import_noise_and_nothing_else():
    import logging

    from leanbert import _logs

    def kept(name: str, message: str) -> bool:
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)
        return bool(logging.getLogger(name).filter(record))

    _logs.quiet_third_party_logs()
    _logs.quiet_third_party_logs()  # idempotent: one filter per logger
    try:
        assert not kept("torchao", "Failed to load /v/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load")
        assert not kept("torchao", "Failed to load /v/torchao/_C_cutlass_90a.abi3.so: Could not load this library")
        assert kept("torchao", "Failed to load /v/torchao/_C_cpu_kernels.so: undefined symbol")  # a real problem
        assert not kept("torch.utils._pytree", "<enum 'KernelPreference'> is an Enum subclass and is now natively "
                                               "supported by torch.compile as an opaque value type.")
        assert kept("torch.utils._pytree", "something else")
        assert sum(isinstance(f, _logs.DropMessages) for f in logging.getLogger("torchao").filters) == 1
    finally:
        for name in _logs.QUIET:
            log = logging.getLogger(name)
            log.filters = [f for f in log.filters if not isinstance(f, _logs.DropMessages)]
