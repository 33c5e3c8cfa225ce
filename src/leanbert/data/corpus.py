"""Corpus readers: raw text in, documents (and sentences) out.

Supported sources, each given as a file or a directory of such files:

- plain text (``.txt`` or any other name given explicitly, and ``.txt.gz``): documents are
  separated by blank lines; the lines of one document are joined with spaces (so hard-wrapped
  text such as Project Gutenberg books reads as paragraphs);
- JSON lines (``.jsonl``, ``.jsonl.gz``, ``.ndjson``): one document per record, taken from a
  text field (``text`` by default);
- a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (optional extra
  ``leanbert[datasets]``, read offline): one document per row.

Text must be UTF-8. With ``errors="strict"`` (the default) a bad byte raises a
:class:`~leanbert.errors.DataError` naming the file and the byte offset (of the decompressed
stream for ``.gz``); ``errors="replace"`` turns bad bytes into U+FFFD instead.

Sentence segmentation (:func:`split_sentences`) is a small rule-based splitter: good enough to
build next-sentence pairs (BERT Sec. 3.1 only needs plausible sentence boundaries), not a
linguistic tool. Nothing in this module imports torch, so worker processes start fast.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from leanbert.errors import ConfigError, DataError, did_you_mean

ERRORS_MODES = ("strict", "replace")
TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_BLOCK_BYTES = 1 << 22  # text is read in 4 MiB blocks cut at line ends: bounded memory
_MAX_DOCUMENT_CHARS = 1 << 24
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v\u00a0]*\n\s*")


@dataclass(frozen=True)
class Source:
    """One input of a corpus: a text file, a JSON-lines file or a saved HF dataset."""

    path: Path
    kind: str  # "text" | "jsonl" | "hf_dataset"

    @property
    def name(self) -> str:
        return str(self.path)


def check_errors_mode(errors: str) -> str:
    if errors not in ERRORS_MODES:
        raise ConfigError(
            f"unknown errors mode '{errors}'{did_you_mean(errors, ERRORS_MODES)}; "
            f"use one of: {', '.join(ERRORS_MODES)}"
        )
    return errors


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _kind_of_file(path: Path) -> str:
    name = path.name.lower()
    return "jsonl" if name.endswith(JSONL_SUFFIXES) else "text"


def find_sources(paths: str | Path | Sequence[str | Path]) -> list[Source]:
    """Expand files and directories into a sorted, de-duplicated list of sources.

    A directory contributes its ``.txt``, ``.txt.gz`` and JSON-lines files (recursively,
    hidden files skipped), or is itself a saved HF dataset. A file named explicitly is read
    as plain text unless its name ends in a JSON-lines suffix.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError("no corpus given; pass one or more text files or directories")
    found: list[Source] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"corpus path not found: {p}; check the path")
        if p.is_dir():
            if _is_hf_dataset_dir(p):
                found.append(Source(p, "hf_dataset"))
                continue
            files = sorted(
                f for f in p.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.name.lower().endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)
            )
            if not files:
                raise DataError(
                    f"{p} has no text files (.txt, .txt.gz, .jsonl, .jsonl.gz); "
                    "point at the files or at a directory that holds them"
                )
            found.extend(Source(f, _kind_of_file(f)) for f in files)
        else:
            if p.stat().st_size == 0:
                raise DataError(f"{p} is empty; remove it from the corpus or give it text")
            found.append(Source(p, _kind_of_file(p)))
    unique: dict[Path, Source] = {}
    for s in found:
        unique.setdefault(s.path.resolve(), s)
    return list(unique.values())


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a saved HF dataset directory's files (in name order)."""
    h = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _open_binary(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _decoded_blocks(path: Path, errors: str) -> Iterator[str]:
    """Decode a (possibly gzipped) file in blocks that end at a line end.

    Cutting at b"\\n" never splits a UTF-8 character (0x0A is never part of a multi-byte
    sequence), so the byte offset of a decode error is exact.
    """
    offset = 0
    rest = b""
    first = True
    try:
        with _open_binary(path) as f:
            while True:
                block = f.read(_BLOCK_BYTES)
                data = rest + block
                if not block:
                    cut = len(data)
                else:
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:  # one very long line: keep reading
                        rest = data
                        continue
                chunk, rest = data[:cut], data[cut:]
                if first and chunk.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
                    chunk = chunk[3:]
                    offset += 3
                first = False
                try:
                    text = chunk.decode("utf-8", errors=errors)
                except UnicodeDecodeError as e:
                    where = "byte offset" if not path.name.endswith(".gz") else "decompressed byte offset"
                    raise DataError(
                        f"{path} is not UTF-8 text: bad byte 0x{chunk[e.start]:02x} at {where} "
                        f"{offset + e.start}; convert it to UTF-8 or pass --errors replace"
                    ) from None
                offset += len(chunk)
                if text:
                    yield text
                if not block:
                    return
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(f"corpus file not found: {path}") from None
        raise DataError(f"{path} could not be read ({e}); check the file") from None


def _clean(doc: str) -> str:
    r"""White space runs collapsed to one space, ends stripped: the same as
    ``re.sub(r"\s+", " ", doc).strip()`` (``str.split`` and ``\s`` agree on every code point),
    about three times faster."""
    return " ".join(doc.split())


def _text_documents(path: Path, errors: str) -> Iterator[str]:
    carry = ""
    for text in _decoded_blocks(path, errors):
        parts = _BLANK_LINE.split(carry + text)
        carry = parts.pop()  # may continue in the next block
        if len(carry) > _MAX_DOCUMENT_CHARS:  # no blank line for a long time: bound memory
            parts.append(carry)
            carry = ""
        for part in parts:
            doc = _clean(part)
            if doc:
                yield doc
    doc = _clean(carry)
    if doc:
        yield doc


def _jsonl_documents(path: Path, errors: str, text_field: str) -> Iterator[str]:
    line_no = 0
    carry = ""
    for text in _decoded_blocks(path, errors):
        lines = (carry + text).split("\n")
        carry = lines.pop()
        for line in lines:
            line_no += 1
            yield from _jsonl_record(path, line_no, line, text_field)
    if carry.strip():
        yield from _jsonl_record(path, line_no + 1, carry, text_field)


def _jsonl_record(path: Path, line_no: int, line: str, text_field: str) -> Iterator[str]:
    if not line.strip():
        return
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{line_no}: invalid JSON ({e.msg}); each line must be one JSON object") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{line_no}: expected a JSON object with a '{text_field}' field")
    if text_field not in record:
        raise DataError(
            f"{path}:{line_no}: no field '{text_field}'{did_you_mean(text_field, record)}; "
            f"pass --text-field with one of: {', '.join(map(str, record))}"
        )
    value = record[text_field]
    if not isinstance(value, str):
        raise DataError(f"{path}:{line_no}: field '{text_field}' is {type(value).__name__}, expected a string")
    doc = _clean(value)
    if doc:
        yield doc


