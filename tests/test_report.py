"""`leanbert report` (leanbert.report): collectors on small hand-written JSON, the status of every
input (missing, stale, cannot tell), a self-contained HTML page, the README's headline table, the
command's one-line errors, and one end-to-end ``--quick`` run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leanbert.report import collect, render
from leanbert.report.collect import SPECS, Git, collect_one

ROOT = Path(__file__).resolve().parents[1]
LEANBERT = Path(sys.executable).with_name("leanbert")


def prov(commit: str | None = "c" * 40, dirty: bool = False) -> dict:
    return {"created": "2026-12-01T10:00:00+00:00", "commit": commit, "dirty": dirty, "command": ["x"],
            "machine": {"cpu": "Test CPU", "cores": 2, "system": "Linux", "arch": "x86_64"},
            "versions": {"python": "3.11", "torch": "2.13.0"}}


PRETRAIN = {"device": "cpu", "threads": 2, "torch": "2.13.0", "runs": [{
    "shape": "bert-base", "batch": 16, "seq_len": 128, "rounds": 5, "steps_per_round": 2,
    "like_for_like": {"model_alone_fp32": 1.59, "full_path_bf16_fused": 1.45},
    "results": {name: {"step_s": 1.0, "tokens_per_s": tps, "model_flops_per_step": 1e12, "mfu": mfu,
                       "speedup_vs_transformers": tps / 100.0}
                for name, tps, mfu in (("transformers", 100.0, 0.2), ("leanbert model", 159.0, 0.3),
                                       ("transformers train", 200.0, 0.25), ("leanbert train", 290.0, 0.35))}}]}
TOKEN_DROPPING = {"benchmark": "token_dropping", "keep": 0.5, "target_quotient": 0.9, "all_met": True,
                  "model": {"model_type": "bert", "num_layers": 12, "hidden_size": 256, "num_heads": 4},
                  "environment": {"torch": "2.13.0", "device": "cpu", "threads": 2},
                  "results": [{"shape": "8x512", "measured_saving": 0.22, "measured_saving_paired_median": 0.21,
                               "cpu_time_saving": 0.23, "flop_saving": 0.25, "quotient": 0.88, "meets_target": False,
                               "step_s_full": 2.0, "step_s_drop": 1.56, "step_s_full_all": [2.0] * 6}]}
KNOWLEDGE_TRANSFER = {
    "settings": {"layers": 4, "hidden": 128, "teacher_steps": 500, "stage_steps": 60, "pd_steps": 300, "batch": 32,
                 "length": 128, "books": 6, "seeds": "0,1", "ft_seeds": "1,2", "sst2_train": 4000, "quick": False},
    "summary": {"teacher": {"final_mlm_loss": 5.03, "train_flops": 2.4e13, "train_seconds": 107.0, "steps": 500}},
    "runs": {name: [{"seed": seed, "final_mlm_loss": loss, "train_flops": 1.2e13, "train_seconds": 100.0, "steps": 540,
                     "curve": [{"step": 0, "mlm_loss": 9.0, "flops": 0.0, "seconds": 0.0},
                               {"step": 540, "mlm_loss": loss, "flops": 1.2e13, "seconds": 100.0}],
                     "sst2": [{"accuracy": 0.5}, {"accuracy": 0.6}], "mrpc": [{"accuracy": 0.7, "f1": 0.8}]}
                    for seed, loss in ((0, l0), (1, l1))]
             for name, l0, l1 in (("distilled", 4.9, 5.0), ("scratch", 4.2, 4.3))}}
DEPLOYMENT = {
    "experiment": "deployment",
    "deployment": {
        "machine": {"cpu_model": "Test CPU", "cpus": 2}, "threads": 2, "missing": {},
        "rows": {n: {"model": m, "kind": "onnxruntime" if "ort" in n else "pytorch", "precision": p, "file_bytes": b,
                     "file": "f", "p50_ms_b1_l128": ms, "max_rel_diff": 0.0}
                 for n, m, p, b, ms in (("transformers-fp32", "mobilebert", "fp32", 100e6, 70.0),
                                        ("ort-int8", "mobilebert", "int8", 25e6, 30.0),
                                        ("bert-base-fp32", "bert-base", "fp32", 440e6, 130.0))},
        "size_ratio_vs_bert_base_fp32": {"transformers-fp32": 4.4, "ort-int8": 17.6},
        "speed_ratio_vs_bert_base_fp32": {"transformers-fp32": 1.8, "ort-int8": 4.3},
        "targets": {"int8_vs_transformers_fp32": {"target": 2.0, "against": "transformers-fp32",
                                                  "best_path": "ort-int8", "value": 2.3, "met": True}}},
    "accuracy": {"sst2": {"seeds": [1, 2], "metrics": {"accuracy": {
        "pytorch-fp32": {"mean": 0.80, "per_seed": [0.79, 0.81], "delta_points_mean": 0.0},
        "onnx-int8": {"mean": 0.785, "per_seed": [0.78, 0.79], "delta_points_mean": -1.5},
        "pytorch-int8-dynamic": {"mean": 0.795, "per_seed": [0.79, 0.80], "delta_points_mean": -0.5}}}}},
    "accuracy_settings": {"model": "MiniLM", "seeds": [1, 2], "epochs": 2, "sst2_train": 3000},
}
ACTIVATION = {"experiment": "activation_checkpointing", "batch": 2, "length": 512, "precision": "fp32", "steps": 1,
              "machine": {"cpus": 2, "torch": "2.13.0", "threads": 2},
              "rows": [{"activation_checkpointing": False, "step_seconds": 20.0, "peak_rss_mb": 3700.0},
                       {"activation_checkpointing": True, "step_seconds": 25.0, "peak_rss_mb": 2700.0}],
              "summary": {"time_ratio": 1.25, "peak_rss_ratio": 0.73, "peak_rss_saved_mb": 1000.0}}
FIXTURES = {"bench:pretrain": PRETRAIN, "bench:token-dropping": TOKEN_DROPPING,
            "exp:knowledge_transfer": KNOWLEDGE_TRANSFER, "exp:deployment": DEPLOYMENT,
            "exp:activation_checkpointing": ACTIVATION}


class NoGit(Git):
    """A checkout whose git says nothing (the collectors' figures do not depend on it)."""

    def __init__(self) -> None:
        self.root, self.available, self._head = Path("."), True, None


def record_of(tmp_path: Path, key: str, data: dict, provenance: dict | None = None, git: Git | None = None):
    path = tmp_path / f"{key.replace(':', '_')}.json"
    path.write_text(json.dumps({**data, **({"provenance": provenance} if provenance else {})}))
    return collect_one(SPECS[key], path, path.name, git or NoGit())


def fake_checkout(root: Path, inputs: dict[str, dict]) -> Path:
    """A directory shaped like the checkout (benchmarks/, experiments/) holding ``inputs``."""
    (root / "benchmarks").mkdir(parents=True)
    (root / "experiments").mkdir()
    for key, data in inputs.items():
        path = root / SPECS[key].path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return root


# ----------------------------------------------------------------------------------- collectors


def test_pretrain_collector_gives_each_shapes_ratios_and_mfu(tmp_path):
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, prov())
    shape = r.figures["shapes"][0]
    assert (shape["shape"], shape["model_alone_fp32"], shape["full_path_bf16_fused"]) == ("bert-base", 1.59, 1.45)
    assert shape["candidates"]["leanbert train"] == {"tokens_per_s": 290.0, "mfu": 0.35, "speedup": 2.9}
    assert "measured on Test CPU, 2 cores, torch 2.13.0, 2 threads" in r.setting and "batch 16 x 128" in r.setting


