"""Every benchmark / experiment JSON records where it comes from (commit, machine, versions)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from leanbert.provenance import provenance, with_provenance

ROOT = Path(__file__).resolve().parents[1]


def test_provenance_names_the_checkout_commit():
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    p = provenance(ROOT)
    assert p["commit"] == head and isinstance(p["dirty"], bool)
    assert p["machine"]["cores"] >= 1 and p["machine"]["cpu"]
    assert p["versions"]["leanbert"] and p["created"].endswith("+00:00")


def test_outside_a_checkout_the_commit_is_none(tmp_path):
    p = provenance(tmp_path)
    assert p["commit"] is None and p["dirty"] is None


def test_with_provenance_adds_the_block_and_keeps_the_result(tmp_path):
    out = with_provenance({"speedup": 1.5}, tmp_path)
    assert out["speedup"] == 1.5 and set(out["provenance"]) == {"created", "commit", "dirty", "dirty_paths", "command", "machine",
                                                                "versions"}


def test_dirty_paths_name_the_modified_tracked_files(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    (tmp_path / "a.py").write_text("1\n")
    (tmp_path / "b b.txt").write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "one")
    assert provenance(tmp_path)["dirty_paths"] == [] and provenance(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("2\n")
    (tmp_path / "b b.txt").write_text("2\n")
    (tmp_path / "new.txt").write_text("untracked\n")
    p = provenance(tmp_path)
    assert p["dirty"] is True and p["dirty_paths"] == ["a.py", "b b.txt"]
