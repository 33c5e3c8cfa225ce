"""Activation (gradient) checkpointing per encoder layer: same losses and gradients as without
it (dropout on, token dropping's routing on), and the layers really are recomputed."""

from __future__ import annotations

import pytest
import torch

import leanbert
from leanbert.algorithms.token_dropping import TokenDropping
from leanbert.models.base import set_activation_checkpointing
from leanbert.train.pretrain import MLMObjective

V = 120
SPECIAL = {"allow_ids": [1, 2, 3, 4], "deny_ids": [0]}


def batch(b: int = 3, s: int = 16) -> dict[str, torch.Tensor]:
    """Token ids in [10, V), rows 1 and 2 padded after 11 and 7 tokens; 3 prediction slots."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(10, V, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 11:] = 0
    mask[2, 7:] = 0
    ids[mask == 0] = 0
    positions = torch.tensor([[1, 4, 9], [2, 5, 10], [1, 3, 0]])
    labels = torch.tensor([[11, 12, 13], [14, 15, 16], [17, 18, -100]])
    ids[0, 4] = 4  # one [MASK] input, which token dropping always keeps
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "mlm_positions": positions, "labels": labels}


def loss_and_grads(model, data, td: TokenDropping | None, checkpointed: bool):
    """One MLM step's loss and gradients from a fixed RNG state (dropout masks)."""
    set_activation_checkpointing(model, checkpointed)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    router = td.router(data, 0) if td is not None else None
    out = MLMObjective()(model, data, router)
    loss = out["loss.mlm"] / (data["labels"] != -100).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert float(loss_a) == pytest.approx(float(loss_b), abs=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=0, msg=name)


def test_bert_with_token_dropping_has_the_same_gradients_with_checkpointing():
    model = leanbert.build_model({"model_type": "bert", "vocab_size": V, "hidden_size": 32, "num_layers": 4,
                                  "num_heads": 4, "intermediate_size": 64, "max_position_embeddings": 32,
                                  "hidden_dropout": 0.1, "attention_dropout": 0.1}).train()
    td = TokenDropping({"method": "token", "keep": 6, **SPECIAL}, model.config)
    data = batch()
    plain = loss_and_grads(model, data, td, checkpointed=False)
    assert_same(plain, loss_and_grads(model, data, td, checkpointed=True))
    # the routing really dropped tokens in the middle layers (k = 6 of 16)
    assert td.router(data, 0).kept_index.shape == (3, 6)


def test_mobilebert_has_the_same_gradients_with_checkpointing():
    model = leanbert.build_model("mobilebert-test", vocab_size=V, num_layers=3, attention_dropout=0.1,
                                 hidden_dropout=0.1).train()
    data = batch()
    assert_same(loss_and_grads(model, data, None, checkpointed=False),
                loss_and_grads(model, data, None, checkpointed=True))


def test_checkpointed_layers_run_twice_per_step_and_once_without_gradients():
    model = leanbert.build_model({"model_type": "bert", "vocab_size": V, "hidden_size": 32, "num_layers": 2,
                                  "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32})
    calls = []
    for i, layer in enumerate(model.encoder.layers):
        layer.register_forward_pre_hook(lambda mod, args, i=i: calls.append(i))
    assert set_activation_checkpointing(model) == 1
    data = batch()
    model(data["input_ids"], data["attention_mask"], labels=data["labels"],
          mlm_positions=data["mlm_positions"]).loss.backward()
    assert sorted(calls) == [0, 0, 1, 1]  # forward, then the recomputation in backward
    calls.clear()
    with torch.no_grad():
        model(data["input_ids"], data["attention_mask"])
    assert calls == [0, 1]


def test_engine_applies_the_train_setting(tmp_path):
    """``train.activation_checkpointing`` on the engine: the same run, the same weights."""
    from leanbert.tasks.finetune import TaskObjective
    from leanbert.train.config import CheckpointSection, LogSection, TrainSection
    from leanbert.train.engine import Engine
    from leanbert.train.optim import OptimConfig

    def run(out, checkpointing: bool):
        train = TrainSection(max_steps=3, precision="fp32", activation_checkpointing=checkpointing)
        engine = Engine(job="finetune", output_dir=out, train=train, optim=OptimConfig(lr=1e-3),
                        checkpoint=CheckpointSection(every=10),
                        log=LogSection(every=1, tensorboard=False, progress=False), config={"toy": True})
        with engine:
            torch.manual_seed(0)
            model = leanbert.build_model("bert-tiny", vocab_size=V, hidden_size=32, num_heads=2, num_layers=2,
                                         intermediate_size=64, heads=["classifier"], max_position_embeddings=32)

            def batches(start: int, micro: int, rank: int, world: int):
                for step in range(start, 3):
                    g = torch.Generator().manual_seed(step)
                    yield {"input_ids": torch.randint(5, V, (micro, 12), generator=g),
                           "attention_mask": torch.ones(micro, 12, dtype=torch.long),
                           "task_labels": torch.randint(0, 2, (micro,), generator=g)}

            engine.fit(model, TaskObjective("classification"), batches, total_steps=3, global_batch=4)
        return model.encoder.activation_checkpointing, model.state_dict()

    on, with_ckpt = run(tmp_path / "on", True)
    off, without = run(tmp_path / "off", False)
    assert on and not off
    for k in without:
        torch.testing.assert_close(with_ckpt[k], without[k], atol=1e-6, rtol=0, msg=k)