def test_token_dropping_collector_gives_measured_and_flop_savings_and_the_paper(tmp_path):
    r = record_of(tmp_path, "bench:token-dropping", TOKEN_DROPPING, prov())
    row = r.figures["rows"][0]
    assert (row["measured_saving"], row["flop_saving"], row["quotient"], row["meets_target"]) == (0.22, 0.25, 0.88, False)
    assert r.figures["model"] == "bert 12 layers, hidden 256, 4 heads"
    assert "25% less pretraining cost" in r.paper


def test_knowledge_transfer_collector_gives_the_spread_over_seeds(tmp_path):
    r = record_of(tmp_path, "exp:knowledge_transfer", KNOWLEDGE_TRANSFER, prov())
    distilled = r.figures["variants"]["distilled"]
    assert distilled["final_loss"]["min"] == 4.9 and distilled["final_loss"]["max"] == 5.0
    assert distilled["final_loss"]["mean"] == pytest.approx(4.95)
    assert distilled["sst2"]["values"] == [0.5, 0.6, 0.5, 0.6] and distilled["mrpc"]["mean"] == 0.8
    assert len(r.figures["curves"]) == 4 and "seeds 0,1" in r.setting


def test_deployment_collector_finds_the_largest_int8_loss_and_the_paper_ratios(tmp_path):
    r = record_of(tmp_path, "exp:deployment", DEPLOYMENT, prov())
    assert r.figures["worst_int8_delta"] == (-1.5, "sst2", "accuracy", "onnx-int8")
    assert r.figures["rows"]["ort-int8"] == {"model": "mobilebert", "precision": "int8", "kind": "onnxruntime",
                                             "file_mb": 25.0, "p50_ms": 30.0}
    assert "4.3x smaller and 5.5x faster" in r.paper


