"""GLUE TSV files as distributed by the GLUE download script, quirks included (SPEC Sec. 3).

The files are read the way GLUE's own code and ``transformers``' ``glue_processors`` read
them: tab-separated with no quoting at all (``csv.QUOTE_NONE``; sentences contain bare
``"`` characters), UTF-8 with an optional byte-order mark (MRPC train/dev start with one).
Per task (see :mod:`leanbert.tasks.registry`): CoLA train/dev have no header row; MNLI has
two dev sets (matched/mismatched) and its gold label is the last column; test files carry
no labels but an ``index`` (QQP: ``id``) column that the GLUE server keys predictions on;
QQP's files contain a few broken rows, which are skipped and counted.

Any other malformed row, a label outside the task's label set, or a missing file is a
:class:`~leanbert.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leanbert.errors import DataError
from leanbert.io import atomic_open
from leanbert.tasks.registry import TaskSpec

SUBMISSION_HEADER = ("index", "prediction")


@dataclass(frozen=True)
class GlueExample:
    guid: str  # the index (QQP: id) column, or the 0-based example number where there is none
    texts: tuple[str, ...]  # one sentence, or a pair
    label: str | None  # the label as written in the file; None for test files
    line: int  # 1-based line in the file, for error messages


@dataclass
class GlueSplit:
    task: str
    split: str
    path: Path
    examples: list[GlueExample] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)  # malformed rows skipped (QQP)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def has_labels(self) -> bool:
        return bool(self.examples) and self.examples[0].label is not None


def split_file(task: TaskSpec, data: str | Path, split: str) -> Path:
    """Where ``split`` of ``task`` lives under ``data``.

    ``data`` may be the task's directory (``glue/SST-2``), the GLUE root holding one
    directory per task (``glue``), or the TSV file itself.
    """
    spec = task.split(split)
    data = Path(data)
    if data.is_file():
        return data
    candidates = [data / spec.file, data / task.glue_dir / spec.file]
    if spec.file.startswith("../"):  # a sibling of the task directory (MNLI's diagnostic set)
        candidates.append(data / spec.file[3:])
    for c in candidates:
        if c.is_file():
            return c.resolve()
    if not data.exists():
        raise DataError(f"data path not found: {data}; give a GLUE task directory such as glue/{task.glue_dir}")
    raise DataError(
        f"no {split} file for {task.name} under {data}: expected {candidates[0]} "
        f"or {candidates[1]} (standard GLUE layout: glue/{task.glue_dir}/{spec.file})"
    )


def read_tsv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty line, read as GLUE reads TSV: no quoting."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [(reader.line_num, row) for row in reader if row and any(row)]
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); GLUE files are UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{path}: unreadable TSV ({e})") from None


def read_glue(task: TaskSpec, data: str | Path, split: str, *, limit: int | None = None) -> GlueSplit:
    """Read one split of a GLUE task (labels kept as the strings written in the file)."""
    if not task.is_glue:
        raise DataError(f"task '{task.name}' is not a GLUE task; use leanbert.tasks.squad for SQuAD")
    spec = task.split(split)
    path = split_file(task, data, split)
    rows = read_tsv_rows(path)
    out = GlueSplit(task.name, split, path)
    if spec.header:
        if not rows:
            raise DataError(f"{path} is empty; expected a header row and {task.name} examples")
        n_cols = len(rows[0][1])
        rows = rows[1:]
    else:
        n_cols = None  # CoLA: no header; take the width of the first row (4 in GLUE)
    columns = [*spec.text_columns, spec.label_column, spec.index_column]
    needed = max(_width(c) for c in columns if c is not None)
    seen: set[str] = set()
    for line, row in rows:
        if n_cols is None:
            n_cols = len(row)
        if len(row) != n_cols or len(row) < needed:
            if task.skip_malformed:
                out.skipped_lines.append(line)
                continue
            raise DataError(
                f"{path}:{line}: malformed row with {len(row)} tab-separated fields, expected {n_cols}; "
                "fix or delete the line"
            )
        label = None
        if spec.label_column is not None:
            label = row[spec.label_column].strip()
            check_label(task, label, f"{path}:{line}")
        guid = row[spec.index_column].strip() if spec.index_column is not None else str(len(out.examples))
        if guid in seen:
            raise DataError(f"{path}:{line}: index {guid} appears twice; each example needs its own index")
        seen.add(guid)
        texts = tuple(row[c] for c in spec.text_columns)
        out.examples.append(GlueExample(guid, texts, label, line))
        if limit is not None and len(out.examples) >= limit:
            break
    if not out.examples:
        raise DataError(f"{path} holds no {task.name} examples; check that it is the right file")
    return out


def _width(column: int) -> int:
    """Columns a row needs for ``column`` to exist (negative indices count from the end)."""
    return column + 1 if column >= 0 else -column


def check_label(task: TaskSpec, label: str, where: str) -> None:
    if task.kind == "regression":
        try:
            value = float(label)
        except ValueError:
            raise DataError(f"{where}: {task.name} score '{label}' is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: {task.name} score '{label}' is not a finite number")
    elif label not in task.labels:
        raise DataError(
            f"{where}: label '{label}' is not in the {task.name} label set "
            f"({', '.join(task.labels)}); fix the row or check --task"
        )


def label_to_target(task: TaskSpec, label: str) -> float | int:
    """The training target: a class index (classification) or a float (regression)."""
    return float(label) if task.kind == "regression" else task.labels.index(label)


def format_prediction(task: TaskSpec, value: float | int) -> str:
    """A model output as the GLUE server wants it: the label string, or the STS-B score
    clipped to the scale [0, 5] with 3 decimals (a regression on the user's own data: the value
    as it is, since its scale is the data's)."""
    if task.kind == "regression":
        if not task.is_glue:
            return repr(float(value))
        return f"{min(5.0, max(0.0, float(value))):.3f}"
    return task.labels[int(value)]


def write_predictions(path: str | Path, guids: Sequence[str], predictions: Sequence[str]) -> None:
    """A GLUE submission file: ``index<TAB>prediction`` rows after that header (atomically)."""
    if len(guids) != len(predictions):
        raise ValueError("one prediction per example is needed")
    with atomic_open(path, "w") as f:
        f.write("\t".join(SUBMISSION_HEADER) + "\n")
        for guid, pred in zip(guids, predictions, strict=True):
            f.write(f"{guid}\t{pred}\n")


def read_predictions(path: str | Path) -> dict[str, str]:
    """Read a GLUE submission-format file (``index<TAB>prediction`` with that header)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}")
    rows = read_tsv_rows(path)
    if not rows or tuple(c.strip().lower() for c in rows[0][1]) != SUBMISSION_HEADER:
        raise DataError(f"{path}: expected the GLUE submission header 'index<TAB>prediction'")
    preds: dict[str, str] = {}
    for line, row in rows[1:]:
        if len(row) != 2:
            raise DataError(f"{path}:{line}: expected 'index<TAB>prediction', got {len(row)} fields")
        guid = row[0].strip()
        if guid in preds:
            raise DataError(f"{path}:{line}: index {guid} appears twice; keep one prediction per example")
        preds[guid] = row[1].strip()
    return preds


def align_predictions(
    task: TaskSpec, split: GlueSplit, predictions: Mapping[str, str], source: str
) -> tuple[list[float | int], list[float | int]]:
    """(gold targets, predicted targets) in file order; every example needs a prediction."""
    missing = [ex.guid for ex in split.examples if ex.guid not in predictions]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{source} lacks predictions for {len(missing)} of {len(split)} examples "
            f"(index {shown}); predict every example of {split.path.name}"
        )
    gold, pred = [], []
    for ex in split.examples:
        if ex.label is None:
            raise DataError(f"{split.path} has no labels; score a dev file, not a test file")
        p = predictions[ex.guid]
        check_label(task, p, f"{source}: prediction for index {ex.guid}")
        gold.append(label_to_target(task, ex.label))
        pred.append(label_to_target(task, p))
    return gold, pred
