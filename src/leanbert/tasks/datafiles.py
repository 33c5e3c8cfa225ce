"""Fine-tuning data from files: the user's own, and GLUE / SQuAD as the datasets hub ships them.

Two things read through :mod:`leanbert.tasks.tables` (CSV, TSV, JSON lines, Parquet, saved
``datasets`` directories) and come out as the objects the GLUE and SQuAD code already uses
(:class:`~leanbert.tasks.glue.GlueSplit`, :class:`~leanbert.tasks.squad.SquadData`), so that
fine-tuning, evaluation and prediction are the same code for every source:

- **Own data** (:data:`~leanbert.tasks.registry.FILE_TASKS`): ``classification``,
  ``pair-classification``, ``regression`` and ``qa``, on a train and a validation source
  (:class:`DataFiles`) with named columns (:class:`Columns`). Labels are taken from the
  training data: a ``ClassLabel`` column's names (Parquet written by ``datasets``, saved
  datasets), else the sorted distinct values (numerically when all are integers). ``qa`` reads
  the SQuAD layout of the datasets hub (``id``, ``title``, ``context``, ``question``,
  ``answers: {text: [...], answer_start: [...]}``) and becomes SQuAD v2.0-style when some
  training question has no answer.
- **Hub layouts of the benchmarks**: ``nyu-mll/glue`` (a directory per task, ``sst2/``, with
  ``train`` / ``validation`` / ``test`` Parquet files; columns ``sentence`` or a pair such as
  ``sentence1``/``sentence2``, ``premise``/``hypothesis``, ``label`` as a ``ClassLabel`` id, ``idx``)
  and ``rajpurkar/squad`` / ``squad_v2`` (``plain_text/train-*.parquet``, ``validation-*.parquet``).
  The hub's label ids are mapped to the GLUE files' labels (MNLI's hub order is entailment,
  neutral, contradiction; leanbert's is the TSV's strings), so a model trained on either
  source predicts the same label strings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanbert.errors import ConfigError, DataError
from leanbert.tasks import glue, squad, tables
from leanbert.tasks.registry import TASKS, TaskSpec, get_task
from leanbert.tasks.tables import Table

# ----------------------------------------------------------------------------------------
# Own data: sources and columns
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Which columns hold what. ``text`` None: ``text``, else ``sentence`` (``sentence1`` for
    pairs); ``text_pair`` None: ``text_pair``, else ``sentence2`` for pair tasks (none for single
    texts); ``id`` None: ``id`` or ``idx`` where present, else the row number."""

    text: str | None = None
    text_pair: str | None = None
    label: str = "label"
    id: str | None = None
    question: str = "question"
    context: str = "context"
    answers: str = "answers"


@dataclass
class DataFiles:
    """The train and validation data of a task on the user's own files. Each is a file, a
    directory of split files, or a saved ``datasets`` directory; a ``DatasetDict`` (or hub-style
    directory) given as ``train`` also provides the validation split when ``validation`` is None."""

    train: str | Path | None = None
    validation: str | Path | None = None
    columns: Columns = field(default_factory=Columns)
    validation_split: str = "validation"  # the split read from a DatasetDict / directory for validation
    _tables: dict[str, Table] = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        """The sources and the columns that differ from the defaults (a resumed run checks it)."""
        parts = [f"{s}={p}" for s, p in (("train", self.train), ("validation", self.validation)) if p]
        defaults = Columns()
        parts += [f"{k}_column={v}" for k, v in dataclasses.asdict(self.columns).items() if v != getattr(defaults, k)]
        return "; ".join(parts)

    def path(self, split: str) -> Path:
        given = self.train if split == "train" else self.validation
        if given is not None:
            return Path(given)
        if split != "train" and self.train is not None and tables.has_split(self.train, self.validation_split):
            return Path(self.train)
        raise DataError(f"no {split} data: pass --{split} FILE (CSV, TSV, JSON lines, Parquet or a saved dataset)")

    def table(self, split: str) -> Table:
        """The rows of ``split`` (``train`` or ``validation``), read once."""
        if split not in self._tables:
            self._tables[split] = tables.read_table(self.path(split), "train" if split == "train" else self.validation_split)
        return self._tables[split]

    def describe(self) -> dict[str, Any]:
        return {"train": str(self.train) if self.train else None,
                "validation": str(self.validation) if self.validation else None,
                "columns": dataclasses.asdict(self.columns)}


SQUAD_LAYOUT = "QA data needs the SQuAD layout of the datasets hub: question, context, answers (id, title optional)"


