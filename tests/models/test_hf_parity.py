"""Numerical parity with transformers' BERT, on random and on real pretrained weights."""

from __future__ import annotations

import pytest
import torch

import leanbert

transformers = pytest.importorskip("transformers")


def hf_pretraining_model(tmp_path, **kw):
    cfg = transformers.BertConfig(
        vocab_size=kw.pop("vocab_size", 211), hidden_size=kw.pop("hidden_size", 64),
        num_hidden_layers=kw.pop("layers", 2), num_attention_heads=kw.pop("heads", 4),
        intermediate_size=kw.pop("ffn", 128), max_position_embeddings=64, **kw,
    )
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(cfg).eval()
    with torch.no_grad():  # random non-trivial LayerNorm/bias values so parity tests see them
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def padded_batch(vocab: int, b: int = 4, s: int = 23):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    for i, n in enumerate([s, s - 7, 5, s - 1][:b]):
        mask[i, n:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, s // 2:] = 1
    return ids, mask, types


@pytest.mark.parametrize("size", [dict(hidden_size=64, layers=2, heads=4, ffn=128),
                                  dict(hidden_size=96, layers=3, heads=6, ffn=200)])
def test_random_bert_for_pretraining_parity(tmp_path, size):
    hf, path = hf_pretraining_model(tmp_path, **size)
    ours = leanbert.from_pretrained(path)
    assert sorted(ours.heads) == ["mlm", "nsp"]
    ids, mask, types = padded_batch(211)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        out = ours(ids, mask, types)
    torch.testing.assert_close(out.last_hidden_state, ref.hidden_states[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=0)


def test_masked_lm_loss_matches_transformers(tmp_path):
    hf, path = hf_pretraining_model(tmp_path)
    ours = leanbert.from_pretrained(path)
    ids, mask, types = padded_batch(211)
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    labels[0, 9] = 17
    nsp = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, next_sentence_label=nsp)
        out = ours(ids, mask, types, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-6)


def test_round_trip_leanbert_transformers_leanbert(tmp_path):
    model = leanbert.build_model({"model_type": "bert", "vocab_size": 150, "hidden_size": 48, "num_layers": 2,
                                  "num_heads": 3, "intermediate_size": 96, "heads": ["mlm", "nsp"]}).eval()
    leanbert.export_to_transformers(model, tmp_path / "hf")
    hf = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf").eval()
    back = leanbert.from_pretrained(tmp_path / "hf")
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    ids, mask, types = padded_batch(150)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = model(ids, mask, types)
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, atol=1e-5, rtol=0)


def test_export_mlm_only_loads_in_auto_model_for_masked_lm(tmp_path):
    model = leanbert.build_model({"model_type": "bert", "vocab_size": 120, "hidden_size": 32, "num_layers": 1,
                                  "num_heads": 2, "intermediate_size": 64, "heads": ["mlm"]}).eval()
    leanbert.export_to_transformers(model, tmp_path / "hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "BertForMaskedLM"
    ids, mask, _ = padded_batch(120)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).mlm_logits, hf(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=0)


def test_encoder_only_exports_as_bert_model(tmp_path):
    model = leanbert.build_model("bert-tiny", heads=[]).eval()
    leanbert.export_to_transformers(model, tmp_path / "hf")
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "BertModel"
    ids, mask, _ = padded_batch(30522)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).last_hidden_state,
                                   hf(input_ids=ids, attention_mask=mask).last_hidden_state, atol=1e-5, rtol=0)


def test_classifier_and_qa_heads_round_trip(tmp_path):
    for heads, auto in ((["classifier"], "AutoModelForSequenceClassification"),
                        (["span_qa"], "AutoModelForQuestionAnswering")):
        model = leanbert.build_model("bert-tiny", heads=heads, num_labels=3).eval()
        leanbert.export_to_transformers(model, tmp_path / heads[0])
        hf = getattr(transformers, auto).from_pretrained(tmp_path / heads[0]).eval()
        ids, mask, _ = padded_batch(30522)
        with torch.no_grad():
            ours, ref = model(ids, mask), hf(input_ids=ids, attention_mask=mask)
        if heads == ["classifier"]:
            torch.testing.assert_close(ours.logits, ref.logits, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(ours.start_logits, ref.start_logits, atol=1e-5, rtol=0)
            torch.testing.assert_close(ours.end_logits, ref.end_logits, atol=1e-5, rtol=0)


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage.",
    "Token dropping speeds up BERT pretraining by skipping unimportant tokens in the middle layers.",
    "Paris is the capital of France.",
]


def test_real_pretrained_minilm_parity(minilm_dir):
    from leanbert.data.tokenizer import tokenizer_from_vocab

    tok = tokenizer_from_vocab(minilm_dir / "vocab.txt", lowercase=True)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    assert mask.sum(1).tolist() != [ids.shape[1]] * 4  # the batch really is padded
    ours = leanbert.from_pretrained(minilm_dir)
    assert ours.heads == [] and ours.num_parameters() == 22_713_216
    hf = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        a = ours(ids, mask).last_hidden_state
        b = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    # Real weights, 6 layers: leanbert multiplies fp32 matrices with oneDNN, transformers with
    # MKL; summation order alone moves single elements by ~2e-5 (transformers' own integration
    # tests allow 1e-4). The mean difference shows there is nothing more.
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert (a - b).abs().mean() < 1e-6
    # And our tokenization equals transformers' tokenizer for the same vocab.
    ref_ids = transformers.BertTokenizerFast(str(minilm_dir / "vocab.txt"))(SENTENCES, padding=True)["input_ids"]
    assert ids.tolist() == ref_ids


def test_minilm_has_no_mlm_head_and_says_so(minilm_dir):
    from leanbert.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no weights for the 'mlm' head"):
        leanbert.from_pretrained(minilm_dir, heads=["mlm"])
