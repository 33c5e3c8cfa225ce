"""The transformers surface of the model: outputs that index like transformers' ModelOutput,
``labels=`` for whichever task head the model has, and save/load as methods."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import leanbert
from leanbert.models.base import ModelOutput
from leanbert.models.model import LeanbertModel

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "vocab_size": 99,
        "max_position_embeddings": 16}


def tiny(heads: list[str], **kw) -> LeanbertModel:
    torch.manual_seed(0)
    return leanbert.build_model("bert-tiny", heads=heads, **TINY, **kw).eval()


def test_attribute_key_and_position_give_the_same_tensor(padded_batch):
    ids, mask = padded_batch
    out = tiny(["classifier"])(ids, mask, labels=torch.tensor([0, 1, 1]))
    assert out.loss is out["loss"] is out[0] is out.to_tuple()[0]
    assert out.logits is out["logits"] is out[1]
    assert isinstance(out, dict) and "loss" in out


def test_keys_skip_the_fields_that_are_none_and_keep_field_order(padded_batch):
    ids, mask = padded_batch
    out = tiny(["classifier"])(ids, mask, labels=torch.tensor([0, 1, 1]))
    assert list(out.keys()) == ["loss", "logits", "last_hidden_state", "pooled_output", "task_loss"]
    encoder_only = tiny([], use_pooler=False)(ids, mask)
    assert list(encoder_only.keys()) == ["last_hidden_state"] and encoder_only[0] is encoder_only.last_hidden_state
    assert encoder_only.to_tuple() == (encoder_only.last_hidden_state,)


def test_a_field_set_later_takes_its_place_in_field_order():
    out = ModelOutput(last_hidden_state=torch.zeros(1))
    out.loss = torch.ones(())
    out.mlm_loss = torch.ones(())
    out.logits = torch.ones(2)
    assert list(out) == ["loss", "logits", "last_hidden_state", "mlm_loss"]
    out.logits = None
    assert list(out) == ["loss", "last_hidden_state", "mlm_loss"]
    with pytest.raises(KeyError):
        out["logits"]
    with pytest.raises(TypeError):
        out.pop("loss")


def test_labels_train_the_classifier(padded_batch):
    ids, mask = padded_batch
    model, y = tiny(["classifier"], num_labels=3), torch.tensor([2, 0, 1])
    out = model(ids, mask, labels=y)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))
    torch.testing.assert_close(out.loss, model(ids, mask, task_labels=y).loss)


def test_labels_of_a_regression_head_are_float_targets(padded_batch):
    ids, mask = padded_batch
    model, y = tiny(["classifier"], num_labels=1, problem_type="regression"), torch.tensor([0.5, 4.0, 2.5])
    out = model(ids, mask, labels=y)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.view(-1), y))


def test_labels_of_an_mlm_model_are_mlm_labels(padded_batch):
    ids, mask = padded_batch
    model = tiny(["mlm", "nsp"])
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5] = 7, 11
    out = model(ids, mask, labels=labels)
    torch.testing.assert_close(out.loss, model(ids, mask, mlm_labels=labels).loss)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.mlm_logits, torch.tensor([7, 11])))


def test_a_model_with_mlm_and_classifier_takes_labels_for_the_classifier(padded_batch):
    ids, mask = padded_batch
    model = tiny(["mlm", "classifier"])
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[2, 1] = 5
    out = model(ids, mask, labels=torch.tensor([1, 0, 1]), mlm_labels=mlm_labels)
    torch.testing.assert_close(out.loss, out.task_loss + out.mlm_loss)
    torch.testing.assert_close(out.task_loss, F.cross_entropy(out.logits, torch.tensor([1, 0, 1])))


def test_span_qa_trains_on_start_and_end_positions_not_labels(padded_batch):
    ids, mask = padded_batch
    model = tiny(["span_qa"])
    out = model(ids, mask, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([2, 4, 3]))
    expected = (F.cross_entropy(out.start_logits, torch.tensor([1, 2, 3]))
                + F.cross_entropy(out.end_logits, torch.tensor([2, 4, 3]))) / 2
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="start_positions= and end_positions=, not labels="):
        model(ids, mask, labels=torch.tensor([0, 1, 1]))


def test_save_pretrained_and_from_pretrained_are_methods(padded_batch, tmp_path):
    ids, mask = padded_batch
    model = tiny(["classifier"], num_labels=3)
    assert model.save_pretrained(tmp_path / "ckpt") == tmp_path / "ckpt"
    loaded = LeanbertModel.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded, LeanbertModel) and loaded.heads == ["classifier"]
    torch.testing.assert_close(loaded(ids, mask).logits, model(ids, mask).logits, rtol=0, atol=0)


def test_the_config_accepts_trainers_use_cache_without_saving_it():
    model = tiny(["classifier"])
    model.config.use_cache = True  # what transformers.Trainer does
    assert "use_cache" not in model.config.model_dump()