def _hf_documents(path: Path, text_field: str, hf_split: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{path} is a saved Hugging Face dataset; install the optional extra: pip install 'leanbert[datasets]'"
        ) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises many types for a broken directory
        raise DataError(f"{path} could not be loaded as a saved dataset ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if hf_split not in ds:
            raise DataError(
                f"{path} has no split '{hf_split}'{did_you_mean(hf_split, ds)}; "
                f"choose one of: {', '.join(ds)}"
            )
        ds = ds[hf_split]
    if text_field not in ds.column_names:
        raise DataError(
            f"{path}: no column '{text_field}'{did_you_mean(text_field, ds.column_names)}; "
            f"pass --text-field with one of: {', '.join(ds.column_names)}"
        )
    for batch in ds.select_columns([text_field]).iter(batch_size=1000):
        for value in batch[text_field]:
            if isinstance(value, str):
                doc = _clean(value)
                if doc:
                    yield doc


def read_documents(
    source: Source | str | Path,
    *,
    errors: str = "strict",
    text_field: str = "text",
    hf_split: str = "train",
) -> Iterator[str]:
    """Yield the documents of one source as single-line strings (white space collapsed)."""
    check_errors_mode(errors)
    if not isinstance(source, Source):
        path = Path(source)
        if not path.exists():
            raise DataError(f"corpus path not found: {path}; check the path")
        source = Source(path, "hf_dataset" if path.is_dir() else _kind_of_file(path))
    if source.kind == "hf_dataset":
        yield from _hf_documents(source.path, text_field, hf_split)
    elif source.kind == "jsonl":
        yield from _jsonl_documents(source.path, errors, text_field)
    else:
        yield from _text_documents(source.path, errors)


def iter_corpus(
    paths: str | Path | Sequence[str | Path],
    *,
    errors: str = "strict",
    text_field: str = "text",
    hf_split: str = "train",
) -> Iterator[str]:
    """All documents of all sources, in source order. A source without any text is an error."""
    check_errors_mode(errors)
    for source in find_sources(paths):
        empty = True
        for doc in read_documents(source, errors=errors, text_field=text_field, hf_split=hf_split):
            empty = False
            yield doc
        if empty:
            raise DataError(f"{source.path} contains no text; remove it from the corpus")


# --------------------------------------------------------------------------------------
# Sentence segmentation
# --------------------------------------------------------------------------------------

# A sentence ends at . ! ? (or …), possibly followed by closing quotes or brackets, then
# white space, then something that can start a sentence (capital letter, digit, opening
# quote or bracket). Common abbreviations before the full stop do not end a sentence.
_SENTENCE_END = re.compile(
    r"""(?<=[.!?\u2026])["'\u2019\u201d)\]]*\s+(?=["'\u2018\u201c(\[]*[A-Z0-9\u00c0-\u00de])"""
)
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e no vol fig mt gen col lt capt rev hon "
    "jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k inc co ltd".split()
)


def split_sentences(document: str) -> list[str]:
    """Split one document into sentences with a rule-based splitter (see module docstring)."""
    pieces = _SENTENCE_END.split(document)
    sentences: list[str] = []
    for piece in pieces:
        if sentences:
            prev = sentences[-1]
            last_word = prev.rsplit(" ", 1)[-1].rstrip(".").lower()
            # "Mr. Smith", "e.g. This", initials such as "J. Smith": not a sentence end.
            if last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha()):
                sentences[-1] = prev + " " + piece
                continue
        sentences.append(piece)
    return [s for s in (s.strip() for s in sentences) if s]
