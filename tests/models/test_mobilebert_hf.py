"""Numerical parity and checkpoint interop with transformers' MobileBERT (random weights,
padded batches): leanbert loads MobileBertModel / ForMaskedLM / ForPreTraining directories
and exports back."""

from __future__ import annotations

import pytest
import torch

import leanbert
from leanbert.errors import CheckpointError

transformers = pytest.importorskip("transformers")

VOCAB = 211
SMALL = dict(vocab_size=VOCAB, hidden_size=64, embedding_size=16, num_hidden_layers=2, num_attention_heads=4,
             intra_bottleneck_size=32, intermediate_size=48, max_position_embeddings=64)
TINY_SHAPE = dict(use_bottleneck_attention=True, key_query_shared_bottleneck=False, num_feedforward_networks=2)


def hf_model(tmp_path, cls: str = "MobileBertForPreTraining", **kw):
    cfg = transformers.MobileBertConfig(**{**SMALL, **kw})
    torch.manual_seed(0)
    model = getattr(transformers, cls)(cfg).eval()
    with torch.no_grad():  # non-trivial NoNorm / bias values so that parity sees them
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def padded_batch(b: int = 4, s: int = 23):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    for i, n in enumerate([s, s - 7, 5, s - 1][:b]):
        mask[i, n:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, s // 2:] = 1
    return ids, mask, types


@pytest.mark.parametrize("shape", [{}, TINY_SHAPE], ids=["mobilebert", "tiny"])
def test_pretraining_model_parity(tmp_path, shape):
    hf, path = hf_model(tmp_path, **shape)
    ours = leanbert.from_pretrained(path)
    assert sorted(ours.heads) == ["mlm", "nsp"] and ours.encoder.pooler is not None
    ids, mask, types = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        out = ours(ids, mask, types)
    torch.testing.assert_close(out.last_hidden_state, ref.hidden_states[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-4, rtol=0)


def test_masked_lm_parity_without_pooler(tmp_path):
    hf, path = hf_model(tmp_path, "MobileBertForMaskedLM")
    ours = leanbert.from_pretrained(path)
    assert ours.heads == ["mlm"] and ours.encoder.pooler is None
    ids, mask, types = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, mask, types)
    torch.testing.assert_close(out.mlm_logits, ref.logits, atol=1e-4, rtol=0)


def test_base_model_parity_layer_by_layer(tmp_path):
    hf, path = hf_model(tmp_path, "MobileBertModel", num_hidden_layers=3)
    ours = leanbert.from_pretrained(path)
    assert ours.heads == []
    ids, mask, types = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        out = ours(ids, mask, types, output_hidden_states=True)
    torch.testing.assert_close(out.extras["embedding_output"], ref.hidden_states[0], atol=1e-5, rtol=0)
    for mine, theirs in zip(out.hidden_states, ref.hidden_states[1:], strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.pooled_output, ref.pooler_output, atol=1e-5, rtol=0)


def test_attention_probabilities_match_eager_transformers(tmp_path):
    _, path = hf_model(tmp_path, "MobileBertModel")
    hf = transformers.MobileBertModel.from_pretrained(path, attn_implementation="eager").eval()
    ours = leanbert.from_pretrained(path)
    ids, mask, types = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_attentions=True)
        out = ours(ids, mask, types, output_attentions=True)
    for mine, theirs in zip(out.attention_probs, ref.attentions, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_masked_lm_loss_matches_transformers(tmp_path):
    hf, path = hf_model(tmp_path)
    ours = leanbert.from_pretrained(path)
    ids, mask, types = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    labels[0, 9] = 17
    nsp = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, next_sentence_label=nsp)
        out = ours(ids, mask, types, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_round_trip_leanbert_transformers_leanbert(tmp_path):
    model = leanbert.build_model("mobilebert-test", vocab_size=VOCAB, max_position_embeddings=64).eval()
    leanbert.export_to_transformers(model, tmp_path / "hf")
    hf = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "MobileBertForPreTraining"
    back = leanbert.from_pretrained(tmp_path / "hf")
    assert back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    ids, mask, types = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = model(ids, mask, types)
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("heads,auto", [([], "AutoModel"), (["classifier"], "AutoModelForSequenceClassification"),
                                        (["span_qa"], "AutoModelForQuestionAnswering")])
def test_export_heads_load_in_transformers(tmp_path, heads, auto):
    model = leanbert.build_model("mobilebert-tiny-test", vocab_size=VOCAB, max_position_embeddings=64,
                                 heads=heads, num_labels=3).eval()
    leanbert.export_to_transformers(model, tmp_path / "hf")
    hf = getattr(transformers, auto).from_pretrained(tmp_path / "hf").eval()
    ids, mask, types = padded_batch()
    with torch.no_grad():
        ours, ref = model(ids, mask, types), hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if heads == ["classifier"]:
        torch.testing.assert_close(ours.logits, ref.logits, atol=1e-4, rtol=0)
    elif heads == ["span_qa"]:
        torch.testing.assert_close(ours.start_logits, ref.start_logits, atol=1e-4, rtol=0)
    else:
        torch.testing.assert_close(ours.last_hidden_state, ref.last_hidden_state, atol=1e-4, rtol=0)


def test_checkpoint_without_bottlenecks_is_refused_clearly(tmp_path):
    _, path = hf_model(tmp_path, "MobileBertModel", use_bottleneck=False, intra_bottleneck_size=64)
    with pytest.raises(CheckpointError, match="use_bottleneck: false"):
        leanbert.from_pretrained(path)