def _pick_column(table: Table, given: str | None, defaults: Sequence[str], option: str) -> str:
    """``given`` (which must exist), else the first of ``defaults`` that the table has."""
    if given is not None:
        table.column(given, option)
        return given
    for name in defaults:
        if table.has(name):
            return name
    raise DataError(
        f"{table.source} has no column {' or '.join(repr(d) for d in defaults)} "
        f"(columns: {', '.join(table.columns)}); choose one with {option}"
    )


def text_columns(task: TaskSpec, table: Table, columns: Columns) -> tuple[str, ...]:
    """The column(s) holding the text(s) of each example (see :class:`Columns` for defaults);
    span QA: the question and the context column."""
    if task.kind == "span_qa":
        return (_pick_column(table, columns.question, (), SQUAD_LAYOUT),
                _pick_column(table, columns.context, (), SQUAD_LAYOUT))
    pair = task.pair or columns.text_pair is not None
    first = _pick_column(table, columns.text, ("text", "sentence1") if pair else ("text", "sentence"), "--text-column")
    if not pair:
        return (first,)
    return first, _pick_column(table, columns.text_pair, ("text_pair", "sentence2"), "--text-pair-column")


def text_value(table: Table, name: str, row: int) -> str:
    """The text in column ``name`` of ``row`` (numbers as written; a missing one is an error)."""
    value = table.columns[name][row]
    if isinstance(value, str):
        return value
    if value is None:
        raise DataError(f"{table.where(row)}: column '{name}' is empty; every example needs its text")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{table.where(row)}: column '{name}' holds a {type(value).__name__}, not text")


def _guids(table: Table, columns: Columns) -> list[str]:
    name = columns.id or next((c for c in ("id", "idx") if table.has(c)), None)
    if name is None:
        return [str(i) for i in range(len(table))]
    values = [str(v) for v in table.column(name)]
    seen: set[str] = set()
    for row, v in enumerate(values):
        if v in seen:
            raise DataError(f"{table.where(row)}: id {v} appears twice in column '{name}'; ids must be unique")
        seen.add(v)
    return values


def _label_value(table: Table, name: str, row: int) -> Any:
    """The label of a row as written, a ClassLabel id turned into its name; None: no label."""
    value = table.columns[name][row]
    names = table.class_names.get(name)
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        if value == -1:  # the datasets convention for an unlabelled (test) row
            return None
        if not 0 <= value < len(names):
            raise DataError(f"{table.where(row)}: label id {value} is outside the {len(names)} class names of '{name}'")
        return names[value]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def label_names(table: Table, column: str) -> list[str]:
    """The label set of a training table: a ClassLabel column's names, else its distinct values
    sorted (as numbers when every one is an integer, else as strings)."""
    values = table.column(column, "--label-column")
    if column in table.class_names:
        return list(table.class_names[column])
    distinct = {v for v in values if v is not None and not (isinstance(v, str) and not v.strip())}
    if not all(isinstance(v, (str, int, float, bool)) for v in distinct):
        raise DataError(f"{table.source}: column '{column}' holds lists or objects, not labels; choose another --label-column")
    if distinct and all(_is_integer(v) for v in distinct):
        by_value = {int(str(v).strip()): v for v in distinct}
        return [str(by_value[k]).strip() for k in sorted(by_value)]
    return sorted({str(v).strip() for v in distinct})


def _number(value: Any, where: str, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: label '{value}' in column '{column}' is not a number; regression needs numeric "
            "labels (for named classes use --task classification)"
        ) from None
    if not math.isfinite(number):
        raise DataError(f"{where}: label '{value}' in column '{column}' is not a finite number")
    return number


def own_sequence_split(task: TaskSpec, data: DataFiles, split: str, *, limit: int | None = None) -> glue.GlueSplit:
    """One split of a classification / regression task on the user's files, as a GlueSplit
    (labels as strings: a class name, or the number for regression)."""
    return sequence_split(task, data.table(split), data.columns, split, data.path(split), limit=limit)