def test_deployment_collector_keeps_quantization_aware_results_apart(tmp_path):
    data = json.loads(json.dumps(DEPLOYMENT))
    data["accuracy"]["sst2"]["metrics"]["accuracy"]["qat-onnx-int8"] = {
        "mean": 0.70, "per_seed": [0.70, 0.70], "delta_points_mean": -10.0}
    r = record_of(tmp_path, "exp:deployment", data, prov())
    assert r.figures["worst_int8_delta"] == (-1.5, "sst2", "accuracy", "onnx-int8")
    assert r.figures["worst_qat_int8_delta"] == (-10.0, "sst2", "accuracy", "qat-onnx-int8")


def test_activation_checkpointing_collector_gives_memory_and_time_ratios(tmp_path):
    r = record_of(tmp_path, "exp:activation_checkpointing", ACTIVATION)
    assert (r.figures["time_ratio"], r.figures["peak_rss_ratio"], r.figures["saved_mb"]) == (1.25, 0.73, 1000.0)
    assert r.figures["rows"]["on"] == {"step_s": 25.0, "peak_mb": 2700.0}
    assert "machine not recorded" not in r.setting and "2 cores" in r.setting


def test_a_per_candidate_thread_choice_is_said_in_words(tmp_path):
    data = json.loads(json.dumps(DEPLOYMENT))
    data["deployment"]["threads"] = [1, 2]
    r = record_of(tmp_path, "exp:deployment", data, prov())
    assert "each candidate at its fastest of 1 or 2 threads" in r.setting


def test_json_lacking_a_field_is_incomplete_not_an_error(tmp_path):
    r = record_of(tmp_path, "bench:pretrain", {"device": "cpu"}, prov())
    assert r.status == collect.INCOMPLETE and "'runs'" in r.reason and not r.usable


def test_text_that_is_not_json_is_unreadable(tmp_path):
    path = tmp_path / "pretrain.json"
    path.write_text('{"runs": [')
    r = collect_one(SPECS["bench:pretrain"], path, path.name, NoGit())
    assert r.status == collect.UNREADABLE and "not valid JSON" in r.reason


# -------------------------------------------------------------------------------------- status


