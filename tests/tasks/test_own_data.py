"""Fine-tuning data from the user's own files (CSV, TSV, JSON lines, Parquet, saved datasets)
and GLUE / SQuAD in the datasets hub's layouts: what is read, the label names, the errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from leanbert.cli import main
from leanbert.tasks import datafiles, get_task, glue
from leanbert.tasks.datafiles import Columns, DataFiles
from leanbert.tasks.finetune import finetune_config, squad_files
from leanbert.tasks.squad import read_squad

NAMES = {"0": "negative", "1": "positive"}
FAST = ["--set", "threads=1", "--set", "progress=false", "--set", "epochs=1", "--set", "batch_size=16",
        "--set", "max_seq_length=48", "--set", "eval_batch_size=64"]


@pytest.fixture(scope="module")
def sst2(glue_root) -> dict[str, list[tuple[str, str]]]:
    """(sentence, label name) of the first 48 SST-2 training and 24 dev examples."""
    task = get_task("sst2")
    out = {}
    for split, n in (("train", 48), ("dev", 24)):
        rows = glue.read_glue(task, glue_root / "SST-2", split, limit=n)
        out[split] = [(ex.texts[0], NAMES[ex.label]) for ex in rows.examples]
    return out


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write(fmt: str, path: Path, rows: list[tuple[str, str]]) -> Path:
    """SST-2 rows as a ``review``/``sentiment`` table in ``fmt``."""
    if fmt == "csv":
        return write_csv(path.with_suffix(".csv"), ["review", "sentiment"], rows)
    if fmt == "tsv":
        path = path.with_suffix(".tsv")
        path.write_text("review\tsentiment\n" + "".join(f"{s}\t{label}\n" for s, label in rows), encoding="utf-8")
        return path
    if fmt == "jsonl":
        path = path.with_suffix(".jsonl")
        path.write_text("".join(json.dumps({"review": s, "sentiment": label}) + "\n" for s, label in rows), encoding="utf-8")
        return path
    import datasets

    ds = datasets.Dataset.from_dict({"review": [s for s, _ in rows], "sentiment": [label for _, label in rows]})
    if fmt == "parquet":
        ds.to_parquet(str(path.with_suffix(".parquet")))
        return path.with_suffix(".parquet")
    ds.save_to_disk(str(path))  # "saved": a Dataset directory
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "saved"])
def test_every_format_reads_the_same_examples_and_labels(fmt, sst2, tmp_path):
    files = DataFiles(train=write(fmt, tmp_path / "train", sst2["train"]),
                      validation=write(fmt, tmp_path / "dev", sst2["dev"]),
                      columns=Columns(text="review", label="sentiment"))
    task = datafiles.resolve_task(get_task("classification"), files)
    assert task.labels == ("negative", "positive")
    dev = datafiles.read_sequence_split(task, files, "validation")
    assert [(ex.texts[0], ex.label) for ex in dev.examples] == sst2["dev"]
    assert [ex.guid for ex in dev.examples] == [str(i) for i in range(24)]


def test_integer_labels_are_sorted_as_numbers(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["text", "label"], [("a", "10"), ("b", "2"), ("c", "1"), ("d", "2")])
    table = datafiles.DataFiles(train=path).table("train")
    assert datafiles.label_names(table, "label") == ["1", "2", "10"]


def test_a_classlabel_keeps_its_names_and_their_order(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["spam", "ham", "eggs"])})
    datasets.Dataset.from_dict({"text": ["x", "y"], "label": [1, 0]}, features=features).to_parquet(str(tmp_path / "t.parquet"))
    files = DataFiles(train=tmp_path / "t.parquet", validation=tmp_path / "t.parquet")
    task = datafiles.resolve_task(get_task("classification"), files)
    assert task.labels == ("spam", "ham", "eggs")  # the feature's order, not sorted; "eggs" never occurs
    assert [ex.label for ex in datafiles.read_sequence_split(task, files, "train").examples] == ["ham", "spam"]


def test_a_datasetdict_given_as_train_also_gives_the_validation_split(sst2, tmp_path):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})

    def part(rows):
        return datasets.Dataset.from_dict({"sentence": [s for s, _ in rows], "label": [int(name == "positive") for _, name in rows]},
                                          features=features)

    datasets.DatasetDict(train=part(sst2["train"]), validation=part(sst2["dev"])).save_to_disk(str(tmp_path / "dd"))
    files = DataFiles(train=tmp_path / "dd")  # text column: "sentence" by default
    task = datafiles.resolve_task(get_task("classification"), files)
    dev = datafiles.read_sequence_split(task, files, "validation")
    assert [(ex.texts[0], ex.label) for ex in dev.examples] == sst2["dev"]


def test_a_directory_of_split_files_gives_train_and_validation(sst2, tmp_path):
    (tmp_path / "d").mkdir()
    write("jsonl", tmp_path / "d" / "train", sst2["train"])
    write("jsonl", tmp_path / "d" / "dev", sst2["dev"])  # "dev" is found as the validation split
    files = DataFiles(train=tmp_path / "d", columns=Columns(text="review", label="sentiment"))
    task = datafiles.resolve_task(get_task("classification"), files)
    assert len(datafiles.read_sequence_split(task, files, "train")) == 48
    assert [ex.label for ex in datafiles.read_sequence_split(task, files, "validation").examples] == [name for _, name in sst2["dev"]]


def test_pair_classification_reads_both_texts_of_mrpc(glue_root, tmp_path):
    mrpc = glue.read_glue(get_task("mrpc"), glue_root / "MRPC", "train", limit=12)
    path = tmp_path / "mrpc.jsonl"
    path.write_text("".join(json.dumps({"sentence1": ex.texts[0], "sentence2": ex.texts[1], "label": int(ex.label)}) + "\n"
                            for ex in mrpc.examples), encoding="utf-8")
    files = DataFiles(train=path, validation=path)
    task = datafiles.resolve_task(get_task("pair-classification"), files)
    split = datafiles.read_sequence_split(task, files, "train")
    assert task.labels == ("0", "1")
    assert [(ex.texts, ex.label) for ex in split.examples] == [(ex.texts, ex.label) for ex in mrpc.examples]


def test_finetune_on_a_csv_records_the_label_names_and_columns(tiny_bert, sst2, tmp_path, capsys):
    train, dev = write("csv", tmp_path / "train", sst2["train"]), write("csv", tmp_path / "dev", sst2["dev"])
    assert main(["finetune", "--task", "classification", "--train", str(train), "--validation", str(dev),
                 "--text-column", "review", "--label-column", "sentiment", "--model", str(tiny_bert),
                 "--output", str(tmp_path / "run"), *FAST]) == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(report["metrics"]["validation"]) == {"accuracy", "f1_macro"}
    assert report["data"]["validation"]["examples"] == 24
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["metadata"]
    assert meta["task"] == "classification" and meta["labels"] == ["negative", "positive"]
    assert meta["columns"]["text"] == "review" and meta["columns"]["label"] == "sentiment"
    rows = (tmp_path / "run" / "predictions" / "validation.tsv").read_text().splitlines()
    assert len(rows) == 25 and {r.split("\t")[1] for r in rows[1:]} <= {"negative", "positive"}


def _bad_files(tmp: Path) -> None:
    write_csv(tmp / "good.csv", ["sentence", "label"], [("fine", "a"), ("bad", "b")])
    write_csv(tmp / "unseen.csv", ["sentence", "label"], [("fine", "a"), ("meh", "c")])
    (tmp / "data.xlsx").write_bytes(b"PK\x03\x04")
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "header.csv").write_text("sentence,label\n", encoding="utf-8")
    (tmp / "latin1.csv").write_bytes("sentence,label\ncaf\xe9,a\n".encode("latin-1"))


@pytest.mark.parametrize(
    ("task", "train", "validation", "extra", "message"),
    [
        ("classification", "missing.csv", "good.csv", [], "file not found"),
        ("classification", "data.xlsx", "good.csv", [], "unknown file type '.xlsx'"),
        ("classification", "good.csv", "good.csv", ["--text-column", "review"],
         "has no column 'review' (columns: sentence, label); choose one with --text-column"),
        ("classification", "empty.csv", "good.csv", [], "empty.csv is empty"),
        ("classification", "header.csv", "good.csv", [], "holds no rows"),
        ("classification", "latin1.csv", "good.csv", [], "is not UTF-8 text (byte 18"),
        ("regression", "good.csv", "good.csv", [], "label 'a' in column 'label' is not a number"),
        ("classification", "good.csv", "unseen.csv", [], "row 2: label 'c' never occurs in the training data (labels: a, b)"),
    ],
)
def test_bad_data_fails_with_one_line_and_exit_2(task, train, validation, extra, message, tiny_bert, tmp_path, capsys):
    _bad_files(tmp_path)
    argv = ["finetune", "--task", task, "--train", str(tmp_path / train), "--validation", str(tmp_path / validation),
            *extra, "--model", str(tiny_bert), "--output", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_own_data_tasks_need_train_files_not_data(tiny_bert, tmp_path, capsys):
    assert main(["finetune", "--task", "classification", "--data", str(tmp_path), "--model", str(tiny_bert),
                 "--output", str(tmp_path / "o")]) == 2
    assert "give --train FILE and --validation FILE, not --data" in capsys.readouterr().err


# ------------------------------------------------------------------- the datasets hub's layouts


def _hub_glue(root: Path, config: str, split: str, columns: dict, names: list[str]) -> None:
    import datasets

    features = {c: datasets.Value("string") for c in columns if c not in ("label", "idx")}
    features["label"] = datasets.ClassLabel(names=names)
    features["idx"] = datasets.Value("int32")
    (root / config).mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(
        str(root / config / f"{split}-00000-of-00001.parquet"))


def test_glue_from_the_hub_parquet_layout_reads_what_the_tsv_files_hold(glue_root, tmp_path):
    task = get_task("sst2")
    tsv = {s: glue.read_glue(task, glue_root / "SST-2", s, limit=20) for s in ("train", "dev")}
    for split, hub_split in (("train", "train"), ("dev", "validation")):
        ex = tsv[split].examples
        _hub_glue(tmp_path, "sst2", hub_split, {"sentence": [e.texts[0] for e in ex], "label": [int(e.label) for e in ex],
                                                "idx": list(range(len(ex)))}, ["negative", "positive"])
    _hub_glue(tmp_path, "sst2", "test", {"sentence": ["a test sentence"], "label": [-1], "idx": [7]}, ["negative", "positive"])
    for split in ("train", "dev"):
        hub = datafiles.read_sequence_split(task, tmp_path, split)  # the hub root: sst2/ under it
        assert [(e.texts, e.label) for e in hub.examples] == [(e.texts, e.label) for e in tsv[split].examples]
    test = datafiles.read_sequence_split(task, tmp_path / "sst2", "test")
    assert [(e.guid, e.label) for e in test.examples] == [("7", None)]


def test_finetune_on_the_hub_layout_writes_the_glue_server_file(tiny_bert, glue_root, tmp_path, capsys):
    ex = glue.read_glue(get_task("sst2"), glue_root / "SST-2", "train", limit=32).examples
    for split in ("train", "validation"):
        _hub_glue(tmp_path / "hub", "sst2", split, {"sentence": [e.texts[0] for e in ex], "label": [int(e.label) for e in ex],
                                                    "idx": list(range(32))}, ["negative", "positive"])
    _hub_glue(tmp_path / "hub", "sst2", "test", {"sentence": ["fine", "awful"], "label": [-1, -1], "idx": [0, 1]},
              ["negative", "positive"])
    assert main(["finetune", "--task", "sst2", "--data", str(tmp_path / "hub"), "--model", str(tiny_bert),
                 "--output", str(tmp_path / "run"), *FAST]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["dev"]["examples"] == 32
    rows = (tmp_path / "run" / "submission" / "SST-2.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and [r.split("\t")[0] for r in rows[1:]] == ["0", "1"]


def test_hub_mnli_label_ids_map_to_the_glue_label_strings(tmp_path):
    rows = {"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [0, 1, 2], "idx": [0, 1, 2]}
    names = ["entailment", "neutral", "contradiction"]  # the hub's order, not leanbert's (sorted) one
    _hub_glue(tmp_path, "mnli", "validation_matched", rows, names)
    _hub_glue(tmp_path, "ax", "test", {**rows, "label": [-1, -1, -1]}, names)
    task = get_task("mnli")
    dev = datafiles.read_sequence_split(task, tmp_path, "dev_matched")
    assert [e.label for e in dev.examples] == ["entailment", "neutral", "contradiction"]
    assert [glue.label_to_target(task, e.label) for e in dev.examples] == [1, 2, 0]
    diagnostic = datafiles.read_sequence_split(task, tmp_path / "mnli", "diagnostic")  # ax/ beside mnli/
    assert [e.texts for e in diagnostic.examples] == [("p0", "h0"), ("p1", "h1"), ("p2", "h2")]


def _hub_squad_rows(articles: list[dict]) -> dict[str, list]:
    rows: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for a in articles:
        for p in a["paragraphs"]:
            for qa in p["qas"]:
                rows["id"].append(qa["id"])
                rows["title"].append(a["title"])
                rows["context"].append(p["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append({"text": [x["text"] for x in qa["answers"]],
                                        "answer_start": [x["answer_start"] for x in qa["answers"]]})
    return rows


def test_squad_from_the_hub_parquet_layout_equals_the_official_json(squad_dev, tmp_path):
    import datasets

    articles = json.loads(squad_dev.read_text(encoding="utf-8"))["data"][:3]
    hub_root, official = tmp_path / "squad", tmp_path / "official"
    (hub_root / "plain_text").mkdir(parents=True)
    official.mkdir()
    for split, part in (("train", articles[:2]), ("validation", articles[2:])):
        datasets.Dataset.from_dict(_hub_squad_rows(part)).to_parquet(
            str(hub_root / "plain_text" / f"{split}-00000-of-00001.parquet"))
        (official / f"{split}.json").write_text(json.dumps({"version": "1.1", "data": part}), encoding="utf-8")
    task = get_task("squad1")
    tr, ev, how = squad_files(task, hub_root, finetune_config(task), train=True)
    assert "plain_text (train / validation)" in how
    for hub, reference in ((tr, official / "train.json"), (ev, official / "validation.json")):
        assert hub.examples == read_squad(reference, task).examples


def test_qa_with_unanswerable_questions_is_scored_as_squad_v2(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"id": "a", "context": "Paris is in France.", "question": "Where is Paris?",
             "answers": {"text": ["France"], "answer_start": [12]}},
            {"id": "b", "context": "Paris is in France.", "question": "Who is the king?",
             "answers": {"text": [], "answer_start": []}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    files = DataFiles(train=path, validation=path)
    task = datafiles.resolve_task(get_task("qa"), files)
    assert task.squad_version == "2.0" and "HasAns_f1" in task.metrics
    _, ev, _ = squad_files(task, files, finetune_config(task), train=False)
    assert [(e.qid, e.answers, e.answer_starts) for e in ev.examples] == [("a", ("France",), (12,)), ("b", (), ())]
