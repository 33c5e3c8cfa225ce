"""Honest packaging and docs: the licence file matches pyproject's licence field and the build
backend can read that field; every benchmark takes the same output flag; what the README names
(folders, commands, benchmarks, parameter counts) exists and agrees with the code."""

from __future__ import annotations

import ast
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"  # https://www.apache.org/licenses/LICENSE-2.0.txt


def test_license_file_is_the_apache_2_text_that_pyproject_declares():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.md5(text).hexdigest() == APACHE_2_MD5
    assert b"Apache License\n                           Version 2.0, January 2004" in text


def test_build_backend_supports_the_spdx_license_field():
    from packaging.requirements import Requirement
    from packaging.version import Version

    reqs = {r.name: r for r in map(Requirement, PYPROJECT["build-system"]["requires"])}
    setuptools = reqs["setuptools"]
    # PEP 639 (license = "SPDX expression", license-files) is read from setuptools 77 on
    assert not setuptools.specifier.contains(Version("76.1")) and setuptools.specifier.contains(Version("77.0"))
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"


def _output_flags(path: Path) -> list[str]:
    """The option strings of every add_argument call in a file that start with --out."""
    flags = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags += [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--out")]
    return flags


@pytest.mark.parametrize("bench", sorted((ROOT / "benchmarks").glob("bench_*.py")), ids=lambda p: p.stem)
def test_every_benchmark_takes_the_same_output_flag(bench):
    assert _output_flags(bench) == ["--output"]
    assert "args.output" in bench.read_text(encoding="utf-8")


def test_readme_lists_every_benchmark_and_only_those():
    from leanbert.cli.bench import available

    row = next(line for line in README.splitlines() if line.startswith("| `leanbert bench NAME"))
    assert sorted(re.findall(r"`([a-z-]+)`", row.split("|")[2])) == available()


def test_readme_commands_exist():
    from leanbert.cli import STAGES

    table = README[README.index("## The command-line tool"):README.index("## Exit codes")]
    named = set(re.findall(r"^\| `leanbert ([a-z-]+)", table, flags=re.M))
    named |= set(re.findall(r"^\| `leanbert [a-z-]+ / ([a-z-]+) / ([a-z-]+)", table, flags=re.M)[0])
    assert named and named <= set(STAGES)


def test_readme_layout_names_only_what_exists():
    block = README[README.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    names = []
    for line in block.splitlines():
        m = re.match(r"^(  )?(\S+)\s", line + " ")
        if m and not line.startswith("   "):
            base = ROOT / "src" / "leanbert" if m.group(1) else ROOT
            names.append(base / m.group(2))
    assert len(names) > 15
    missing = [str(p.relative_to(ROOT)) for p in names if not p.exists()]
    assert not missing


@pytest.mark.parametrize("preset", ["mobilebert", "mobilebert-tiny", "ib-bert-large", "bert-base"])
def test_readme_parameter_counts_are_what_leanbert_info_prints(preset):
    import torch

    import leanbert

    row = next(line for line in README.splitlines() if line.startswith(f"| `{preset}` |"))
    encoder, layers, with_heads = (float(re.match(r"\s*([\d.]+) M", c).group(1)) for c in row.split("|")[2:5])
    with torch.device("meta"):  # counts only, no weights
        full = leanbert.build_model(preset)
        bare = leanbert.build_model(preset, heads=[])
    assert round(bare.num_parameters() / 1e6, 2) == encoder
    assert round(sum(p.numel() for p in bare.encoder.layers.parameters()) / 1e6, 2) == layers
    assert round(full.num_parameters() / 1e6, 2) == with_heads
