"""The BERT encoder and the forward contract of LeanbertModel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import leanbert
from leanbert.errors import ConfigError
from leanbert.models import model_preset


def tiny(**kw):
    cfg = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
               max_position_embeddings=64, heads=["mlm", "nsp"], hidden_dropout=0.0, attention_dropout=0.0)
    cfg.update(kw)
    return leanbert.build_model({"model_type": "bert", **cfg}).eval()


def batch(b=3, s=12, vocab=97):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    return ids, mask


def test_forward_without_labels_gives_full_mlm_logits():
    model = tiny()
    ids, mask = batch()
    out = model(ids, mask)
    assert out.last_hidden_state.shape == (3, 12, 32)
    assert out.mlm_logits.shape == (3, 12, 97)
    assert out.nsp_logits.shape == (3, 2)
    assert out.loss is None


def test_mlm_loss_uses_only_labelled_positions():
    model = tiny()
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 1], labels[2, 4] = 7, 9, 11
    out = model(ids, mask, labels=labels)
    full = model(ids, mask).mlm_logits
    expected = F.cross_entropy(full[labels != -100], labels[labels != -100])
    assert out.mlm_logits.shape == (3, 97)  # only the 3 predicted positions
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)


def test_compact_positions_equal_full_labels():
    model = tiny()
    ids, mask = batch()
    positions = torch.tensor([[3, 0], [1, 0], [4, 2]])
    compact = torch.tensor([[7, -100], [9, -100], [11, 13]])
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 1], labels[2, 4], labels[2, 2] = 7, 9, 11, 13
    a = model(ids, mask, labels=labels)
    b = model(ids, mask, labels=compact, mlm_positions=positions)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-6)
    assert b.mlm_token_loss.shape == (6,)
    assert (b.mlm_token_loss[b.mlm_label_ids == -100] == 0).all()


def test_nsp_loss_adds_to_mlm_loss():
    model = tiny()
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[:, 1] = 5
    nsp = torch.tensor([0, 1, 1])
    out = model(ids, mask, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(out.loss, out.mlm_loss + F.cross_entropy(out.nsp_logits, nsp))


def test_padding_does_not_change_real_tokens():
    model = tiny()
    ids, mask = batch()
    short = model(ids[2:3, :5]).last_hidden_state
    padded = model(ids[2:3], mask[2:3]).last_hidden_state[:, :5]
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


def test_split_layer_queries_subset_equals_full_layer_rows():
    model = tiny()
    ids, mask = batch()
    x = model.encoder.embeddings(ids)
    key_mask = mask.bool()[:, None, None, :]
    layer = model.encoder.layers[0]
    full = layer(x, key_mask).hidden
    idx = torch.tensor([[0, 2, 5], [1, 3, 4], [0, 1, 2]])
    part = layer(x, key_mask, query_index=idx).hidden
    torch.testing.assert_close(part, torch.gather(full, 1, idx[..., None].expand(-1, -1, 32)), atol=1e-6, rtol=1e-6)


def test_attention_outputs_on_request_match_fused_path():
    model = tiny()
    ids, mask = batch()
    a = model(ids, mask, output_attentions=True, output_hidden_states=True)
    b = model(ids, mask)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert len(a.attention_probs) == 2 and a.attention_probs[0].shape == (3, 4, 12, 12)
    torch.testing.assert_close(a.attention_probs[0].sum(-1), torch.ones(3, 4, 12))
    assert len(a.hidden_states) == 2
    assert b.attention_probs is None and b.hidden_states is None


def test_mlm_decoder_is_tied_to_word_embeddings():
    model = tiny()
    names = [n for n, _ in model.named_parameters()]
    assert not any("decoder" in n for n in names)
    with torch.no_grad():
        model.encoder.embeddings.word.weight[7].add_(1.0)
    ids, mask = batch()
    logits = model(ids, mask).mlm_logits
    h = model.mlm.norm(model.mlm.act(model.mlm.dense(model(ids, mask).last_hidden_state)))
    torch.testing.assert_close(logits[..., 7], h @ model.encoder.embeddings.word.weight[7] + model.mlm.bias[7])


@pytest.mark.parametrize(
    "preset,params",
    [("bert-tiny", 4_385_920), ("bert-mini", 11_170_560), ("bert-small", 28_763_648),
     ("bert-medium", 41_373_184), ("bert-base", 109_482_240), ("bert-large", 335_141_888)],
)
def test_preset_parameter_counts_match_bertmodel(preset, params):
    # Counts of transformers' BertModel (with pooler, without heads) of the same shape.
    with torch.device("meta"):
        model = leanbert.build_model(preset, heads=[])
    assert model.num_parameters() == params


def test_hidden_size_not_divisible_by_heads_is_rejected():
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        model_preset("bert-tiny", ["hidden_size=129"])


def test_unknown_config_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'num_layer'.*did you mean 'num_layers'"):
        model_preset("bert-tiny", ["num_layer=3"])


def test_wrongly_typed_value_is_named():
    with pytest.raises(ConfigError, match="key 'num_heads'"):
        model_preset("bert-tiny", ["num_heads=two"])


def test_dropout_out_of_range_is_rejected():
    with pytest.raises(ConfigError, match="hidden_dropout"):
        model_preset("bert-tiny", ["hidden_dropout=1.5"])


def test_task_heads_run_in_fp32_under_fp16_autocast():
    from leanbert.models.heads import ClassifierHead, NSPHead, SpanQAHead

    big = torch.full((2, 3, 8), 1e5)  # beyond fp16's range (65504)
    heads = [NSPHead(8), ClassifierHead(8, 3, 0.0), SpanQAHead(8)]
    with torch.autocast("cpu", dtype=torch.float16):
        outs = [heads[0](big[:, 0]), heads[1](big[:, 0]), *heads[2](big)]
    for out in outs:
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