def test_every_missing_input_is_listed_as_missing_in_the_report(tmp_path):
    records = collect.collect(fake_checkout(tmp_path, {}))
    assert {r.status for r in records} == {collect.MISSING}
    report = render.build(records, "full", None, None)
    md = render.markdown(report, tmp_path)
    for spec in collect.INPUTS:
        assert re.search(rf"\| `{re.escape(spec.path)}` \| \*\*missing\*\* \|", md), spec.path
    assert all(row["ours"] == "missing: see Inputs" for row in report.summary["headline"])
    assert "**Missing**: `benchmarks/results/pretrain.json`" in md and "To make it: `leanbert bench pretrain`" in md


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git repository with two commits: the second changes ``src/leanbert/models/bert.py``, the
    report's own code and the README; returns (repo, first commit)."""
    repo = tmp_path / "repo"
    for rel in ("src/leanbert/models/bert.py", "src/leanbert/report/render.py", "README.md",
                "benchmarks/bench_pretrain.py"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("one\n")
    _git(repo.parent, "init", "-q", str(repo))
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    first = _git(repo, "rev-parse", "HEAD")
    return repo, first


def _commit_change(repo: Path, *rels: str) -> None:
    for rel in rels:
        (repo / rel).write_text("two\n")
    _git(repo, "commit", "-qam", "two")


def test_a_result_whose_code_changed_since_its_commit_is_stale(tmp_path, repo):
    repo, first = repo
    _commit_change(repo, "src/leanbert/models/bert.py")
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, prov(first), Git(repo))
    assert r.status == collect.STALE and "src/leanbert/models/bert.py" in r.reason and r.commit == first


def test_a_result_from_an_older_commit_with_the_same_code_is_ok(tmp_path, repo):
    repo, first = repo
    _commit_change(repo, "README.md", "src/leanbert/report/render.py")  # neither changes a measured figure
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, prov(first), Git(repo))
    assert r.status == collect.OK and "unchanged since" in r.reason


def test_changes_to_docstrings_and_comments_or_to_the_provenance_code_keep_a_result_ok(tmp_path, repo):
    repo, first = repo
    bert = repo / "src/leanbert/models/bert.py"
    bert.write_text('"""Module doc."""\n\n\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    _git(repo, "commit", "-qam", "code")
    code = _git(repo, "rev-parse", "HEAD")
    bert.write_text('"""Module doc, reworded."""\n\n\ndef f(x):  # a comment\n    return x + 1\n')
    (repo / "src/leanbert/provenance.py").write_text("records = 2\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "docs")
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, prov(code), Git(repo))
    assert r.status == collect.OK, r.reason
    bert.write_text('"""Module doc, reworded."""\n\n\ndef f(x):\n    return x + 2\n')
    _git(repo, "commit", "-qam", "code again")
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, prov(code), Git(repo))
    assert r.status == collect.STALE and "src/leanbert/models/bert.py" in r.reason


def test_code_of_ignores_docstrings_and_comments_only():
    assert collect.code_of('"""a"""\nx = 1  # c\n') == collect.code_of("x = 1\n")
    assert collect.code_of('def f():\n    """a"""\n') == collect.code_of("def f():\n    pass\n")
    assert collect.code_of("x = 1\n") != collect.code_of("x = 2\n")
    assert collect.code_of("def (\n") is None


ACCURACY_ROW = "int8 accuracy: largest mean change from fp32 (MiniLM, dev)"
SPEED_ROW = "MobileBERT int8 against transformers fp32 / optimum int8 (batch 1 x 128)"


def _deployment_with_a_part_from(tmp_path, repo, part: str):
    """The deployment record (made at HEAD) whose ``part`` was measured at the first commit, before
    a measured file changed; returns (record, headline rows by name, first commit, HEAD)."""
    repo, first = repo
    _commit_change(repo, "src/leanbert/models/bert.py")
    head = _git(repo, "rev-parse", "HEAD")
    data = {**DEPLOYMENT, f"{part}_provenance": {"created": "2026-12-01T09:00:00+00:00", "commit": first,
                                                 "dirty": False}}
    r = record_of(tmp_path, "exp:deployment", data, prov(head), Git(repo))
    others = [collect.Record(spec, spec.path, collect.MISSING) for spec in collect.INPUTS if spec.key != r.spec.key]
    return r, {row["what"]: row for row in render.headline([*others, r])}, first, head


