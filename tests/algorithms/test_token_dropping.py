"""Token dropping (Hou et al. 2022): routing, importance scores, schedule and state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import leanbert
from leanbert.algorithms.token_dropping import (
    TokenDropping,
    TokenDroppingConfig,
    TokenScores,
    keep_count,
    keep_tokens,
    prediction_mask,
)
from leanbert.config import validate
from leanbert.errors import CheckpointError, ConfigError

V = 120  # tiny vocabulary; ids 0..4 play the special tokens
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = {"allow_ids": [UNK, CLS, SEP, MASK], "deny_ids": [PAD]}


def tiny(num_layers: int = 4, **kw):
    cfg = dict(vocab_size=V, hidden_size=32, num_layers=num_layers, num_heads=4, intermediate_size=64,
               max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
    cfg.update(kw)
    return leanbert.build_model({"model_type": "bert", **cfg}).eval()


def dropping(model, **kw) -> TokenDropping:
    return TokenDropping({"method": "token", **SPECIAL, **kw}, model.config)


def padded_batch(b: int = 3, s: int = 12):
    """[CLS] w.. [SEP] [PAD]..; row 1 has 8 real tokens, row 2 has 5."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, V, (b, s), generator=g)
    lengths = [s, 8, 5][:b]
    mask = torch.zeros(b, s, dtype=torch.long)
    for r, n in enumerate(lengths):
        mask[r, :n] = 1
        ids[r, 0], ids[r, n - 1] = CLS, SEP
    ids[mask == 0] = PAD
    return ids, mask


