"""The downstream tasks leanbert fine-tunes and scores: GLUE (Wang et al. 2019) and SQuAD,
and the same kinds of task (classification, regression, pair classification, extractive QA)
on the user's own files (:data:`FILE_TASKS`).

One :class:`TaskSpec` per task says everything the readers, the model head, the metrics and
the GLUE submission writer need: the directory and file names of the standard GLUE
distribution, which TSV columns hold the texts and the label, whether a file has a header
row, the label list in the order of the classifier's outputs, the metrics (official names)
and the file name the GLUE server expects for the test predictions.

Column indices follow the GLUE distribution (and ``transformers``' ``glue_processors``);
a negative index counts from the end of the row (MNLI's gold label is the last column
whatever the number of annotator labels before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from leanbert.errors import ConfigError, did_you_mean

Kind = Literal["classification", "regression", "span_qa"]


@dataclass(frozen=True)
class SplitSpec:
    """One TSV file of a GLUE task: its name and how to read it."""

    file: str
    text_columns: tuple[int, ...]
    label_column: int | None  # None: unlabelled (test files)
    header: bool = True
    index_column: int | None = None  # the id predictions are keyed on; None: example number


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: Kind
    metrics: tuple[str, ...]  # official names; the first one selects the best checkpoint
    labels: tuple[str, ...] = ()  # classifier output order; () for regression and QA
    glue_dir: str = ""  # directory name in the GLUE distribution
    splits: dict[str, SplitSpec] = field(default_factory=dict)
    eval_splits: tuple[str, ...] = ("dev",)  # splits evaluated every epoch
    test_splits: dict[str, str] = field(default_factory=dict)  # split -> GLUE server file
    skip_malformed: bool = False  # QQP: a few rows of the distributed files are broken
    squad_version: str = ""  # "1.1" or "2.0" for SQuAD
    # A task on the user's own files (leanbert.tasks.datafiles): labels come from the data.
    from_files: bool = False
    pair: bool = False  # two texts per example (text column and text-pair column)

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def is_glue(self) -> bool:
        return bool(self.glue_dir)

    def split(self, name: str) -> SplitSpec:
        if name not in self.splits:
            raise ConfigError(
                f"task '{self.name}' has no split '{name}'{did_you_mean(name, self.splits)}; "
                f"choose one of: {', '.join(self.splits)}"
            )
        return self.splits[name]


def _pair(train_cols: tuple[int, ...], label: int, test_cols: tuple[int, ...], *, indexed: bool = True) -> dict[str, SplitSpec]:
    """train/dev/test of a task whose files start with an index (or id) column; MRPC's
    train/dev start with the label instead (``indexed=False``)."""
    dev_index = 0 if indexed else None
    return {
        "train": SplitSpec("train.tsv", train_cols, label, index_column=dev_index),
        "dev": SplitSpec("dev.tsv", train_cols, label, index_column=dev_index),
        "test": SplitSpec("test.tsv", test_cols, None, index_column=0),
    }


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        "cola", "classification", ("matthews_correlation",), _BINARY, "CoLA",
        {
            # CoLA train/dev: source, label, original label, sentence; NO header row.
            "train": SplitSpec("train.tsv", (3,), 1, header=False),
            "dev": SplitSpec("dev.tsv", (3,), 1, header=False),
            "test": SplitSpec("test.tsv", (1,), None, index_column=0),
        },
        test_splits={"test": "CoLA.tsv"},
    ),
    "sst2": TaskSpec(
        "sst2", "classification", ("accuracy",), _BINARY, "SST-2",
        {
            "train": SplitSpec("train.tsv", (0,), 1),
            "dev": SplitSpec("dev.tsv", (0,), 1),
            "test": SplitSpec("test.tsv", (1,), None, index_column=0),
        },
        test_splits={"test": "SST-2.tsv"},
    ),
    "mrpc": TaskSpec(
        # Quality, #1 ID, #2 ID, #1 String, #2 String; train/dev start with a UTF-8 BOM.
        "mrpc", "classification", ("f1", "accuracy"), _BINARY, "MRPC",
        _pair((3, 4), 0, (3, 4), indexed=False), test_splits={"test": "MRPC.tsv"},
    ),
    "stsb": TaskSpec(
        # index genre filename year old_index source1 source2 sentence1 sentence2 score
        "stsb", "regression", ("pearson", "spearmanr"), (), "STS-B",
        _pair((7, 8), 9, (7, 8)), test_splits={"test": "STS-B.tsv"},
    ),
    "qqp": TaskSpec(
        # id qid1 qid2 question1 question2 is_duplicate; test: id question1 question2
        "qqp", "classification", ("f1", "accuracy"), _BINARY, "QQP",
        _pair((3, 4), 5, (1, 2)), test_splits={"test": "QQP.tsv"}, skip_malformed=True,
    ),
    "mnli": TaskSpec(
        # index promptID pairID genre s1_binary_parse s2_binary_parse s1_parse s2_parse
        # sentence1 sentence2 label1 [label2 .. label5] gold_label
        "mnli", "classification", ("accuracy",), ("contradiction", "entailment", "neutral"), "MNLI",
        {
            "train": SplitSpec("train.tsv", (8, 9), -1, index_column=0),
            "dev_matched": SplitSpec("dev_matched.tsv", (8, 9), -1, index_column=0),
            "dev_mismatched": SplitSpec("dev_mismatched.tsv", (8, 9), -1, index_column=0),
            "test_matched": SplitSpec("test_matched.tsv", (8, 9), None, index_column=0),
            "test_mismatched": SplitSpec("test_mismatched.tsv", (8, 9), None, index_column=0),
            # The diagnostic set (AX) is predicted by the MNLI model (GLUE paper, Sec. 4).
            "diagnostic": SplitSpec("../diagnostic/diagnostic.tsv", (1, 2), None, index_column=0),
        },
        eval_splits=("dev_matched", "dev_mismatched"),
        test_splits={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv", "diagnostic": "AX.tsv"},
    ),
    "qnli": TaskSpec(
        "qnli", "classification", ("accuracy",), _NLI, "QNLI",
        _pair((1, 2), 3, (1, 2)), test_splits={"test": "QNLI.tsv"},
    ),
    "rte": TaskSpec(
        "rte", "classification", ("accuracy",), _NLI, "RTE",
        _pair((1, 2), 3, (1, 2)), test_splits={"test": "RTE.tsv"},
    ),
    "wnli": TaskSpec(
        "wnli", "classification", ("accuracy",), _BINARY, "WNLI",
        _pair((1, 2), 3, (1, 2)), test_splits={"test": "WNLI.tsv"},
    ),
    "squad1": TaskSpec("squad1", "span_qa", ("f1", "exact_match"), squad_version="1.1"),
    "squad2": TaskSpec(
        "squad2", "span_qa",
        ("f1", "exact", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
         "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"),
        squad_version="2.0",
    ),
}

# Tasks on the user's own files (CSV, TSV, JSON lines, Parquet, saved datasets; see
# leanbert.tasks.datafiles): the label set (or, for qa, the SQuAD version) is read from the
# training data, so the specs here have none yet. Train and validation files, no test server.
_OWN = {"splits": {}, "eval_splits": ("validation",), "from_files": True}
FILE_TASKS: dict[str, TaskSpec] = {
    "classification": TaskSpec("classification", "classification", ("accuracy", "f1_macro"), **_OWN),
    "pair-classification": TaskSpec("pair-classification", "classification", ("accuracy", "f1_macro"),
                                    pair=True, **_OWN),
    "regression": TaskSpec("regression", "regression", ("pearson", "spearmanr"), **_OWN),
    # Extractive QA in the SQuAD layout of the datasets hub; "2.0" when the data has unanswerable questions.
    "qa": TaskSpec("qa", "span_qa", ("f1", "exact_match"), squad_version="1.1", **_OWN),
}

# Names people also use for the same tasks.
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "squad": "squad1", "squad-v1.1": "squad1", "squad-v2.0": "squad2",
            "pair_classification": "pair-classification", "text-classification": "classification",
            "question-answering": "qa"}


def task_names() -> list[str]:
    """The benchmark tasks (GLUE and SQuAD, with their standard files)."""
    return list(TASKS)


def all_task_names() -> list[str]:
    """Every task name ``get_task`` knows: the benchmarks, then the tasks on the user's own files."""
    return [*TASKS, *FILE_TASKS]


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name`` (case-insensitive); a clear error for unknown names."""
    key = _ALIASES.get(name.lower(), name.lower())
    known = {**TASKS, **FILE_TASKS}
    if key not in known:
        raise ConfigError(
            f"unknown task '{name}'{did_you_mean(key, known)}; choose one of: {', '.join(known)}"
        )
    return known[key]