def test_a_part_carried_over_from_an_older_commit_gets_that_commits_status_in_the_headline(tmp_path, repo):
    r, rows, first, head = _deployment_with_a_part_from(tmp_path, repo, "accuracy")
    assert r.status == collect.OK and r.parts == {"accuracy": (collect.STALE, first)}
    assert (rows[ACCURACY_ROW]["status"], rows[ACCURACY_ROW]["commit"]) == (collect.STALE, first[:7])
    # no deployment_provenance: the size and latency rows take the file's status
    assert (rows[SPEED_ROW]["status"], rows[SPEED_ROW]["commit"]) == (collect.OK, head[:7])


def test_size_and_latency_rows_take_the_status_of_the_benchmark_run_they_come_from(tmp_path, repo):
    _, rows, first, _ = _deployment_with_a_part_from(tmp_path, repo, "deployment")
    assert (rows[SPEED_ROW]["status"], rows[SPEED_ROW]["commit"]) == (collect.STALE, first[:7])


def test_a_result_made_from_uncommitted_changes_is_stale(tmp_path, repo):
    repo, first = repo
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, prov(first, dirty=True), Git(repo))
    assert r.status == collect.STALE and "uncommitted changes" in r.reason


def test_uncommitted_changes_only_to_files_it_does_not_depend_on_keep_a_result_ok(tmp_path, repo):
    repo, first = repo
    p = {**prov(first, dirty=True), "dirty_paths": ["README.md", "experiments/token_dropping/results.json"]}
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, p, Git(repo))
    assert r.status == collect.OK


def test_uncommitted_changes_to_the_report_code_keep_a_result_ok(tmp_path, repo):
    repo, first = repo
    p = {**prov(first, dirty=True), "dirty_paths": ["src/leanbert/report/collect.py", "src/leanbert/provenance.py"]}
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, p, Git(repo))
    assert r.status == collect.OK


def test_uncommitted_changes_to_the_measured_code_make_a_result_stale(tmp_path, repo):
    repo, first = repo
    p = {**prov(first, dirty=True), "dirty_paths": ["README.md", "src/leanbert/models/bert.py"]}
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, p, Git(repo))
    assert r.status == collect.STALE and "src/leanbert/models/bert.py" in r.reason


def test_a_result_without_provenance_cannot_be_told(tmp_path, repo):
    repo, _ = repo
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, None, Git(repo))
    assert r.status == collect.UNKNOWN and r.commit is None and "no provenance" in r.reason


def test_without_git_the_status_cannot_be_told(tmp_path, monkeypatch, repo):
    repo, first = repo
    monkeypatch.setattr(collect.shutil, "which", lambda name: None)
    r = record_of(tmp_path, "bench:pretrain", PRETRAIN, prov(first), Git(repo))
    assert r.status == collect.UNKNOWN and "git is not available" in r.reason


# -------------------------------------------------------------------------------------- render


@pytest.fixture
def report_from_fixtures(tmp_path):
    root = fake_checkout(tmp_path / "checkout", FIXTURES)
    return render.build(collect.collect(root), "full", "a" * 40, False), root


def test_html_is_self_contained_with_one_image_per_plotted_section(report_from_fixtures):
    report, root = report_from_fixtures
    page = render.to_html(report, root)
    plotted = [s.key for s in report.sections if s.image]
    assert set(plotted) >= {"pretraining", "token_dropping_saving", "distillation", "finetune_scores", "deployment"}
    images = re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)
    assert len(images) == len(plotted)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<script" not in page and "<link" not in page


def test_write_gives_markdown_with_figure_files_html_and_summary(report_from_fixtures, tmp_path):
    report, root = report_from_fixtures
    out = tmp_path / "out"
    render.write(report, out, root)
    md = (out / "report.md").read_text()
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == sorted(f"{s.key}.png" for s in report.sections if s.image)
    assert all(f"](figures/{name})" in md for name in figures)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"][0]["ours"] == "1.45x" and summary["headline"][0]["source"] == SPECS["bench:pretrain"].path


