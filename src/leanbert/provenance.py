"""Where a result comes from: the commit, the machine and the versions it was measured with.

Every benchmark and experiment stores this block with its JSON (``"provenance"``), so that a
report can say which commit each figure comes from and whether the code changed since
(``leanbert report`` marks such results as stale instead of silently mixing them).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(root: str | Path | None = None) -> dict[str, Any]:
    """The commit of the git checkout at ``root`` (default: the current directory; None outside
    a checkout), whether it had uncommitted changes, the UTC time, the machine and the versions
    of the libraries that are loaded."""
    root = Path(root) if root is not None else Path.cwd()
    commit = _git(root, "rev-parse", "HEAD")
    # tracked files that differ from the commit (staged or not; untracked files do not count): a
    # report tells a change to the measured code from, say, an experiment's results being rewritten
    changed = _git(root, "diff", "--name-only", "-z", "HEAD") if commit else None
    dirty_paths = sorted(p for p in (changed or "").split("\0") if p)
    versions = {"python": platform.python_version()}
    for name in ("leanbert", "torch", "transformers", "onnxruntime", "tokenizers", "torchao"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__version__", None):
            versions[name] = str(module.__version__)
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": bool(dirty_paths) if commit else None,
        "dirty_paths": dirty_paths,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "system": platform.system(),
                    "arch": platform.machine()},
        "versions": versions,
    }


def with_provenance(result: dict[str, Any], root: str | Path | None = None) -> dict[str, Any]:
    """``result`` plus its ``"provenance"`` block (see :func:`provenance`)."""
    return {**result, "provenance": provenance(root)}
