"""The MobileBERT family: configs, shapes, parameter counts, per-layer outputs, token
dropping's split layer and leanbert's own checkpoint format (teacher too)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import leanbert
from leanbert.errors import ConfigError
from leanbert.models import model_preset
from leanbert.models.mobilebert import NoNorm

VOCAB = 97


def tiny(preset: str = "mobilebert-test", **kw):
    cfg = {"vocab_size": VOCAB, "max_position_embeddings": 64, "attention_dropout": 0.0, "hidden_dropout": 0.0}
    cfg.update(kw)
    model = leanbert.build_model(preset, **cfg).eval()
    with torch.no_grad():  # non-trivial NoNorm / LayerNorm parameters, so that tests see them
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm.bias")):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def batch(b=3, s=12):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    return ids, mask


ARCHITECTURES = ["mobilebert-test", "mobilebert-tiny-test", "ib-bert-test"]


# --- configuration -------------------------------------------------------------------


def test_bottleneck_not_divisible_by_heads_is_rejected():
    with pytest.raises(ConfigError, match="intra_bottleneck_size 130 is not divisible by num_heads 4"):
        model_preset("mobilebert", ["intra_bottleneck_size=130"])


def test_bottleneck_attention_with_shared_bottleneck_is_rejected():
    with pytest.raises(ConfigError, match="set key_query_shared_bottleneck: false"):
        model_preset("mobilebert", ["use_bottleneck_attention=true"])


def test_unknown_normalization_type_names_the_choices():
    with pytest.raises(ConfigError, match=r"normalization_type.*'no_norm' or 'layer_norm'"):
        model_preset("mobilebert", ["normalization_type=batch_norm"])


def test_embedding_wider_than_hidden_is_rejected_with_mlm_head():
    with pytest.raises(ConfigError, match="embedding_size 1024 must not exceed hidden_size 512"):
        model_preset("mobilebert", ["embedding_size=1024"])


def test_zero_feedforward_networks_is_rejected():
    with pytest.raises(ConfigError, match="key 'num_feedforward_networks'"):
        model_preset("mobilebert", ["num_feedforward_networks=0"])


def test_typo_in_mobilebert_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'intra_bottleneck_size'"):
        model_preset("mobilebert", ["intra_botleneck_size=64"])


# --- parameter counts (full presets, on the meta device) -------------------------------


def count(preset: str, **overrides) -> int:
    with torch.device("meta"):
        return leanbert.build_model(preset, **overrides).num_parameters()


def test_mobilebert_encoder_has_paper_size():
    # Authors' config (no pooler): 24.58 M; paper Table 1 reports 25.3 M.
    n = count("mobilebert", heads=[])
    assert n == 24_581_888
    assert abs(n / 25.3e6 - 1) < 0.03


def test_mobilebert_tiny_encoder_has_paper_size():
    # Authors' config (no pooler): 15.49 M; paper Table 1 reports 15.1 M.
    n = count("mobilebert-tiny", heads=[])
    assert n == 15_485_696
    assert abs(n / 15.1e6 - 1) < 0.03


@pytest.mark.parametrize("preset,heads,expected", [
    ("mobilebert", [], 24_844_544),             # MobileBertModel, default config
    ("mobilebert-tiny", [], 15_748_352),        # the TINY-shaped MobileBertModel
    ("mobilebert", ["mlm", "nsp"], 36_860_220),  # MobileBertForPreTraining
])
def test_counts_match_transformers_with_its_pooler(preset, heads, expected):
    assert count(preset, heads=heads, use_pooler=True) == expected


def test_ib_bert_large_teacher_has_paper_size():
    n = count("ib-bert-large", heads=[], use_pooler=True)
    assert n == 294_467_840  # SPEC: about 294.5 M
    with torch.device("meta"):
        model = leanbert.build_model("ib-bert-large")
    layer = model.encoder.layers[0]
    assert layer.attention.query_key.in_features == 512  # Q/K/V from the 512-wide block input
    assert layer.attention.head_dim == 256 and len(layer.ffns) == 1 and layer.ffns[0].up.out_features == 4096


def test_info_cli_prints_mobilebert_counts(capsys):
    from leanbert.cli import main

    assert main(["info", "mobilebert", "--heads", ""]) == 0
    out = capsys.readouterr().out
    assert "24,581,888" in out and "4,368,128" in out  # encoder, embeddings


# --- shapes and heads -----------------------------------------------------------------


@pytest.mark.parametrize("preset", ARCHITECTURES)
def test_forward_shapes(preset):
    model = tiny(preset)
    ids, mask = batch()
    out = model(ids, mask)
    assert out.last_hidden_state.shape == (3, 12, 64)
    assert out.mlm_logits.shape == (3, 12, VOCAB)
    assert out.nsp_logits.shape == (3, 2)


def test_trigram_embedding_concatenates_next_current_previous():
    model = tiny()
    emb = model.encoder.embeddings
    ids = torch.tensor([[11, 12, 13]])
    e = emb.word(ids)[0]
    zero = torch.zeros(16)
    trigram = torch.stack([torch.cat([e[1], e[0], zero]), torch.cat([e[2], e[1], e[0]]), torch.cat([zero, e[2], e[1]])])
    x = emb.projection(trigram) + emb.position.weight[:3] + emb.token_type.weight[0]
    expected = x * emb.norm.weight + emb.norm.bias
    torch.testing.assert_close(emb(ids)[0], expected, atol=1e-6, rtol=1e-6)


def test_nonorm_starts_as_identity_and_scales_elementwise():
    norm = NoNorm(4)
    x = torch.randn(2, 4)
    torch.testing.assert_close(norm(x), x)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        norm.bias.fill_(0.5)
    torch.testing.assert_close(norm(x, x), 2 * x * norm.weight + 0.5)


def test_mlm_logits_use_word_embeddings_then_extra_matrix():
    model = tiny()
    ids, mask = batch()
    out = model(ids, mask)
    head = model.mlm
    h = head.norm(F.relu(head.dense(out.last_hidden_state)))
    E, X = model.encoder.embeddings.word.weight, head.decoder_extra
    assert X.shape == (64 - 16, VOCAB)
    expected = h[..., :16] @ E.T + h[..., 16:] @ X + head.bias
    torch.testing.assert_close(out.mlm_logits, expected, atol=1e-5, rtol=1e-5)


def test_mlm_loss_on_compact_positions_equals_full_labels():
    model = tiny()
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 1], labels[2, 4] = 7, 9, 11
    positions = torch.tensor([[3], [1], [4]])
    compact = torch.tensor([[7], [9], [11]])
    torch.testing.assert_close(model(ids, mask, labels=labels).loss,
                               model(ids, mask, labels=compact, mlm_positions=positions).loss)


def test_nsp_uses_cls_state_without_pooler():
    model = tiny()
    assert model.encoder.pooler is None
    ids, mask = batch()
    out = model(ids, mask)
    torch.testing.assert_close(out.nsp_logits, model.nsp(out.last_hidden_state[:, 0]))


@pytest.mark.parametrize("preset", ARCHITECTURES)
def test_padding_does_not_change_real_tokens(preset):
    model = tiny(preset)
    ids, mask = batch()
    short = model(ids[2:3, :5]).last_hidden_state
    padded = model(ids[2:3], mask[2:3]).last_hidden_state[:, :5]
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


# --- knowledge-transfer outputs --------------------------------------------------------


def test_per_layer_outputs_and_attention_on_request():
    model = tiny()
    ids, mask = batch()
    out = model(ids, mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 2 and out.hidden_states[-1] is out.last_hidden_state
    assert out.hidden_states[0].shape == (3, 12, 64)  # block outputs at the 512-wide (here 64) width
    assert out.extras["embedding_output"].shape == (3, 12, 64)
    probs, scores = out.attention_probs[0], out.attention_scores[0]
    assert probs.shape == scores.shape == (3, 4, 12, 12)
    torch.testing.assert_close(probs, scores.softmax(-1))
    assert probs[2, :, :, 5:].abs().max() == 0  # padded keys get no attention


def test_requested_outputs_do_not_change_the_result():
    model = tiny()
    ids, mask = batch()
    a = model(ids, mask, output_hidden_states=True, output_attentions=True)
    b = model(ids, mask)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert b.hidden_states is None and b.attention_probs is None and b.attention_scores is None


def test_hidden_states_are_the_block_outputs():
    model = tiny()
    ids, mask = batch()
    out = model(ids, mask, output_hidden_states=True)
    key_mask = mask.bool()[:, None, None, :]
    first = model.encoder.layers[0](out.extras["embedding_output"], key_mask).hidden
    torch.testing.assert_close(out.hidden_states[0], first)


# --- token dropping ------------------------------------------------------------------


@pytest.mark.parametrize("preset", ARCHITECTURES)
def test_split_layer_queries_subset_equals_full_layer_rows(preset):
    model = tiny(preset)
    ids, mask = batch()
    x = model.encoder.embeddings(ids)
    key_mask = mask.bool()[:, None, None, :]
    layer = model.encoder.layers[0]
    full = layer(x, key_mask).hidden
    idx = torch.tensor([[0, 2, 5], [1, 3, 4], [0, 1, 2]])
    part = layer(x, key_mask, query_index=idx).hidden
    torch.testing.assert_close(part, torch.gather(full, 1, idx[..., None].expand(-1, -1, 64)), atol=1e-6, rtol=1e-6)


def test_training_step_with_token_dropping_router():
    from leanbert.algorithms.token_dropping import TokenDropping

    model = tiny(num_layers=4).train()
    td = TokenDropping({"method": "random", "keep": 6, "allow_ids": [], "deny_ids": [0]}, model.config)
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[:, 1] = 9
    router = td.router_for({"input_ids": ids, "attention_mask": mask, "labels": labels}, step=0,
                           generator=torch.Generator().manual_seed(0))
    assert router is not None and router.num_kept == 6
    out = model(ids, mask, labels=labels, router=router)
    assert out.last_hidden_state.shape == (3, 12, 64)  # dropped tokens came back
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(out.loss) and all(torch.isfinite(g).all() for g in grads)
    assert model.encoder.layers[1].ffns[0].up.weight.grad.abs().sum() > 0


# --- leanbert's own format (the teacher included) --------------------------------------


@pytest.mark.parametrize("preset", ["ib-bert-test", "mobilebert-tiny-test"])
def test_save_load_round_trip_is_exact(tmp_path, preset):
    model = tiny(preset)
    leanbert.save_pretrained(model, tmp_path / "ckpt")
    back = leanbert.from_pretrained(tmp_path / "ckpt")
    assert back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask).mlm_logits, model(ids, mask).mlm_logits, atol=0, rtol=0)


def test_pretrained_student_fine_tunes_with_a_new_classifier(tmp_path):
    leanbert.save_pretrained(tiny(), tmp_path / "pretrained")
    model = leanbert.from_pretrained(tmp_path / "pretrained", heads=["classifier"], new_heads=["classifier"],
                                     num_labels=3).train()
    assert model.mlm is None and model.classifier.classifier.in_features == 64
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids, mask = batch()
    labels = torch.tensor([0, 2, 1])
    losses = []
    for _ in range(5):
        out = model(ids, mask, task_labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert out.logits.shape == (3, 3) and losses[-1] < losses[0]


def test_teacher_cannot_be_exported_to_transformers(tmp_path):
    from leanbert.errors import CheckpointError

    with pytest.raises(CheckpointError, match="leanbert's own format"):
        leanbert.export_to_transformers(tiny("ib-bert-test"), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# --- FLOPs and the pretraining engine ---------------------------------------------------


@pytest.mark.parametrize("preset", ARCHITECTURES)
def test_layer_flops_equal_the_counted_matrix_products(preset):
    from torch.utils.flop_counter import FlopCounterMode

    from leanbert.models.mobilebert import layer_flops

    model = tiny(preset)
    layer = model.encoder.layers[0]
    x = torch.randn(2, 12, 64)
    idx = torch.tensor([[0, 2, 5, 7, 9], [1, 3, 4, 6, 8]])
    for query_index, n_queries in ((None, 12), (idx, 5)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            layer(x, None, query_index, output_attentions=True)  # explicit attention: counted too
        assert counter.get_total_flops() == 2 * layer_flops(model.config, n_queries, 12)


def test_pretrains_with_the_engine_on_sentence_pairs(tmp_path, shared_data):
    import json

    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    text = shared_data / "pretrain" / "wikitext-2-tokens" / "wiki.valid.tokens"
    prepare(text, train_tokenizer(text, vocab_size=1500), tmp_path / "pairs",
            {"seq_length": 48, "mode": "pairs", "validation_fraction": 0.05})
    cfg = load_pretrain_config("demo", [
        "model.preset=mobilebert-test", "model.max_position_embeddings=64", "data.batch_size=8",
        "data.max_predictions=6", "train.precision=bf16", "train.max_steps=3", "eval.every=1000",
        "eval.batches=2", "log.every=1", "log.progress=false", "log.tensorboard=false"])
    res = pretrain(cfg, tmp_path / "pairs", tmp_path / "run")
    saved = json.loads((res.model_dir / "config.json").read_text())["model"]
    assert saved["model_type"] == "mobilebert" and sorted(saved["heads"]) == ["mlm", "nsp"]
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert len(train) == 3 and all(0.3 < r["nsp_loss"] < 1.2 for r in train)
    assert leanbert.from_pretrained(res.model_dir).config.model_type == "mobilebert"
