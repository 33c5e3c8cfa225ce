"""Rows of examples from the files people keep their data in, one reader for all of them.

Formats (chosen by the file's suffix):

- ``.csv``: comma-separated with RFC 4180 quoting (Python's ``csv``), a header row;
- ``.tsv``: tab-separated with a header row and *no* quoting, as the GLUE files and the
  IANA TSV definition (a ``"`` is an ordinary character);
- ``.jsonl`` / ``.ndjson``: one JSON object per line; ``.json``: JSON lines too (what
  ``datasets.Dataset.to_json`` writes), or one JSON array of objects;
- ``.parquet`` (``pyarrow``, the format the datasets hub distributes); a ``ClassLabel``
  column's names come from the ``huggingface`` schema metadata that ``datasets`` writes;
- a directory written by ``datasets`` ``save_to_disk``: a ``Dataset``, or a ``DatasetDict``
  whose split is picked by name (read with ``datasets.load_from_disk``).

A directory of files can hold several splits, in the layouts the datasets hub uses:
``train.csv``, ``train-00000-of-00001.parquet`` (shards are concatenated), ``train/0000.parquet``
or ``data/train-*.parquet``; ``validation`` is also found as ``dev``, ``valid`` or ``val``.

Values keep the types of the format (strings in CSV/TSV; numbers, lists and objects in JSON and
Parquet). Every problem is a one-line :class:`~leanbert.errors.DataError`: a missing file, an
unknown suffix, an empty file, a file that is not UTF-8, a malformed row (with its line), a
missing column (with the columns present). ``pyarrow`` and ``datasets`` are imported only to
read Parquet and saved datasets (``pip install 'leanbert[datasets]'``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanbert.errors import DataError, did_you_mean

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
                ".parquet": "parquet"}
# Split names and the other names the same split goes by (GLUE's "dev", the hub's "validation").
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "dev", "valid", "val"), "test": ("test",)}
_READS = ".csv, .tsv, .jsonl (or .json), .parquet, or a directory saved by datasets (save_to_disk)"


@dataclass
class Table:
    """Columns of equal length read from ``source`` (a path, plus the split where one was picked)."""

    source: str
    columns: dict[str, list[Any]]
    class_names: dict[str, list[str]] = field(default_factory=dict)  # ClassLabel columns: names by id

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def has(self, name: str) -> bool:
        return name in self.columns

    def column(self, name: str, option: str = "") -> list[Any]:
        """The values of column ``name``; a missing column names the columns present and the
        option that picks another one (``option``: ``--x-column``, or a hint of its own)."""
        if name not in self.columns:
            fix = (f"; choose one with {option}" if option.startswith("--") else f"; {option}") if option else ""
            raise DataError(
                f"{self.source} has no column '{name}'{did_you_mean(name, self.columns)} "
                f"(columns: {', '.join(self.columns) or 'none'}){fix}"
            )
        return self.columns[name]

    def where(self, row: int) -> str:
        """``source row N`` (1-based, header not counted) for error messages."""
        return f"{self.source} row {row + 1}"


# ----------------------------------------------------------------------------------------
# Finding the file(s) of a split
# ----------------------------------------------------------------------------------------


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def is_table_path(path: str | Path) -> bool:
    """A file with a suffix this module reads, or a saved dataset directory."""
    p = Path(path)
    return (p.is_file() and p.suffix.lower() in FILE_FORMATS) or is_saved_dataset(p)


def split_aliases(split: str) -> tuple[str, ...]:
    return SPLIT_ALIASES.get(split, (split,))


def _is_data_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in FILE_FORMATS and not p.name.startswith(".")


def split_files(directory: Path, split: str) -> list[Path]:
    """The data files of ``split`` in a directory of files (hub layouts, see the module
    docstring); [] when there are none. MNLI's ``validation_matched`` is not ``validation``."""
    for folder in (directory, directory / "data"):
        if not folder.is_dir():
            continue
        for name in split_aliases(split):
            found = sorted(p for p in folder.iterdir() if _is_data_file(p)
                           and (p.stem == name or p.name.startswith(f"{name}-")))
            sub = folder / name
            if not found and sub.is_dir():
                found = sorted(p for p in sub.iterdir() if _is_data_file(p))
            if found:
                return found
    return []


def has_split(path: str | Path, split: str) -> bool:
    """Whether ``path`` (a directory of files or a saved DatasetDict) holds ``split``."""
    p = Path(path)
    if (p / "dataset_dict.json").is_file():
        return any(name in _dataset_dict_splits(p) for name in split_aliases(split))
    return p.is_dir() and not is_saved_dataset(p) and bool(split_files(p, split))


def _dataset_dict_splits(path: Path) -> list[str]:
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{path / 'dataset_dict.json'} is not a datasets split list; re-save the DatasetDict") from None
    return [str(s) for s in splits]


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------


