"""Fixtures for the task tests: real GLUE/SQuAD files from ../shared/data, tiny checkpoints,
and small hand-made GLUE directories for the tasks whose files are not shipped there."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def glue_root(shared_file) -> Path:
    return shared_file("glue")


@pytest.fixture(scope="session")
def squad_dev(shared_file) -> Path:
    return shared_file("squad/dev-v1.1.json")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_dir) -> Path:
    """A randomly initialised bert-tiny (2 layers, hidden 128) checkpoint with the uncased
    BERT vocabulary: fast enough to fine-tune in seconds."""
    import torch

    import leanbert

    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["mlm"])
    out = tmp_path_factory.mktemp("ckpt") / "bert-tiny"
    leanbert.save_pretrained(model, out, tokenizer_dir=minilm_dir)
    return out


@pytest.fixture(scope="session")
def tiny_mobilebert(tmp_path_factory, minilm_dir) -> Path:
    """A randomly initialised MobileBERT (mobilebert-tiny-test preset: bottlenecks, NoNorm, no
    pooler) checkpoint with the uncased BERT vocabulary."""
    import torch

    import leanbert

    torch.manual_seed(0)
    model = leanbert.build_model("mobilebert-tiny-test", heads=["mlm"])
    out = tmp_path_factory.mktemp("ckpt") / "mobilebert-tiny"
    leanbert.save_pretrained(model, out, tokenizer_dir=minilm_dir)
    return out


def _write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def write_tsv():
    """``write_tsv(path, rows)``: a tab-separated file, as GLUE writes them (no quoting)."""
    return _write_tsv


STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", "4.800", "entailment"),
    ("A woman is slicing an onion.", "A dog runs in the park.", "0.200", "contradiction"),
    ("Kids are playing soccer.", "Children play football outside.", "3.900", "entailment"),
    ("The stock market fell today.", "A cat sleeps on the sofa.", "0.000", "neutral"),
    ("A plane is taking off.", "An airplane departs.", "4.600", "entailment"),
    ("Someone is cooking rice.", "The car is red.", "0.400", "contradiction"),
]


@pytest.fixture
def stsb_dir(tmp_path) -> Path:
    """STS-B in the GLUE layout (score in the last column; test without it)."""
    d = tmp_path / "STS-B"
    for split in ("train", "dev"):
        rows = [[*STSB_HEADER, "score"]]
        rows += [[str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b, s]
                 for i, (a, b, s, _) in enumerate(PAIRS)]
        _write_tsv(d / f"{split}.tsv", rows)
    rows = [STSB_HEADER] + [[str(i), "g", "f", "y", "o", "s", "s", a, b] for i, (a, b, _, _) in enumerate(PAIRS)]
    _write_tsv(d / "test.tsv", rows)
    return d


def mnli_rows(n_labels: int) -> list[list[str]]:
    header = [*MNLI_HEADER, *[f"label{i + 1}" for i in range(n_labels)], "gold_label"]
    rows = [header]
    for i, (a, b, _, label) in enumerate(PAIRS):
        rows.append([str(i), "1", f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", a, b,
                     *[label] * n_labels, label])
    return rows


@pytest.fixture
def mnli_dir(tmp_path) -> Path:
    """MNLI in the GLUE layout: train with one annotator label, two dev sets with five, and
    gold_label last; two test sets; the diagnostic set beside it."""
    d = tmp_path / "glue" / "MNLI"
    _write_tsv(d / "train.tsv", mnli_rows(1))
    _write_tsv(d / "dev_matched.tsv", mnli_rows(5))
    _write_tsv(d / "dev_mismatched.tsv", mnli_rows(5)[:4])
    test = [[*MNLI_HEADER]] + [r[: len(MNLI_HEADER)] for r in mnli_rows(0)[1:]]
    _write_tsv(d / "test_matched.tsv", test)
    _write_tsv(d / "test_mismatched.tsv", test[:3])
    _write_tsv(tmp_path / "glue" / "diagnostic" / "diagnostic.tsv",
              [["index", "sentence1", "sentence2"]] + [[str(i), a, b] for i, (a, b, _, _) in enumerate(PAIRS)])
    return d