def sequence_split(task: TaskSpec, table: Table, columns: Columns, split: str, path: str | Path, *,
                   limit: int | None = None, labels: bool = True) -> glue.GlueSplit:
    """The examples of ``table`` for ``task``; ``labels`` False: texts only (prediction),
    whatever label column there is. Every example needs a label otherwise; a class label must
    be one of ``task.labels`` when the task has them (the training data's)."""
    cols = text_columns(task, table, columns)
    label_col = columns.label
    if labels:
        table.column(label_col, "--label-column")
    guids = _guids(table, columns)
    out = glue.GlueSplit(task.name, split, Path(path))
    known = set(task.labels)
    for row in range(len(table)):
        texts = tuple(text_value(table, c, row) for c in cols)
        label = None
        if labels:
            value = _label_value(table, label_col, row)
            if value is None:
                raise DataError(f"{table.where(row)}: no label in column '{label_col}'; label every {split} example")
            if task.kind == "regression":
                label = repr(_number(value, table.where(row), label_col))
            else:
                label = str(value).strip()
                if known and label not in known:
                    raise DataError(
                        f"{table.where(row)}: label '{label}' never occurs in the training data (labels: "
                        f"{', '.join(task.labels)}); the classifier cannot predict it: add training "
                        "examples with it, or fix the row"
                    )
        out.examples.append(glue.GlueExample(guids[row], texts, label, row + 1))
        if limit is not None and len(out.examples) >= limit:
            break
    return out


# ----------------------------------------------------------------------------------------
# Own data and hub SQuAD: rows in the SQuAD layout of the datasets hub -> SQuAD articles
# ----------------------------------------------------------------------------------------


def _answers(value: Any, where: str) -> list[dict[str, Any]]:
    """``{"text": [...], "answer_start": [...]}`` (the hub) or ``[{"text", "answer_start"}]``
    (SQuAD JSON) -> a list of answers; None or empty: unanswerable."""
    if value is None:
        return []
    try:
        if isinstance(value, dict):
            texts, starts = list(value.get("text") or []), list(value.get("answer_start") or [])
            if len(texts) != len(starts):
                raise ValueError
            return [{"text": str(t), "answer_start": int(s)} for t, s in zip(texts, starts, strict=True)]
        if isinstance(value, list):
            return [{"text": str(a["text"]), "answer_start": int(a["answer_start"])} for a in value]
    except (ValueError, TypeError, KeyError):
        pass
    raise DataError(
        f"{where}: answers must be {{'text': [...], 'answer_start': [...]}} (the SQuAD layout of the datasets "
        "hub) or a list of {'text', 'answer_start'} objects"
    )