def capture_layer_inputs(model):
    """Record the hidden states each layer is called with."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        layer.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0]))
        for i, layer in enumerate(model.encoder.layers)
    ]
    return seen, hooks


# ---------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------


def test_default_layers_follow_the_reference():
    td = dropping(tiny(num_layers=12))
    assert (td.start, td.end) == (5, 11)


def test_split_layer_output_equals_the_definition():
    model = tiny()
    ids, mask = padded_batch()
    td = dropping(model, keep=6, drop_start_layer=1, drop_end_layer=3)
    router = td.router_for({"input_ids": ids, "attention_mask": mask}, step=0)
    out = model(ids, mask, router=router, output_hidden_states=True)

    # Written straight from Sec. 3.1: queries from the kept tokens, keys/values from all.
    x = out.hidden_states[0]  # input of the split layer (output of layer 0) [B, S, H]
    kept = router.kept_index
    layer = model.encoder.layers[1]
    att, ffn = layer.attention, layer.ffn
    h, heads = 32, 4
    d = h // heads
    w, b = att.qkv.weight, att.qkv.bias
    xk = torch.stack([x[r, kept[r]] for r in range(x.shape[0])])  # [B, k, H]
    q = xk @ w[:h].T + b[:h]
    k = x @ w[h:2 * h].T + b[h:2 * h]
    v = x @ w[2 * h:].T + b[2 * h:]

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    ctx = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(xk.shape)
    a = F.layer_norm(xk + ctx @ att.out.weight.T + att.out.bias, (h,), att.norm.weight, att.norm.bias, 1e-12)
    y = a + F.gelu(a @ ffn.up.weight.T + ffn.up.bias) @ ffn.down.weight.T + ffn.down.bias
    expected = F.layer_norm(y, (h,), ffn.norm.weight, ffn.norm.bias, 1e-12)

    assert out.hidden_states[1].shape == (3, 6, h)
    torch.testing.assert_close(out.hidden_states[1], expected, atol=1e-5, rtol=1e-5)


def test_middle_layers_run_on_kept_tokens_with_their_key_mask():
    model = tiny()
    ids, mask = padded_batch()
    td = dropping(model, keep=10, drop_start_layer=1, drop_end_layer=3)  # row 2: 5 real + 5 pads kept
    router = td.router_for({"input_ids": ids, "attention_mask": mask}, step=0)
    out = model(ids, mask, router=router, output_hidden_states=True)
    kept_mask = torch.gather(mask, 1, router.kept_index)
    expected = model.encoder.layers[2](out.hidden_states[1], kept_mask.bool()[:, None, None, :]).hidden
    torch.testing.assert_close(out.hidden_states[2], expected)
    assert kept_mask[2].tolist() == [1] * 5 + [0] * 5  # padding chosen last, masked as keys


@pytest.mark.parametrize("with_mask", [True, False])
def test_dropped_tokens_are_untouched_between_drop_and_restore(with_mask):
    model = tiny()
    ids, mask = padded_batch()
    mask = mask if with_mask else None
    td = dropping(model, keep=4, drop_start_layer=1, drop_end_layer=3)
    router = td.router_for({"input_ids": ids, "attention_mask": mask}, step=0)
    seen, hooks = capture_layer_inputs(model)
    out = model(ids, mask, router=router, output_hidden_states=True)
    for hk in hooks:
        hk.remove()

    restored = seen[3]  # what the last layer runs on
    assert restored.shape == (3, 12, 32)
    for r in range(3):
        kept = set(router.kept_index[r].tolist())
        dropped = [p for p in range(12) if p not in kept]
        assert torch.equal(restored[r, dropped], out.hidden_states[0][r, dropped])  # as when dropped
        assert torch.equal(restored[r, sorted(kept)], out.hidden_states[2][r])  # kept: latest state


def test_keeping_all_tokens_gives_plain_bert():
    model = tiny(heads=["mlm", "nsp"])
    ids, mask = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 2], labels[2, 1] = 11, 12, 13
    td = dropping(model, keep=1.0)
    router = td.router_for({"input_ids": ids, "attention_mask": mask, "labels": labels}, step=0)
    assert router.kept_index.tolist() == [list(range(12))] * 3
    plain = model(ids, mask, labels=labels)
    routed = model(ids, mask, labels=labels, router=router)
    torch.testing.assert_close(routed.last_hidden_state, plain.last_hidden_state, atol=1e-6, rtol=0)
    torch.testing.assert_close(routed.loss, plain.loss, atol=1e-6, rtol=0)


def test_padding_fills_up_k_last_and_changes_nothing_for_real_tokens():
    model = tiny()
    ids = torch.tensor([[CLS, 20, 21, 22, 23, SEP, PAD, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    td = dropping(model, keep=8, drop_start_layer=1, drop_end_layer=3)
    router = td.router_for({"input_ids": ids, "attention_mask": mask}, step=0)
    assert router.kept_index.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]
    routed = model(ids, mask, router=router).last_hidden_state[:, :6]
    alone = model(ids[:, :6]).last_hidden_state
    torch.testing.assert_close(routed, alone, atol=1e-5, rtol=1e-5)


def test_drop_end_after_the_last_layer_restores_in_finish():
    model = tiny()
    ids, mask = padded_batch()
    td = dropping(model, keep=4, drop_start_layer=2, drop_end_layer=4)
    router = td.router_for({"input_ids": ids, "attention_mask": mask}, step=0)
    out = model(ids, mask, router=router, output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 12, 32)
    for r in range(3):
        kept = router.kept_index[r].tolist()
        dropped = [p for p in range(12) if p not in kept]
        assert torch.equal(out.last_hidden_state[r, kept], out.hidden_states[3][r])
        assert torch.equal(out.last_hidden_state[r, dropped], out.hidden_states[1][r, dropped])


def test_routing_works_for_mobilebert_too():
    model = leanbert.build_model("mobilebert-test", vocab_size=V, num_layers=4).eval()
    ids, mask = padded_batch()
    td = dropping(model, keep=1.0)
    everything = td.router_for({"input_ids": ids, "attention_mask": mask}, step=0)
    plain = model(ids, mask).last_hidden_state
    torch.testing.assert_close(model(ids, mask, router=everything).last_hidden_state, plain, atol=1e-5, rtol=1e-5)
    td = dropping(model, keep=4)
    router = td.router_for({"input_ids": ids, "attention_mask": mask}, step=0)
    out = model(ids, mask, router=router, output_hidden_states=True)
    assert out.hidden_states[1].shape[1] == 4 and out.last_hidden_state.shape == plain.shape


def test_training_step_backpropagates_through_the_routing():
    model = tiny().train()
    ids, mask = padded_batch()
    positions = torch.tensor([[2, 5], [3, 0], [1, 0]])
    labels = torch.tensor([[30, 31], [32, -100], [33, -100]])
    td = dropping(model, keep=4)
    router = td.router_for({"input_ids": ids, "attention_mask": mask, "labels": labels,
                            "mlm_positions": positions}, step=0)
    out = model(ids, mask, labels=labels, mlm_positions=positions, router=router)
    out.loss.backward()
    grads = [p.grad for p in model.encoder.layers.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_kept_tokens_are_the_top_k_in_position_order_ties_to_lower_position():
    priority = torch.tensor([[1.0, 5.0, 3.0, 5.0, 0.0, 2.0], [7.0, 7.0, 7.0, 7.0, 7.0, 7.0]])
    assert keep_tokens(priority, 3).tolist() == [[1, 2, 3], [0, 1, 2]]


def test_keep_count_from_a_count_or_a_fraction():
    assert keep_count(256, 512) == 256
    assert keep_count(0.5, 512) == 256
    assert keep_count(0.5, 127) == 64  # half up
    assert keep_count(0.001, 100) == 1
    with pytest.raises(ConfigError, match="larger than the sequence length 128"):
        keep_count(256, 128)


def test_prediction_mask_ignores_padded_slots_pointing_at_a_real_prediction():
    labels = torch.tensor([[7, 8, -100]])
    positions = torch.tensor([[0, 3, 0]])  # the padded slot also says position 0
    assert prediction_mask(5, labels, positions).tolist() == [[True, False, False, True, False]]


# ---------------------------------------------------------------------------------------
# Always-keep and always-drop rules
# ---------------------------------------------------------------------------------------


def _route(td: TokenDropping, ids, mask=None, labels=None, positions=None) -> list[list[int]]:
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "mlm_positions": positions}
    return td.router_for(batch, step=0).kept_index.tolist()


def test_allow_list_is_kept_even_after_its_scores_eroded():
    td = dropping(tiny(), keep=3)
    td.scores.scores[[CLS, SEP]] = -50.0  # what the reference's moving average would do
    ids = torch.tensor([[CLS, 20, 21, 22, SEP]])
    assert _route(td, ids) == [[0, 1, 4]]


def test_deny_list_is_dropped_even_with_a_high_score():
    td = dropping(tiny(), keep=2, deny_ids=[PAD, 50])
    td.scores.scores[50] = 1e6
    ids = torch.tensor([[20, 50, 21, 22]])
    td.scores.scores[[20, 21, 22]] = torch.tensor([1.0, 3.0, 2.0])
    assert _route(td, ids) == [[2, 3]]


def test_padding_is_never_kept_while_real_tokens_are_left():
    td = dropping(tiny(), keep=3)
    td.scores.scores[PAD] = 1e6
    ids = torch.tensor([[CLS, 20, 21, 22, PAD, PAD]])
    mask = (ids != PAD).long()
    kept = _route(td, ids, mask)
    assert 4 not in kept[0] and 5 not in kept[0]


def test_kept_tokens_are_chosen_by_score_looked_up_by_input_id():
    td = dropping(tiny(), keep=3)
    td.scores.scores[[20, 21, 22, 23]] = torch.tensor([1.0, 9.0, 2.0, 8.0])
    ids = torch.tensor([[CLS, 20, 21, 22, 23]])
    assert _route(td, ids) == [[0, 2, 4]]


def test_reference_routing_keeps_mask_inputs_and_lets_other_predictions_compete():
    # SPEC Sec. 1 / the reference: [MASK] inputs are kept through the allow list; a prediction
    # position whose input was replaced at random (3) or left unchanged (4) competes on score.
    td = dropping(tiny(), keep=3)
    assert td.config.keep_masked_positions is False
    td.scores.scores[[20, 21, 22, 23]] = torch.tensor([1.0, 9.0, 1.0, 2.0])
    ids = torch.tensor([[CLS, 20, MASK, 22, 23, 21]])
    labels = torch.tensor([[-100, -100, 41, 40, 23, -100]])
    assert _route(td, ids, labels=labels) == [[0, 2, 5]]


def test_keep_masked_positions_keeps_every_prediction_position():
    td = dropping(tiny(), keep=3, keep_masked_positions=True)
    td.scores.scores[[20, 21, 22, 23]] = torch.tensor([9.0, 9.0, 1.0, 9.0])
    ids = torch.tensor([[CLS, 20, 21, 22, 23]])  # position 3 (id 22) was randomly replaced
    positions, labels = torch.tensor([[3, 0]]), torch.tensor([[40, -100]])
    assert _route(td, ids, labels=labels, positions=positions) == [[0, 1, 3]]
    assert _route(dropping(tiny(), keep=3), ids, labels=labels, positions=positions) != [[0, 1, 3]]


def test_random_dropping_keeps_special_tokens_and_chooses_the_rest_at_random():
    td = TokenDropping({"method": "random", "keep": 4, **SPECIAL}, tiny().config)
    ids = torch.tensor([[CLS] + list(range(20, 30)) + [SEP, PAD, PAD]] * 2)
    mask = (ids != PAD).long()
    batch = {"input_ids": ids, "attention_mask": mask}
    a = td.router_for(batch, 0, generator=torch.Generator().manual_seed(0)).kept_index
    b = td.router_for(batch, 0, generator=torch.Generator().manual_seed(0)).kept_index
    c = td.router_for(batch, 0, generator=torch.Generator().manual_seed(1)).kept_index
    assert torch.equal(a, b) and not torch.equal(a, c)
    for row in a.tolist():
        assert row[0] == 0 and row[-1] == 11 and len(set(row)) == 4  # [CLS], [SEP] always kept


# ---------------------------------------------------------------------------------------
# Importance scores
# ---------------------------------------------------------------------------------------


def test_score_update_averages_duplicate_ids_and_skips_padding():
    scores = TokenScores(V, init=10.0, beta=0.9)
    labels = torch.tensor([30, 31, 30, -100, 32, 30])
    losses = torch.tensor([1.0, 2.0, 3.0, 99.0, 4.0, 5.0])
    scores.update(labels, losses)
    expected = torch.full((V,), 10.0)
    expected[30] = 0.9 * 10 + 0.1 * (1 + 3 + 5) / 3
    expected[31] = 0.9 * 10 + 0.1 * 2
    expected[32] = 0.9 * 10 + 0.1 * 4
    torch.testing.assert_close(scores.scores, expected)
    scores.update(torch.tensor([30]), torch.tensor([0.0]))
    assert scores.scores[30].item() == pytest.approx(0.9 * expected[30].item())


def test_non_finite_losses_do_not_enter_the_table():
    scores = TokenScores(V, init=10.0, beta=0.5)
    scores.update(torch.tensor([30, 30]), torch.tensor([float("nan"), 2.0]))
    assert scores.scores[30].item() == pytest.approx(6.0)


def test_update_from_model_output_uses_label_ids_not_inputs():
    model = tiny()
    td = dropping(model, beta=0.5)
    ids = torch.tensor([[CLS, MASK, 21, MASK, SEP]])
    positions = torch.tensor([[1, 3, 0]])
    labels = torch.tensor([[40, 40, -100]])  # two occurrences of id 40, one padded slot
    out = model(ids, labels=labels, mlm_positions=positions)
    td.update_scores(out)
    mean = out.mlm_token_loss[:2].mean().item()
    assert td.scores.scores[40].item() == pytest.approx(0.5 * 10 + 0.5 * mean, rel=1e-6)
    assert td.scores.scores[MASK].item() == 10.0 and td.scores.scores[PAD].item() == 10.0


def test_scores_are_identical_across_ranks_after_the_reduced_update():
    # Two ranks, different batches: each adds the other's per-id sums and counts (what
    # torch.distributed.all_reduce does), so both apply the same update as one big batch.
    batches = [(torch.tensor([30, 31]), torch.tensor([1.0, 2.0])),
               (torch.tensor([30, 32, -100]), torch.tensor([5.0, 4.0, 7.0]))]
    ranks = [TokenScores(V, beta=0.9) for _ in batches]
    for s, (ids, loss) in zip(ranks, batches, strict=True):
        s.record(ids, loss)
    stats = [s._stats.clone() for s in ranks]
    for s in ranks:
        s._all_reduce = lambda t: stats[0] + stats[1]
        s.step()
    single = TokenScores(V, beta=0.9)
    single.update(torch.tensor([30, 31, 30, 32]), torch.tensor([1.0, 2.0, 5.0, 4.0]))
    assert torch.equal(ranks[0].scores, ranks[1].scores)
    torch.testing.assert_close(ranks[0].scores, single.scores)


def _rank_update(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    scores = TokenScores(V, beta=0.9)
    ids = [torch.tensor([30, 31]), torch.tensor([30, 32, -100])][rank]
    losses = [torch.tensor([1.0, 2.0]), torch.tensor([5.0, 4.0, 7.0])][rank]
    scores.update(ids, losses)
    save_file({"scores": scores.scores}, f"{out_dir}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_scores_stay_identical_across_real_gloo_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_rank_update, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors"))["scores"] for r in range(2))
    single = TokenScores(V, beta=0.9)
    single.update(torch.tensor([30, 31, 30, 32]), torch.tensor([1.0, 2.0, 5.0, 4.0]))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, single.scores)


# ---------------------------------------------------------------------------------------
# Schedule, evaluation, checkpoints, cost
# ---------------------------------------------------------------------------------------


def test_method_none_and_the_final_phase_do_not_drop():
    model = tiny()
    ids, mask = padded_batch()
    batch = {"input_ids": ids, "attention_mask": mask}
    assert TokenDropping({"method": "none"}, model.config).router_for(batch, 0) is None
    td = TokenDropping({"method": "token", "final_full_phase": 0.25, **SPECIAL}, model.config, total_steps=8)
    assert [td.router_for(batch, s) is not None for s in range(8)] == [True] * 6 + [False] * 2
    td = TokenDropping({"method": "token", "final_full_phase": 3, **SPECIAL}, model.config, total_steps=8)
    assert [td.dropping_at(s) for s in range(8)] == [True] * 5 + [False] * 3


def test_method_none_accepts_any_model_and_saves_no_state():
    one_layer = leanbert.build_model({"model_type": "bert", "vocab_size": 50, "hidden_size": 8,
                                      "num_layers": 1, "num_heads": 2, "intermediate_size": 16})
    td = TokenDropping(None, one_layer.config)  # default allow ids (100..103) exceed this vocab
    assert not td.enabled and td.state_dict() == {}
    td.load_state_dict({})


def test_evaluation_does_not_drop_unless_asked():
    model = tiny()
    ids, mask = padded_batch()
    batch = {"input_ids": ids, "attention_mask": mask}
    assert dropping(model).router_for(batch, None, training=False) is None
    assert dropping(model, evaluate_with_dropping=True).router_for(batch, None, training=False) is not None


def test_resume_restores_the_scores(tmp_path):
    model = tiny()
    td = dropping(model)
    for i in range(3):
        td.scores.update(torch.tensor([30 + i, 40]), torch.tensor([1.0 + i, 2.0]))
    save_file(td.state_dict(), str(tmp_path / "extra.safetensors"))

    resumed = dropping(model)
    resumed.load_state_dict({"rng.cpu": torch.zeros(3), **load_file(str(tmp_path / "extra.safetensors"))})
    assert torch.equal(resumed.scores.scores, td.scores.scores)
    assert resumed.scores.num_updates == 3
    ids = torch.tensor([[CLS, 30, 31, 32, 40, 50, SEP]])
    assert _route(resumed, ids) == _route(td, ids)


def test_resume_rejects_missing_or_mismatched_scores():
    model = tiny()
    with pytest.raises(CheckpointError, match="no token-dropping scores"):
        dropping(model).load_state_dict({})
    with pytest.raises(CheckpointError, match="shape"):
        dropping(model).load_state_dict({"token_dropping.scores": torch.zeros(7)})


def test_the_model_gains_no_parameters_or_buffers():
    model = tiny()
    before = set(model.state_dict())
    td = dropping(model)
    ids, mask = padded_batch()
    model(ids, mask, router=td.router_for({"input_ids": ids, "attention_mask": mask}, 0))
    assert set(model.state_dict()) == before


def test_layer_rows_change_only_while_dropping_is_active():
    model = tiny(num_layers=12)
    td = TokenDropping({"method": "token", "keep": 32, "final_full_phase": 1, **SPECIAL}, model.config, total_steps=10)
    assert td.layer_rows(64, step=0) == [(64, 64)] * 5 + [(32, 64)] + [(32, 32)] * 5 + [(64, 64)]
    assert td.layer_rows(64, step=9) is None  # the final full phase
    assert TokenDropping({"method": "none"}, model.config).layer_rows(64, step=0) is None


def test_special_ids_come_from_the_tokenizer_unless_set():
    special = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    cfg = TokenDroppingConfig(method="token").with_special_ids(special)
    assert (cfg.allow_ids, cfg.deny_ids) == ([1, 2, 3, 4], [0])
    cfg = TokenDroppingConfig(method="token", allow_ids=[2, 3]).with_special_ids(special)
    assert (cfg.allow_ids, cfg.deny_ids) == ([2, 3], [0])


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"keep": 0}, "count must be >= 1"),
        ({"keep": 1.5}, "fraction of tokens must be in"),
        ({"drop_start_layer": 3, "drop_end_layer": 3}, "must be smaller than drop_end_layer"),
        ({"allow_ids": [0], "deny_ids": [0]}, "in both allow_ids and deny_ids"),
        ({"methd": "token"}, "unknown key 'methd'"),
    ],
)
def test_config_errors_name_the_problem(cfg, message):
    with pytest.raises(ConfigError, match=message):
        validate(TokenDroppingConfig, cfg, "token_dropping")


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"drop_start_layer": 4}, "drop_start_layer 4 is out of range for a 4-layer model"),
        ({"drop_end_layer": 5}, "drop_end_layer 5 is out of range"),
        ({"drop_start_layer": 3, "drop_end_layer": None}, r"must be smaller than drop_end_layer \(3\)"),
        ({"allow_ids": [500]}, "outside the vocabulary"),
    ],
)
def test_model_dependent_errors_name_the_problem(cfg, message):
    with pytest.raises(ConfigError, match=message):
        TokenDropping({"method": "token", **cfg}, tiny().config)
