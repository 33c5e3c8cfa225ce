"""MobileBERT reference details offered as options (Sun et al. 2020; SPEC Sec. 2): the
authors' -6 attention mask and classifier dropout, plus the parameter counts `leanbert info`
prints beside the paper's."""

from __future__ import annotations

import math

import pytest
import torch

import leanbert
from leanbert.cli.info import parameter_counts
from leanbert.models import model_preset
from leanbert.models.model import LeanbertModel

VOCAB = 97


def tiny(**kw) -> LeanbertModel:
    cfg = {"vocab_size": VOCAB, "max_position_embeddings": 64, "attention_dropout": 0.0, "hidden_dropout": 0.0}
    cfg.update(kw)
    torch.manual_seed(0)
    return leanbert.build_model("mobilebert-test", **cfg).eval()


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (2, 10), generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    ids[mask == 0] = 0
    return ids, mask


def test_padded_keys_scores_are_exactly_minus_six_after_scaling():
    model = tiny(padded_key_score=-6.0)
    ids, mask = padded_batch()
    out = model(ids, mask, output_attentions=True)
    assert torch.all(out.attention_scores[0][1, :, :, 6:] == -6.0)
    # The formula on the first layer's own queries and keys: softmax(where(mask, qk/sqrt(d), -6)).
    seen = {}
    attend = model.encoder.layers[0].attention.attend
    handle = attend.register_forward_pre_hook(lambda _m, args: seen.update(q=args[0], k=args[1]))
    out = model(ids, mask, output_attentions=True)
    handle.remove()
    scores, probs = out.attention_scores[0], out.attention_probs[0]
    raw = seen["q"] @ seen["k"].transpose(-1, -2) / math.sqrt(seen["q"].shape[-1])
    expected = raw.masked_fill(~mask.bool()[:, None, None, :], -6.0)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, expected.softmax(-1))
    assert probs[1, :, :, 6:].min() > 0  # padded keys keep a small weight, unlike transformers' mask


def test_minus_six_mask_changes_padded_rows_only_and_every_path_agrees():
    ids, mask = padded_batch()
    default = tiny(initializer_range=0.3)  # larger weights: scores and values far from zero
    reference = tiny(initializer_range=0.3, padded_key_score=-6.0)
    reference.load_state_dict(default.state_dict())
    a = default(ids, mask).last_hidden_state
    b = reference(ids, mask).last_hidden_state
    scale = a.abs().max()
    torch.testing.assert_close(a[0] / scale, b[0] / scale, atol=1e-5, rtol=0)  # no padding: identical
    assert (a[1] - b[1]).abs().max() > 1e-3 * scale  # padded keys now get exp(-6)-sized weights
    explicit = reference(ids, mask, output_attentions=True).last_hidden_state
    torch.testing.assert_close(b / scale, explicit / scale, atol=1e-5, rtol=0)
    leanbert.optimize(reference, for_training=False)  # the packed inference plan keeps the -6 mask
    with torch.no_grad():
        fast = reference(ids, mask).last_hidden_state
    leanbert.restore(reference)
    torch.testing.assert_close(fast / scale, b / scale, atol=1e-4, rtol=0)


def test_transformers_export_warns_about_the_minus_six_mask():
    from leanbert.hf import mobilebert_config_to_hf

    with pytest.warns(UserWarning, match="padded batches will differ"):
        mobilebert_config_to_hf(model_preset("mobilebert-test", ["padded_key_score=-6.0"]))


def test_classifier_dropout_applies_in_training_only():
    model = tiny(heads=["classifier"], num_labels=3, classifier_dropout=0.1)
    assert model.classifier.dropout.p == 0.1
    ids, mask = padded_batch()
    with torch.no_grad():
        eval_a, eval_b = model(ids, mask).logits, model(ids, mask).logits
        model.train()
        torch.manual_seed(3)
        train_a = model(ids, mask).logits
        model.classifier.dropout.p = 0.0
        torch.manual_seed(3)
        train_plain = model(ids, mask).logits
    torch.testing.assert_close(eval_a, eval_b, atol=0, rtol=0)
    torch.testing.assert_close(train_plain, eval_a, atol=1e-6, rtol=1e-6)  # no other dropout in this model
    assert (train_a - eval_a).abs().max() > 1e-4


def test_classifier_dropout_falls_back_to_the_hidden_dropout():
    assert tiny(heads=["classifier"]).classifier.dropout.p == 0.0  # MobileBERT: hidden dropout 0.0
    assert leanbert.build_model("bert-tiny", heads=["classifier"]).classifier.dropout.p == 0.1  # BERT: 0.1


def test_finetuning_option_sets_the_classifier_dropout(tmp_path):
    from leanbert.tasks.finetune import FinetuneConfig, load_for_finetuning
    from leanbert.tasks.registry import get_task

    model = tiny()
    leanbert.save_pretrained(model, tmp_path / "m")
    task = get_task("sst2")
    loaded = load_for_finetuning(tmp_path / "m", task, FinetuneConfig(classifier_dropout=0.1))
    assert loaded.classifier.dropout.p == 0.1


@pytest.mark.parametrize(
    ("preset", "encoder", "layers"),
    [("mobilebert", 24_581_888, 20_213_760), ("mobilebert-tiny", 15_485_696, 11_117_568),
     ("bert-base", 109_482_240, 85_054_464)],
)
def test_info_counts_with_and_without_embeddings_and_heads(preset, encoder, layers):
    with torch.device("meta"):
        model = LeanbertModel(model_preset(preset, ["heads=[mlm]"]))
    counts = parameter_counts(model)
    assert counts["encoder"] == encoder and counts["encoder_layers"] == layers
    # Tied word embeddings are counted once in the total.
    assert counts["total"] == encoder + counts["head:mlm"] - (0 if preset.startswith("mobile") else 0)
