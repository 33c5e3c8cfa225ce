"""Deployment benchmark: MobileBERT inference in PyTorch and ONNX Runtime, fp32 and int8, against
what a user would pick instead (issue #14 item 4; MobileBERT, Sun et al., ACL 2020: 62 ms on a
Pixel 4, 5.5x faster than BERT-base; 8-bit post-training quantization; Sec. 3.3 on NoNorm/ReLU).

Same weights everywhere: a random-init MobileBERT (transformers' default ``MobileBertConfig``)
saved as a transformers directory, loaded into leanbert with ``leanbert.from_pretrained``.
Candidates, timed in ONE interleaved run (round-robin, the order rotates every round, so that
load drifts on a shared machine hit all alike):

- ``transformers-fp32``: ``transformers.MobileBertModel``, eager (anchor);
- ``leanbert-fp32``: ``leanbert.optimize(model, for_training=False)`` (NoNorm folded, packed);
- ``leanbert-int8-dynamic``: ``quantize_int8(model, method="dynamic")`` (torch.ao, eager);
- ``leanbert-int8-torchao-compiled``: ``torch.compile(quantize_int8(model, method="torchao"))``,
  only with ``--compile`` (compilation costs ~75 s per input shape; recorded as ``compile_s``);
- ``ort-fp32`` / ``ort-int8``: ``leanbert export --format onnx --quantize dynamic``
  (:func:`leanbert.deploy.onnx.export_onnx`) in ONNX Runtime;
- ``optimum-ort-int8``: transformers' model exported with ``optimum`` to ONNX and quantised with
  ``ORTQuantizer`` and ``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)``
  (optimum's documented recipe; anchor). optimum-onnx 0.1.0 needs transformers<4.58, so the export
  runs in a venv of its own (``benchmarks/.venv-optimum``, ``make bench-optimum-env``, created on
  demand); the produced ``.onnx`` is timed here, in the same ONNX Runtime with the same session
  options (intra-op threads) as ``ort-int8``;
- ``bert-base-fp32`` (leanbert, optimised the same way) and ``bert-base-ort-int8``, random init.

Measured: batch-1 latency p50/p90/p99 at lengths 32, 128, 384; throughput (sequences/s) at
batch 32 x 128; model file size (bytes on disk; PyTorch int8: ``weight_bytes``); threads, CPU,
versions. Threads: every candidate runs at every thread count of ``--threads`` (default 1 and
all cores) in the same interleaved rounds (torch threads / ORT intra-op threads), and each shape
reports each candidate at its fastest count (lowest p50), the same rule for the anchors as for
leanbert: the setting its user would pick on this machine. On the 2-core hosts this project runs
on, ONNX Runtime at batch 1 is faster and steadier on one thread (two threads synchronise ~900
small kernels per call), PyTorch and large batches on two; every count's p50 is in the JSON.
Ratios are medians of per-round ratios (paired). Targets at batch 1 x 128: MobileBERT int8
(best leanbert int8 path) >= 2x transformers fp32 and >= 1.2x optimum int8; MobileBERT's best
leanbert path >= 5.5x BERT-base fp32. Outputs: fp32 candidates must agree with
transformers to 1e-4 (max |diff| / max |reference|); for int8 ones that difference is reported.
A candidate that cannot be built is listed as missing, with the reason, never dropped.

    python benchmarks/bench_inference.py                 # or: leanbert bench inference
    python benchmarks/bench_inference.py --quick --no-optimum
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanbert.provenance import cpu_model

HERE = Path(__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[1]  # the checkout: provenance() records its commit
RESULTS = HERE / "results" / "inference.json"
OPTIMUM_VENV = HERE / ".venv-optimum"
OPTIMUM_REQUIREMENTS = ("torch==2.13.0", "optimum-onnx[onnxruntime]==0.1.0")
FP32_RTOL = 1e-4
TARGETS = {  # name: (ratio, slow candidate, fast candidate group)
    "int8_vs_transformers_fp32": 2.0,
    "int8_vs_optimum_int8": 1.2,
    "best_vs_bert_base_fp32": 5.5,
}
INT8_PATHS = ("leanbert-int8-dynamic", "leanbert-int8-torchao-compiled", "ort-int8")
MOBILEBERT_PATHS = ("leanbert-fp32", "ort-fp32", *INT8_PATHS)
TARGET_SHAPE = "b1_l128"
THREAD_RULE = ("every candidate at every thread count in the same interleaved rounds (torch threads, ONNX Runtime "
               "intra-op threads); reported per shape at its fastest count (lowest p50)")

# Runs in the optimum venv: transformers dir -> ONNX (optimum's exporter) -> dynamic int8.
OPTIMUM_SCRIPT = r"""
import json, sys, time
from pathlib import Path
src, out = sys.argv[1], Path(sys.argv[2])
import onnxruntime, optimum.version, torch, transformers
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
start = time.perf_counter()
model = ORTModelForFeatureExtraction.from_pretrained(src, export=True)
model.save_pretrained(out)
quantizer = ORTQuantizer.from_pretrained(model)
qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
quantizer.quantize(save_dir=out, quantization_config=qconfig)
files = {p.name: p.stat().st_size for p in out.iterdir() if p.suffix == ".onnx"}
print("OPTIMUM_RESULT " + json.dumps({
    "seconds": time.perf_counter() - start, "files": files,
    "recipe": "ORTModelForFeatureExtraction.from_pretrained(export=True) + ORTQuantizer + "
              "AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)",
    "versions": {"optimum": optimum.version.__version__, "transformers": transformers.__version__,
                 "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}}))
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="leanbert bench inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 384], help="batch-1 sequence lengths")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds per batch-1 shape, one call per candidate each")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (per shape)")
    p.add_argument("--batch", type=int, default=32, help="throughput batch size (0: no throughput run)")
    p.add_argument("--batch-length", type=int, default=128, help="throughput sequence length")
    p.add_argument("--batch-rounds", type=int, default=3, help="timed rounds of the throughput run")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts to run every candidate at (torch threads, ONNX Runtime intra-op threads); "
                        "each is reported at its fastest (default: 1 and torch's default, all cores)")
    p.add_argument("--no-bert", action="store_true", help="leave BERT-base out")
    p.add_argument("--no-optimum", action="store_true", help="leave the optimum anchor out (recorded as missing)")
    p.add_argument("--optimum-python", type=Path, default=None,
                   help=f"python of a venv with optimum-onnx (default: {OPTIMUM_VENV.relative_to(HERE.parent)}, "
                        "created on demand)")
    p.add_argument("--compile", action="store_true",
                   help="add torchao int8 under torch.compile (about 75 s of compilation per input shape)")
    p.add_argument("--layers", type=int, default=None,
                   help="MobileBERT layers (default: the default config's 24; fewer for quick tests)")
    p.add_argument("--quick", action="store_true",
                   help="few rounds, length 128 only, no throughput run, no BERT-base (tests/CI, < 2 min)")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON output, plot beside it (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.rounds, args.warmup, args.batch, args.no_bert = [128], 5, 1, 0, True
    if 128 not in args.lengths:
        p.error("--lengths must include 128 (the targets are measured there)")
    if args.threads is not None and min(args.threads) < 1:
        p.error("--threads must be at least 1")
    return args


# --------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------


Maker = Callable[[torch.Tensor, torch.Tensor, int], Callable[[], np.ndarray]]


class Candidate:
    """``make(ids, mask, threads)`` -> a zero-argument call returning the last hidden state
    (numpy); PyTorch candidates run at the torch threads :func:`measure` sets.
    (A plain class: ``leanbert bench`` loads this file without registering it in sys.modules,
    which ``dataclasses`` needs.)"""

    def __init__(self, name: str, make: Maker,
                 kind: str, model: str, precision: str, file_bytes: int, file_what: str, reference: str,
                 info: dict[str, Any] | None = None) -> None:
        self.name, self.make, self.kind, self.model, self.precision = name, make, kind, model, precision
        self.file_bytes, self.file_what, self.reference = file_bytes, file_what, reference  # reference: compared with
        self.info = info or {}


def _torch_call(model: Any, hf: bool = False) -> Maker:
    def make(ids: torch.Tensor, mask: torch.Tensor, threads: int) -> Callable[[], np.ndarray]:
        if hf:
            return lambda: model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        return lambda: model(ids, mask).last_hidden_state.numpy()
    return make


def _ort_call(path: Path, threads: list[int], variant: str = "auto") -> tuple[Maker, int, str]:
    """The maker (one ONNX Runtime session per thread count of ``threads``), file bytes and name."""
    from leanbert.deploy.onnx import OnnxModel

    sessions = {t: OnnxModel(path, variant=variant, threads=t) for t in threads}  # type: ignore[arg-type]

    def make(ids: torch.Tensor, mask: torch.Tensor, threads: int) -> Callable[[], np.ndarray]:
        m = sessions[threads]
        out = "last_hidden_state" if "last_hidden_state" in m.output_names else m.output_names[0]
        arrays = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
        feed = {n: np.ascontiguousarray(arrays[n], dtype=np.int64) for n in m.input_names}
        return lambda: m.session.run([out], feed)[0]

    first = sessions[threads[0]]
    return make, first.file_bytes, first.file.name


def _safetensors_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def _optimum_python(args: argparse.Namespace, log: list[str]) -> Path:
    """The optimum venv's python, creating ``benchmarks/.venv-optimum`` if needed (as
    ``make bench-optimum-env`` does). Raises RuntimeError with the reason when it cannot."""
    if args.optimum_python is not None:
        if not args.optimum_python.is_file():
            raise RuntimeError(f"--optimum-python {args.optimum_python} does not exist")
        return args.optimum_python
    python = OPTIMUM_VENV / "bin" / "python"
    if (OPTIMUM_VENV / ".installed").is_file() and python.is_file():
        return python
    print(f"creating {OPTIMUM_VENV} for the optimum anchor (pip install {' '.join(OPTIMUM_REQUIREMENTS)}) ...",
          flush=True)
    steps = [[sys.executable if shutil.which("python3") is None else "python3", "-m", "venv", str(OPTIMUM_VENV)],
             [str(python), "-m", "pip", "install", "--quiet", *OPTIMUM_REQUIREMENTS]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"could not build the optimum venv ({' '.join(cmd[:4])} ...): {tail[0]}")
    (OPTIMUM_VENV / ".installed").touch()
    log.append(f"created {OPTIMUM_VENV}")
    return python


def _optimum_export(args: argparse.Namespace, hf_dir: Path, out: Path, log: list[str]) -> dict[str, Any]:
    python = _optimum_python(args, log)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([str(python), "-c", OPTIMUM_SCRIPT, str(hf_dir), str(out)], capture_output=True,
                          text=True, env=env, timeout=900)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("OPTIMUM_RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the optimum export failed (exit {done.returncode}): {tail[0]}")
    return json.loads(lines[-1][len("OPTIMUM_RESULT "):])


def build_candidates(args: argparse.Namespace, work: Path) -> tuple[dict[str, Candidate], dict[str, str], dict[str, Any]]:
    """All candidates that could be built, the missing ones with their reasons, and setup facts."""
    import transformers

    import leanbert
    from leanbert.deploy.onnx import export_onnx
    from leanbert.deploy.torch_int8 import quantize_int8, weight_bytes

    cands: dict[str, Candidate] = {}
    missing: dict[str, str] = {}
    setup: dict[str, Any] = {"log": []}
    torch.manual_seed(args.seed)
    config = transformers.MobileBertConfig()
    if args.layers is not None:
        config.num_hidden_layers = args.layers
    hf = transformers.MobileBertModel(config).eval()
    hf_dir = work / "mobilebert-transformers"
    hf.save_pretrained(hf_dir)
    setup["mobilebert_config"] = {"num_hidden_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
                                  "intra_bottleneck_size": config.intra_bottleneck_size,
                                  "normalization_type": config.normalization_type}
    cands["transformers-fp32"] = Candidate(
        "transformers-fp32", _torch_call(hf, hf=True), "pytorch", "mobilebert", "fp32",
        _safetensors_bytes(hf_dir), "model.safetensors (transformers)", "transformers-fp32")

    plain = leanbert.from_pretrained(hf_dir).eval()
    lean_dir = work / "mobilebert-leanbert"
    leanbert.save_pretrained(plain, lean_dir)
    fast = leanbert.optimize(leanbert.from_pretrained(hf_dir).eval(), for_training=False)
    cands["leanbert-fp32"] = Candidate(
        "leanbert-fp32", _torch_call(fast), "pytorch", "mobilebert", "fp32",
        _safetensors_bytes(lean_dir), "model.safetensors (leanbert)", "transformers-fp32")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.ao's deprecation, said in the docstring
        warnings.simplefilter("ignore", UserWarning)  # (and its quantized-tensor one)
        dyn = quantize_int8(plain, method="dynamic")
    cands["leanbert-int8-dynamic"] = Candidate(
        "leanbert-int8-dynamic", _torch_call(dyn), "pytorch", "mobilebert", "int8",
        weight_bytes(dyn), "weight_bytes (int8 tensors + scales, not saved)", "transformers-fp32",
        {"method": "torch.ao quantize_dynamic, eager"})

    if args.compile:
        try:
            compiled = torch.compile(quantize_int8(plain, method="torchao"))
            cands["leanbert-int8-torchao-compiled"] = Candidate(
                "leanbert-int8-torchao-compiled", _torch_call(compiled), "pytorch", "mobilebert", "int8",
                weight_bytes(compiled._orig_mod), "weight_bytes (int8 tensors + scales, not saved)",
                "transformers-fp32", {"method": "torchao Int8DynamicActivationInt8WeightConfig + torch.compile",
                                      "compile_s": {}})
        except Exception as e:  # noqa: BLE001 - reported as a missing candidate
            missing["leanbert-int8-torchao-compiled"] = f"{type(e).__name__}: {e}".splitlines()[0]
    else:
        missing["leanbert-int8-torchao-compiled"] = "not run (pass --compile; ~75 s of compilation per shape)"

    started = time.perf_counter()
    onnx_dir = export_onnx(plain, work / "mobilebert-onnx", quantize="dynamic", heads=[])
    setup["leanbert_export_s"] = time.perf_counter() - started
    for variant in ("fp32", "int8"):
        make, size, name = _ort_call(onnx_dir, args.threads, variant)
        cands[f"ort-{variant}"] = Candidate(f"ort-{variant}", make, "onnxruntime", "mobilebert", variant, size,
                                            name + " (leanbert export)", "transformers-fp32")

    if args.no_optimum:
        missing["optimum-ort-int8"] = "left out (--no-optimum)"
    else:
        try:
            result = _optimum_export(args, hf_dir, work / "mobilebert-optimum", setup["log"])
            setup["optimum"] = result
            path = work / "mobilebert-optimum" / "model_quantized.onnx"
            make, size, _ = _ort_call(path, args.threads)
            cands["optimum-ort-int8"] = Candidate(
                "optimum-ort-int8", make, "onnxruntime", "mobilebert", "int8", size,
                "model_quantized.onnx (optimum)", "transformers-fp32", {"recipe": result["recipe"]})
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            missing["optimum-ort-int8"] = str(e)

    if args.no_bert:
        missing["bert-base-fp32"] = missing["bert-base-ort-int8"] = "left out (--quick / --no-bert)"
    else:
        bert = leanbert.build_model("bert-base", heads=[]).eval()
        bert_dir = work / "bert-base-leanbert"
        leanbert.save_pretrained(bert, bert_dir)
        bert_fast = leanbert.optimize(leanbert.from_pretrained(bert_dir).eval(), for_training=False)
        cands["bert-base-fp32"] = Candidate(
            "bert-base-fp32", _torch_call(bert_fast), "pytorch", "bert-base", "fp32",
            _safetensors_bytes(bert_dir), "model.safetensors (leanbert)", "bert-base-fp32")
        started = time.perf_counter()
        bert_onnx = export_onnx(bert, work / "bert-base-onnx", quantize="dynamic")
        setup["bert_export_s"] = time.perf_counter() - started
        make, size, name = _ort_call(bert_onnx, args.threads, "int8")
        cands["bert-base-ort-int8"] = Candidate("bert-base-ort-int8", make, "onnxruntime", "bert-base", "int8", size,
                                                name + " (leanbert export)", "bert-base-fp32")
    return cands, missing, setup


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def make_inputs(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1000 * batch + length)
    ids = torch.randint(1000, 30000, (batch, length), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, torch.ones_like(ids)


def agreement(cands: dict[str, Candidate], calls: dict[str, Callable[[], np.ndarray]]) -> dict[str, float]:
    """max |out - reference| / max |reference| per candidate on one input."""
    outs = {n: np.asarray(c(), dtype=np.float64) for n, c in calls.items()}
    rel = {}
    for name, out in outs.items():
        ref = outs[cands[name].reference]
        rel[name] = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
    return rel


def measure(cands: dict[str, Candidate], batch: int, length: int, rounds: int, warmup: int, seed: int,
            threads: list[int]) -> tuple[dict[str, dict[int, list[float]]], dict[str, float], dict[str, float]]:
    """Call times (s) per candidate and thread count, output agreement, and first-call seconds
    at one shape. Every (candidate, thread count) runs once per round, in an order that rotates."""
    ids, mask = make_inputs(batch, length, seed)
    calls = {(n, t): c.make(ids, mask, t) for n, c in cands.items() for t in threads}
    first: dict[str, float] = {}
    with torch.inference_mode():
        torch.set_num_threads(threads[-1])
        for n in cands:  # first call: compilation for torch.compile, allocations
            start = time.perf_counter()
            calls[(n, threads[-1])]()
            first[n] = time.perf_counter() - start
        rel = agreement(cands, {n: calls[(n, threads[-1])] for n in cands})
        keys = list(calls)
        times: dict[str, dict[int, list[float]]] = {n: {t: [] for t in threads} for n in cands}
        for r in range(warmup + rounds):
            for name, t in keys[r % len(keys):] + keys[: r % len(keys)]:
                torch.set_num_threads(t)  # PyTorch candidates; ORT sessions have their own
                start = time.perf_counter()
                calls[(name, t)]()
                elapsed = time.perf_counter() - start
                if r >= warmup:
                    times[name][t].append(elapsed)
    return times, rel, first


def fastest(times: dict[str, dict[int, list[float]]]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Each candidate's times at its fastest thread count (lowest median), and that count."""
    best = {n: min(per, key=lambda t: statistics.median(per[t])) for n, per in times.items()}
    return {n: times[n][t] for n, t in best.items()}, best


def paired_ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    return statistics.median(s / f for s, f in zip(times[slow], times[fast], strict=True))


def summarize(ts: list[float], batch: int) -> dict[str, Any]:
    ms = np.asarray(ts) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "min_ms": float(ms.min()), "n": len(ts),
            "sequences_per_s": float(batch / np.median(ts)), "all_ms": [float(x) for x in ms]}


def targets(times: dict[str, list[float]], missing: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The three targets at batch 1 x 128 (paired-ratio medians; 'best' = highest ratio)."""
    def best(slow: str, group: tuple[str, ...]) -> tuple[str | None, float | None]:
        if slow not in times:
            return None, None
        ratios = {f: paired_ratio(times, slow, f) for f in group if f in times}
        if not ratios:
            return None, None
        fast = max(ratios, key=ratios.get)
        return fast, ratios[fast]

    spec = {"int8_vs_transformers_fp32": ("transformers-fp32", INT8_PATHS),
            "int8_vs_optimum_int8": ("optimum-ort-int8", INT8_PATHS),
            "best_vs_bert_base_fp32": ("bert-base-fp32", MOBILEBERT_PATHS)}
    out = {}
    for name, (slow, group) in spec.items():
        fast, value = best(slow, group)
        entry: dict[str, Any] = {"target": TARGETS[name], "against": slow, "best_path": fast, "value": value,
                                 "met": None if value is None else value >= TARGETS[name]}
        if value is None:
            entry["why_not_measured"] = missing.get(slow, "candidate not measured")
        out[name] = entry
    return out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("leanbert", "torch", "transformers", "onnxruntime", "onnx", "onnxscript", "torchao", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def plot(result: dict[str, Any], path: Path) -> str | None:
    """Latency p50 per candidate and batch-1 length, one group of bars per length (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'leanbert[plots]')"
    from leanbert.io import atomic_write_bytes

    lengths = result["settings"]["lengths"]
    names = list(result["candidates"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(lengths) * len(names) / 4), 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ys = [result["latency"].get(f"b1_l{n}", {}).get(name, {}).get("p50_ms", np.nan) for n in lengths]
        ax.bar(np.arange(len(lengths)) + (i - (len(names) - 1) / 2) * width, ys, width, label=name)
    ax.set_xticks(np.arange(len(lengths)), [f"length {n}" for n in lengths])
    ax.set_yscale("log")
    ax.set_ylabel("batch-1 latency p50 (ms, log)")
    m = result["machine"]
    ax.set_title(f"{m['cpu_model']}, each at its fastest of {result['settings']['threads']} threads", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return None


def print_table(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(f"\nMobileBERT deployment, each candidate at its fastest of {s['threads']} threads, "
          f"{result['machine']['cpu_model']}, "
          f"load average {result['machine']['load_average']:.1f} on {result['machine']['cpus']} CPUs")
    shapes = list(result["latency"])
    head = "".join(f"{k + ' p50':>13}" for k in shapes)
    print(f"{'candidate':<32}{'size MB':>9}{head}{'p90@128':>9}{'p99@128':>9}{'threads@128':>12}{'rel diff':>10}")
    for name, c in result["candidates"].items():
        cells = "".join(f"{result['latency'][k].get(name, {}).get('p50_ms', float('nan')):>13.1f}" for k in shapes)
        t = result["latency"][TARGET_SHAPE].get(name, {})
        print(f"{name:<32}{c['file_bytes'] / 1e6:>9.1f}{cells}{t.get('p90_ms', float('nan')):>9.1f}"
              f"{t.get('p99_ms', float('nan')):>9.1f}{t.get('threads', '-'):>12}{c['max_rel_diff']:>10.1e}")
    for name, why in result["missing"].items():
        print(f"{name:<32}  MISSING: {why}")
    for name, c in result["candidates"].items():
        if c.get("compile_s"):
            print(f"{name}: torch.compile took " + ", ".join(f"{k} {v:.0f} s" for k, v in c["compile_s"].items())
                  + " (first call per shape, not in the latencies)")
    if result["throughput"]:
        th = result["throughput"]
        print(f"throughput at batch {th['batch']} x {th['length']} (sequences/s): "
              + ", ".join(f"{n} {v['sequences_per_s']:.1f} ({v['threads']}t)" for n, v in th["candidates"].items()))
    print("targets at batch 1 x 128 (median of per-round ratios):")
    for name, t in result["targets"].items():
        if t["value"] is None:
            print(f"  {name:<28} >= {t['target']}: not measured ({t['why_not_measured']})")
        else:
            print(f"  {name:<28} {t['best_path']} {t['value']:.2f}x  >= {t['target']}: "
                  f"{'met' if t['met'] else 'NOT met'}")
    fp = result["fp32_agreement"]
    print(f"fp32 outputs within {fp['rtol']} of their reference: {'yes' if fp['ok'] else 'NO'} "
          f"(max rel diff {fp['max_rel_diff']:.1e})")


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    previous_threads = torch.get_num_threads()
    args.threads = sorted(set(args.threads or (1, previous_threads)))
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace) -> int:
    from leanbert.io import atomic_write_json
    from leanbert.provenance import with_provenance

    started = time.perf_counter()
    shapes = [(1, n) for n in args.lengths] + ([(args.batch, args.batch_length)] if args.batch else [])
    latency: dict[str, dict[str, Any]] = {}
    throughput: dict[str, Any] = {}
    rel_all: dict[str, float] = {}
    times_target: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cands, missing, setup = build_candidates(args, Path(tmp))
        setup["build_s"] = time.perf_counter() - started
        print(f"built {len(cands)} candidates in {setup['build_s']:.0f} s; timing {shapes} ...", flush=True)
        for batch, length in shapes:
            rounds, warmup = (args.rounds, args.warmup) if batch == 1 else (args.batch_rounds, 1)
            by_threads, rel, first = measure(cands, batch, length, rounds, warmup, args.seed, args.threads)
            times, chosen = fastest(by_threads)
            for name, value in rel.items():
                rel_all[name] = max(rel_all.get(name, 0.0), value)
            for name, c in cands.items():
                if "compile_s" in c.info:
                    c.info["compile_s"][f"b{batch}_l{length}"] = first[name]
            summary = {n: {**summarize(ts, batch), "threads": chosen[n],
                           "p50_ms_by_threads": {str(t): 1e3 * statistics.median(v) for t, v in by_threads[n].items()}}
                       for n, ts in times.items()}
            if batch == 1:
                latency[f"b1_l{length}"] = summary
                if length == 128:
                    times_target = times
            else:
                throughput = {"batch": batch, "length": length, "rounds": rounds, "candidates": summary}
    fp32 = {n: rel_all[n] for n, c in cands.items() if c.precision == "fp32" and c.reference != n}
    result = {
        "benchmark": "inference",
        "settings": {"lengths": args.lengths, "rounds": args.rounds, "warmup": args.warmup,
                     "batch": args.batch, "batch_length": args.batch_length, "batch_rounds": args.batch_rounds,
                     "threads": args.threads, "thread_rule": THREAD_RULE, "quick": args.quick,
                     "compile": args.compile, "seed": args.seed, "mode": "torch.inference_mode; ORT CPU EP"},
        "machine": {"cpu_model": cpu_model(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()[0], "versions": versions()},
        "setup": setup,
        "candidates": {n: {"kind": c.kind, "model": c.model, "precision": c.precision, "file_bytes": c.file_bytes,
                           "file": c.file_what, "reference": c.reference, "max_rel_diff": rel_all[n], **c.info}
                       for n, c in cands.items()},
        "missing": missing,
        "latency": latency,
        "throughput": throughput,
        "ratios_b1_l128": {f"{slow}/{fast}": paired_ratio(times_target, slow, fast)
                           for slow in ("transformers-fp32", "optimum-ort-int8", "bert-base-fp32")
                           for fast in cands if slow in cands and fast != slow},
        "targets": targets(times_target, missing),
        "fp32_agreement": {"rtol": FP32_RTOL, "definition": "max |out - ref| / max |ref|, ref: transformers-fp32 "
                           "(bert-base: leanbert bert-base-fp32)", "per_candidate": fp32,
                           "max_rel_diff": max(fp32.values(), default=0.0),
                           "ok": all(v <= FP32_RTOL for v in fp32.values())},
        "seconds": time.perf_counter() - started,
    }
    print_table(result)
    png = args.output.with_suffix(".png")
    if not args.no_plot:
        why = plot(result, png)
        result["plot"] = str(png) if why is None else f"not written: {why}"
    atomic_write_json(args.output, with_provenance(result, ROOT))
    print(f"wrote {args.output}" + ("" if args.no_plot else f" and {png}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
