"""A tiny run on the engine itself: a 2-layer BERT classifier on random token ids, so that the
engine's own behaviour is tested without data preparation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _tiny_fit(output: Path, steps: int = 6, callbacks=(), stop_after: int | None = None, **sections):
    import leanbert
    from leanbert.tasks.finetune import TaskObjective
    from leanbert.train.config import CheckpointSection, LogSection, TrainSection
    from leanbert.train.engine import Engine
    from leanbert.train.optim import OptimConfig

    train = TrainSection(max_steps=steps, precision="fp32", **sections.get("train", {}))
    log = LogSection(every=1, tensorboard=False, progress=False, **sections.get("log", {}))
    engine = Engine(job="finetune", output_dir=output, train=train, optim=OptimConfig(lr=1e-3),
                    checkpoint=CheckpointSection(every=2), log=log, config={"toy": True}, callbacks=callbacks)
    with engine:
        torch.manual_seed(0)
        model = leanbert.build_model("bert-tiny", vocab_size=97, hidden_size=32, num_heads=2, intermediate_size=64,
                                     num_layers=2, heads=["classifier"], max_position_embeddings=32)

        def batches(start: int, micro: int, rank: int, world: int):
            for step in range(start, steps):
                g = torch.Generator().manual_seed(step)
                yield {"input_ids": torch.randint(5, 97, (micro, 12), generator=g),
                       "attention_mask": torch.ones(micro, 12, dtype=torch.long),
                       "task_labels": torch.randint(0, 2, (micro,), generator=g)}

        return engine.fit(model, TaskObjective("classification"), batches, total_steps=steps, global_batch=4,
                          stop_after=stop_after)


@pytest.fixture
def tiny_fit():
    """``tiny_fit(output, steps=6, callbacks=(), train={...}, log={...})``: one engine run."""
    return _tiny_fit
