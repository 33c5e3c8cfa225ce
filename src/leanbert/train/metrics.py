"""Training metrics: a JSON-lines log, TensorBoard events, a progress bar, and the matmul
peak that model FLOPs utilisation (MFU) is measured against.

MFU = achieved model FLOPs per second / peak matmul FLOPs per second of this device in the
run's precision, measured at start-up with a large square matmul (PaLM, Chowdhery et al. 2022,
Appendix B defines MFU against the hardware peak; on CPUs no datasheet peak is reliable, so we
measure it).
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import torch


@functools.cache
def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.5, n: int = 2048) -> float:
    """Sustained FLOP/s of an n x n matmul in ``dtype`` on ``device`` (best of a few runs;
    measured once per process for each device, precision and duration)."""
    g = torch.Generator(device=device).manual_seed(0)  # private: must not move the training RNG
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(2):
        a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best = max(best, 3 * 2 * n**3 / dt)
    return best


class MetricsLogger:
    """Writes one JSON object per logged step to ``metrics.jsonl`` and mirrors scalars to
    TensorBoard (if installed and enabled). On resume, log lines beyond the resumed step are
    dropped so the log describes exactly the run that produced the weights."""

    def __init__(self, out_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("step", 0) <= resume_step:
                    kept.append(line)
            self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
            except ImportError:
                self.writer = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self.writer is not None:
            step = record["step"]
            prefix = "eval" if record.get("kind") == "eval" else "train"
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and v is not None:
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self.writer is not None:
            self.writer.close()