def read_table(path: str | Path, split: str | None = None) -> Table:
    """Read a file, a directory of split files, or a saved dataset (see the module docstring).
    ``split`` picks the split of a DatasetDict or of a directory of files; a single file or
    ``Dataset`` is read whatever ``split`` says."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"file not found: {p}; give a data file ({_READS})")
    if p.is_dir():
        if is_saved_dataset(p):
            return _read_saved_dataset(p, split)
        if split is None:
            raise DataError(f"{p} is a directory; give a data file ({_READS})")
        files = split_files(p, split)
        if not files:
            present = sorted(q.name for q in p.iterdir() if not q.name.startswith("."))[:8]
            raise DataError(
                f"no {split} file in {p} (expected e.g. {split}.csv, {split}.jsonl or {split}-00000-of-00001.parquet; "
                f"it holds {', '.join(present) or 'nothing'}); give the file itself"
            )
        tables = [_read_file(f) for f in files]
        return tables[0] if len(tables) == 1 else _concatenate(tables, f"{p} ({split})")
    return _read_file(p)


def _read_file(path: Path) -> Table:
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type '{path.suffix or '(none)'}'; leanbert reads {_READS}")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; it needs a header (or JSON objects) and at least one row")
    if fmt == "parquet":
        table = _read_parquet(path)
    else:
        text = _read_text(path)
        if fmt in ("csv", "tsv"):
            table = _read_delimited(path, text, fmt)
        else:
            table = _read_json(path, text)
    if len(table) == 0:
        raise DataError(f"{path} holds no rows (only a header); add examples or check the file")
    return table


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _read_delimited(path: Path, text: str, fmt: str) -> Table:
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, row) for row in reader if row and any(cell.strip() for cell in row)]
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: unreadable {fmt.upper()} ({e}); fix the quoting of that line") from None
    if not rows:
        raise DataError(f"{path} is empty; it needs a header row and at least one row")
    header = [h.strip() for h in rows[0][1]]
    _check_header(path, header)
    columns: dict[str, list[Any]] = {h: [] for h in header}
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(
                f"{path}:{line}: {len(row)} fields but the header has {len(header)} ({', '.join(header)}); "
                "fix or delete the line"
            )
        for h, value in zip(header, row, strict=True):
            columns[h].append(value)
    return Table(str(path), columns)


def _check_header(path: Path, header: Sequence[str]) -> None:
    if any(not h for h in header):
        raise DataError(f"{path}: the header row has an empty column name; name every column")
    dup = sorted({h for h in header if list(header).count(h) > 1})
    if dup:
        raise DataError(f"{path}: column '{dup[0]}' appears twice in the header; give each column its own name")


def _read_json(path: Path, text: str) -> Table:
    """JSON lines; or (``.json``) one array of objects."""
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
        items = list(enumerate(records, 1))
        what = "item"
    else:
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{number}: not a JSON object ({e.msg} at column {e.colno}); "
                    "JSON lines files hold one object per line"
                ) from None
        what = "line"
    for number, record in items:
        if not isinstance(record, dict):
            raise DataError(f"{path}: {what} {number} is a JSON {type(record).__name__}, not an object with named fields")
    if items and path.suffix.lower() == ".json" and len(items) == 1 and isinstance(items[0][1].get("data"), list):
        raise DataError(
            f"{path} is a SQuAD-style JSON document (a 'data' list of articles), not rows; "
            "use --task squad1/squad2 for it, or give one JSON object per question"
        )
    names: dict[str, None] = {}
    for _, record in items:
        names.update(dict.fromkeys(record))
    columns = {name: [record.get(name) for _, record in items] for name in names}
    return Table(str(path), columns)


def _arrow_class_names(schema: Any) -> dict[str, list[str]]:
    """ClassLabel names from the ``huggingface`` metadata ``datasets`` writes into Parquet."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {name: [str(n) for n in feat["names"]] for name, feat in features.items()
            if isinstance(feat, dict) and feat.get("_type") == "ClassLabel" and "names" in feat}


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow: pip install 'leanbert[datasets]'") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses for broken files
        raise DataError(f"{path} is not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None
    return Table(str(path), table.to_pydict(), _arrow_class_names(table.schema))


def _read_saved_dataset(path: Path, split: str | None) -> Table:
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading {path} (a saved datasets directory) needs datasets: "
                        "pip install 'leanbert[datasets]'") from None
    source = str(path)
    if (path / "dataset_dict.json").is_file():
        names = _dataset_dict_splits(path)
        wanted = split_aliases(split) if split else tuple(names[:1] if len(names) == 1 else ())
        chosen = next((n for n in wanted if n in names), None)
        if chosen is None:
            asked = f"no '{split}' split" if split else f"{len(names)} splits"
            raise DataError(f"{path} is a DatasetDict with {asked} (it has: {', '.join(names)}); "
                            "pick one with --split, or give its directory")
        path, source = path / chosen, f"{path} ({chosen})"
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError / ValueError / arrow errors
        raise DataError(f"{path} could not be read as a saved dataset ({str(e).splitlines()[0][:120]})") from None
    names = {name: list(feat.names) for name, feat in ds.features.items() if isinstance(feat, datasets.ClassLabel)}
    table = Table(source, ds.with_format(None)[:], names)
    if len(table) == 0:
        raise DataError(f"{source} holds no rows; add examples or check the dataset")
    return table


def _concatenate(tables: Sequence[Table], source: str) -> Table:
    first = tables[0]
    for t in tables[1:]:
        if list(t.columns) != list(first.columns):
            raise DataError(f"{t.source} has columns {', '.join(t.columns)} but {first.source} has "
                            f"{', '.join(first.columns)}; the shards of one split need the same columns")
    columns = {name: [v for t in tables for v in t.columns[name]] for name in first.columns}
    return Table(source, columns, first.class_names)