def squad_rows(table: Table, columns: Columns) -> list[dict[str, Any]]:
    """SQuAD ``data`` articles (title -> paragraphs -> questions) of a table in the hub layout."""
    text_columns(get_task("qa"), table, columns)  # question and context must be there
    answers = table.column(columns.answers, SQUAD_LAYOUT)
    guids = _guids(table, columns)
    titles = table.columns.get("title")
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in range(len(table)):
        title = str(titles[row]) if titles is not None and titles[row] is not None else ""
        context = text_value(table, columns.context, row)
        qa = {"id": guids[row], "question": text_value(table, columns.question, row),
              "answers": _answers(answers[row], table.where(row))}
        articles.setdefault(title, {}).setdefault(context, []).append(qa)
    return [{"title": t, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
            for t, paragraphs in articles.items()]


def squad_from_table(path: str | Path, split: str, columns: Columns, version: str,
                     table: Table | None = None) -> squad.SquadData:
    """SQuAD data (articles and checked examples) of ``split`` of a table in the hub layout."""
    table = table if table is not None else tables.read_table(path, split)
    articles = squad_rows(table, columns)
    return squad.SquadData(Path(path), version, articles, squad.examples_from_articles(articles, version, table.source))


def _has_unanswerable(table: Table, columns: Columns) -> bool:
    return any(not _answers(v, table.where(i)) for i, v in enumerate(table.column(columns.answers, SQUAD_LAYOUT)))


# ----------------------------------------------------------------------------------------
# The task a run trains: labels (or the SQuAD version) from the data
# ----------------------------------------------------------------------------------------


def with_squad_version(task: TaskSpec, version: str) -> TaskSpec:
    """``task`` scored by the official script of SQuAD ``version`` (v2.0: the no-answer breakdown)."""
    if version == task.squad_version:
        return task
    reference = TASKS["squad2" if version == "2.0" else "squad1"]
    return dataclasses.replace(task, squad_version=version, metrics=reference.metrics)


def resolve_task(task: TaskSpec, data: Any) -> TaskSpec:
    """The task a training run on ``data`` fine-tunes: for a task on the user's files, its label
    names (or SQuAD version) read from the training data; other tasks as they are."""
    if not task.from_files:
        if isinstance(data, DataFiles):
            raise ConfigError(f"task '{task.name}' reads its standard files: give them with --data, not --train/--validation")
        return task
    if not isinstance(data, DataFiles):
        raise ConfigError(f"task '{task.name}' trains on your own files: give --train FILE and --validation FILE "
                          "(CSV, TSV, JSON lines, Parquet or a saved dataset)")
    train = data.table("train")
    if task.kind == "span_qa":
        return with_squad_version(task, "2.0" if _has_unanswerable(train, data.columns) else "1.1")
    if task.kind == "classification" and not task.labels:
        names = label_names(train, data.columns.label)
        if len(names) < 2:
            raise DataError(
                f"{train.source}: column '{data.columns.label}' has {len(names)} distinct label(s) "
                f"({', '.join(names) or 'none'}); classification needs at least two"
            )
        return dataclasses.replace(task, labels=tuple(names))
    return task


def task_metadata(task: TaskSpec, data: Any) -> dict[str, Any]:
    """What a fine-tuned checkpoint records to rebuild its task (and the data it saw)."""
    out: dict[str, Any] = {"data": str(data)}
    if isinstance(data, DataFiles):
        out["data_files"] = data.describe()
        out["columns"] = dataclasses.asdict(data.columns)
    if task.kind == "span_qa":
        out["squad_version"] = task.squad_version
    return out


def task_from_metadata(metadata: dict[str, Any], name: str | None = None, source: str = "the checkpoint") -> TaskSpec:
    """The task of a fine-tuned checkpoint from its metadata (``name`` overrides the recorded one)."""
    name = name or metadata.get("task")
    if not name:
        raise ConfigError(f"{source} does not record its task (is it fine-tuned?); give the model directory "
                          "that leanbert finetune wrote (OUTPUT/model)")
    task = get_task(str(name))
    if task.from_files:
        labels = metadata.get("labels") or []
        if task.kind == "classification":
            if not labels:
                raise ConfigError(f"{source} records task '{task.name}' but no label names; re-run fine-tuning")
            task = dataclasses.replace(task, labels=tuple(str(x) for x in labels))
        if task.kind == "span_qa":
            task = with_squad_version(task, str(metadata.get("squad_version", "1.1")))
    return task


def columns_from_metadata(metadata: dict[str, Any], **overrides: str | None) -> Columns:
    recorded = {k: v for k, v in (metadata.get("columns") or {}).items() if k in Columns.__dataclass_fields__}
    return Columns(**{**recorded, **{k: v for k, v in overrides.items() if v is not None}})


# ----------------------------------------------------------------------------------------
# GLUE in the layout of the datasets hub (nyu-mll/glue)
# ----------------------------------------------------------------------------------------

# task -> (text columns, the hub's ClassLabel names in id order; () for STS-B's float score)
HUB_GLUE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cola": (("sentence",), ("unacceptable", "acceptable")),
    "sst2": (("sentence",), ("negative", "positive")),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "stsb": (("sentence1", "sentence2"), ()),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate")),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment")),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": (("sentence1", "sentence2"), ("not_entailment", "entailment")),
}
# leanbert split -> (hub config directory, or None for the task's own, split name)
_HUB_SPLITS = {"dev": (None, "validation"), "dev_matched": (None, "validation_matched"),
               "dev_mismatched": (None, "validation_mismatched"), "diagnostic": ("ax", "test")}


def default_columns(task: TaskSpec) -> Columns:
    """The columns a checkpoint of ``task`` reads from a file by default (the hub's names)."""
    if task.is_glue and task.name in HUB_GLUE:
        names = HUB_GLUE[task.name][0]
        return Columns(text=names[0], text_pair=names[1] if len(names) > 1 else None)
    return Columns()


def hub_glue_source(task: TaskSpec, data: str | Path, split: str) -> tuple[Path, str] | None:
    """(path, split name) of ``split`` of a GLUE task in a hub layout under ``data``, or None."""
    p = Path(data)
    config, hub_split = _HUB_SPLITS.get(split, (None, split))
    if p.is_file() or tables.is_saved_dataset(p):
        return (p, hub_split) if tables.is_table_path(p) and p.suffix.lower() != ".tsv" else None
    if not p.is_dir():
        return None
    # the task's directory under the hub root, or the directory itself; the diagnostic set (AX)
    # is its own config, beside MNLI's
    bases = (p / config, p.parent / config) if config else (p / task.name, p)
    return next(((b, hub_split) for b in bases if tables.has_split(b, hub_split)), None)