def test_headline_rows_name_their_source_and_say_what_is_missing(report_from_fixtures):
    report, _ = report_from_fixtures
    rows = {row["what"].split(",")[0]: row for row in report.summary["headline"]}
    assert rows["pretraining step against transformers (bf16"]["ours"] == "1.45x"
    assert rows["MobileBERT int8 against transformers fp32 / optimum int8 (batch 1 x 128)"]["ours"] == "2.30x / n/a"
    assert rows["activation checkpointing"]["ours"] == "0.73x memory, 1.25x time"
    replication = rows["token dropping replication: held-out MLM loss"]
    assert replication["ours"] == "missing: see Inputs" and replication["source"] == SPECS["exp:token_dropping"].path


def test_readme_headline_table_is_rendered_from_the_committed_summary():
    summary = json.loads((ROOT / "report" / "summary.json").read_text())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render.readme_block(readme) == render.headline_markdown(summary)
    assert "](report/report.md)" in readme


# ----------------------------------------------------------------------------------------- CLI


def run_cli(monkeypatch, capsys, root: Path, *args: str) -> tuple[int, str, str]:
    from leanbert.cli import main
    from leanbert.cli import report as cli_report

    monkeypatch.setattr(cli_report, "checkout_root", lambda: root)
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_output_that_is_a_file_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    root = fake_checkout(tmp_path / "checkout", {})
    (tmp_path / "taken").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, root, "--no-run", "--output", str(tmp_path / "taken"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is a file" in err


def test_cli_unreadable_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    root = fake_checkout(tmp_path / "checkout", {"bench:pretrain": "{not json"})
    code, _, err = run_cli(monkeypatch, capsys, root, "--no-run", "--output", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "benchmarks/results/pretrain.json is not valid JSON" in err and not (tmp_path / "out").exists()


def test_cli_refuses_an_output_directory_holding_other_files(tmp_path, monkeypatch, capsys):
    root = fake_checkout(tmp_path / "checkout", {})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, root, "--no-run", "--output", str(tmp_path / "out"))
    assert code == 2 and "notes.txt" in err and "--overwrite" in err


def test_cli_no_run_reports_what_is_there_and_leaves_the_readme_alone(tmp_path, monkeypatch, capsys):
    root = fake_checkout(tmp_path / "checkout", FIXTURES)
    (root / "README.md").write_text(f"x\n{render.README_START}\nold\n{render.README_END}\n")
    code, out, _ = run_cli(monkeypatch, capsys, root, "--no-run", "--output", str(tmp_path / "out"))
    assert code == 0 and "not run (--no-run): experiments/token_dropping/mobilebert/results.json" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {i["key"]: i["status"] for i in summary["inputs"]}["bench:pretrain"] == "cannot tell"  # no provenance
    assert "old" in (root / "README.md").read_text()


def test_cli_writing_the_default_report_rewrites_the_readme_table(tmp_path, monkeypatch, capsys):
    root = fake_checkout(tmp_path / "checkout", FIXTURES)
    (root / "README.md").write_text(f"x\n{render.README_START}\nold\n{render.README_END}\ny\n")
    code, _, _ = run_cli(monkeypatch, capsys, root, "--no-run")
    summary = json.loads((root / "report" / "summary.json").read_text())
    readme = (root / "README.md").read_text()
    assert code == 0 and render.readme_block(readme) == render.headline_markdown(summary)
    assert readme.startswith("x\n") and readme.endswith(f"{render.README_END}\ny\n")


def _writer_job(key: str, data: dict | None):
    """A job whose full command writes ``data`` where ``key``'s input goes (None: it fails)."""
    from leanbert.report.regenerate import Job

    def full(py, root):
        if data is None:
            return [[py, "-c", "import sys; print('the data is not there'); sys.exit(3)"]]
        code = f"import json, pathlib; p = pathlib.Path({str(root / SPECS[key].path)!r}); " \
               f"p.parent.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps({data!r}))"
        return [[py, "-c", code]]

    return Job(key, full, lambda py, root, inp: [], 0.1, 0.1)


def test_cli_full_mode_runs_a_missing_input_and_records_where_it_came_from(tmp_path, monkeypatch, capsys):
    from leanbert.report import regenerate

    root = fake_checkout(tmp_path / "checkout", {})
    monkeypatch.setattr(regenerate, "JOBS", (_writer_job("exp:activation_checkpointing", ACTIVATION),))
    code, out, _ = run_cli(monkeypatch, capsys, root, "--output", str(tmp_path / "out"), "--no-readme")
    written = json.loads((root / SPECS["exp:activation_checkpointing"].path).read_text())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = next(r for r in summary["headline"] if r["what"].startswith("activation checkpointing"))
    assert code == 0 and "[1/1] done" in out
    assert written["provenance"]["recorded_by"].startswith("leanbert report")  # measure.py records none
    assert row["ours"] == "0.73x memory, 1.25x time"


def test_cli_full_mode_starts_no_input_longer_than_an_hour_unless_asked(tmp_path, monkeypatch, capsys):
    import dataclasses

    from leanbert.report import regenerate

    root = fake_checkout(tmp_path / "checkout", {})
    long_job = dataclasses.replace(_writer_job("exp:activation_checkpointing", ACTIVATION), full_minutes=61)
    monkeypatch.setattr(regenerate, "JOBS", (long_job,))
    code, out, _ = run_cli(monkeypatch, capsys, root, "--output", str(tmp_path / "out"), "--no-readme")
    assert code == 0 and "Not run (expected ~61 min > --max-minutes 60)" in out
    assert not (root / SPECS["exp:activation_checkpointing"].path).exists()
    code, out, _ = run_cli(monkeypatch, capsys, root, "--output", str(tmp_path / "out2"), "--no-readme",
                           "--max-minutes", "90")
    assert code == 0 and (root / SPECS["exp:activation_checkpointing"].path).is_file()


def test_cli_a_run_that_fails_is_listed_and_exits_1(tmp_path, monkeypatch, capsys):
    from leanbert.report import regenerate

    root = fake_checkout(tmp_path / "checkout", {})
    monkeypatch.setattr(regenerate, "JOBS", (_writer_job("bench:data", None),))
    code, _, err = run_cli(monkeypatch, capsys, root, "--output", str(tmp_path / "out"), "--no-readme")
    md = (tmp_path / "out" / "report.md").read_text()
    assert code == 1 and "1 of 1 runs failed" in err and "exit 3" in err and "the data is not there" in err
    assert "> Run failed:" in md and re.search(r"`benchmarks/results/data.json` \| \*\*missing\*\*", md)


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
@pytest.mark.skipif(not LEANBERT.is_file(), reason=f"the installed program {LEANBERT} is missing")
def test_quick_regenerates_every_input_and_reports_them(tmp_path, shared_data, minilm_dir):
    out = tmp_path / "quick"
    started = time.perf_counter()
    proc = subprocess.run([str(LEANBERT), "report", "--quick", "--output", str(out)], capture_output=True, text=True,
                          timeout=1500)
    took = time.perf_counter() - started
    print(f"leanbert report --quick took {took / 60:.1f} min")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    statuses = {i["key"]: i["status"] for i in summary["inputs"]}
    expected = {s.key for s in collect.INPUTS if not s.superseded}
    assert set(statuses) == expected
    # made by this run: at HEAD (ok), or stale when the checkout has uncommitted changes
    assert set(statuses.values()) <= {collect.OK, collect.STALE}, statuses
    assert all(row["ours"] != "missing: see Inputs" for row in summary["headline"]
               if not row["what"].startswith("MobileBERT against BERT-base")), summary["headline"]
    page = (out / "report.html").read_text()
    assert page.count("<img ") == len(list((out / "figures").glob("*.png"))) >= 6
    assert not (ROOT / "report" / "inputs").exists()  # the committed report is left alone