def _hub_label(task: TaskSpec, table: Table, row: int) -> str | None:
    """A hub label (ClassLabel id, name, or STS-B score) as the GLUE files write it."""
    value = _label_value(table, "label", row)
    if value is None:
        return None
    if task.kind == "regression":
        number = _number(value, table.where(row), "label")
        return None if number == -1.0 else repr(number)  # -1: the hub's unlabelled test rows
    names = HUB_GLUE[task.name][1]
    if isinstance(value, int) and not isinstance(value, bool):
        if value == -1:
            return None
        if not 0 <= value < len(names):
            raise DataError(f"{table.where(row)}: label id {value} is not one of {task.name}'s {len(names)} classes")
        value = names[value]
    label = str(value).strip()
    if label in task.labels:
        return label
    if label in names:  # a hub class name of a task whose GLUE files write 0 / 1
        return str(names.index(label))
    raise DataError(f"{table.where(row)}: label '{label}' is not a {task.name} label ({', '.join(names or task.labels)})")


def read_hub_glue(task: TaskSpec, path: Path, split: str, *, limit: int | None = None) -> glue.GlueSplit:
    table = tables.read_table(path, split)
    names = HUB_GLUE[task.name][0]
    for c in names:
        table.column(c)  # the hub's columns must be there
    guids = [str(v) for v in table.columns["idx"]] if table.has("idx") else [str(i) for i in range(len(table))]
    out = glue.GlueSplit(task.name, split, path)
    for row in range(len(table)):
        label = _hub_label(task, table, row) if table.has("label") else None
        out.examples.append(glue.GlueExample(guids[row], tuple(text_value(table, c, row) for c in names), label, row + 1))
        if limit is not None and len(out.examples) >= limit:
            break
    return out


def read_sequence_split(task: TaskSpec, data: Any, split: str, *, limit: int | None = None) -> glue.GlueSplit:
    """One split of a sequence task from any source: the user's files, GLUE's TSV files, or
    GLUE in the hub's layout (tried when the TSV files are not there)."""
    if isinstance(data, DataFiles):
        return own_sequence_split(task, data, split, limit=limit)
    if task.from_files:
        resolve_task(task, data)  # raises: own-data tasks need DataFiles
    try:
        glue.split_file(task, data, split)
    except DataError:
        hub = hub_glue_source(task, data, split)
        if hub is None:
            raise
        return read_hub_glue(task, hub[0], hub[1], limit=limit)
    hub = hub_glue_source(task, data, split) if Path(data).is_file() else None
    if hub is not None:
        return read_hub_glue(task, hub[0], hub[1], limit=limit)
    return glue.read_glue(task, data, split, limit=limit)


# ----------------------------------------------------------------------------------------
# SQuAD from tables: own qa data, and rajpurkar/squad in the hub's layout
# ----------------------------------------------------------------------------------------


def _is_json_lines(path: Path) -> bool:
    """A ``.json`` file of JSON lines (what datasets writes), not one JSON document (SQuAD's)."""
    with open(path, "rb") as f:
        first = f.readline()
        rest = f.read(4096).strip()
    try:
        obj = json.loads(first)
    except ValueError:
        return False  # a document spread over several lines
    return bool(rest) or not (isinstance(obj, dict) and isinstance(obj.get("data"), list))


def squad_tables(task: TaskSpec, data: Any, train: bool
                 ) -> tuple[squad.SquadData | None, squad.SquadData, str, bool] | None:
    """SQuAD data read from tables: (train, eval, how, single source), or None when ``data`` is
    in the official JSON layout (a ``.json`` document, or a directory of ``train-vX.json`` /
    ``dev-vX.json``). A single source (one file or Dataset) is split by article by the caller."""
    v = task.squad_version
    if isinstance(data, DataFiles):
        tr = squad_from_table(data.path("train"), "train", data.columns, v, data.table("train")) if train else None
        ev = squad_from_table(data.path("validation"), "validation", data.columns, v, data.table("validation"))
        return tr, ev, str(data), False
    if task.from_files:
        resolve_task(task, data)  # raises: own-data tasks need DataFiles
    p = Path(data)
    if p.is_file() or (tables.is_saved_dataset(p) and not (p / "dataset_dict.json").is_file()):
        if p.suffix.lower() == ".json" and not _is_json_lines(p):
            return None
        return None, squad_from_table(p, "validation", Columns(), v), p.name, True
    if not p.is_dir() or (p / f"dev-v{v}.json").is_file() or (p / f"train-v{v}.json").is_file():
        return None
    base = next((b for b in (p / "plain_text", p / "squad_v2", p) if tables.has_split(b, "validation")), None)
    if base is None:
        return None
    ev = squad_from_table(base, "validation", Columns(), v)
    if not tables.has_split(base, "train"):
        return None, ev, f"{base} (validation)", True
    tr = squad_from_table(base, "train", Columns(), v) if train else None
    return tr, ev, f"{base} (train / validation)", False
