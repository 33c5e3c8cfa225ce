"""Loader: exact resume, disjoint and complete ranks, epochs, bad inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from leanbert.data.loader import ShardLoader
from leanbert.data.masking import MaskingCollator
from leanbert.errors import ConfigError, DataError


def _indices(loader):
    out = []
    for rows, _, first in loader:
        out.extend(range(first, first + len(rows)))
    return out


def test_resume_starts_exactly_at_the_next_sample(packed_dir):
    collator = MaskingCollator.from_prepared(packed_dir)
    first = ShardLoader(packed_dir, batch_size=8, collator=collator)
    batches = list(itertools.islice(first, 7))
    state = first.state_dict()
    assert state["next_index"] == 7 * 8
    resumed = ShardLoader(packed_dir, batch_size=8, collator=collator, start_index=5 * 8)
    again = list(itertools.islice(resumed, 2))
    for a, b in zip(batches[5:], again, strict=True):
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in ("input_ids", "mlm_positions", "labels"))


def test_resume_at_any_index_matches_the_uninterrupted_stream(packed_dir):
    full = ShardLoader(packed_dir, batch_size=10, prefetch=0)
    rows = np.concatenate([r for r, _, _ in itertools.islice(full, 5)])
    later = ShardLoader(packed_dir, batch_size=10, start_index=13, prefetch=0)
    assert np.array_equal(next(iter(later))[0], rows[13:23])


def test_ranks_are_disjoint_and_complete_with_a_remainder(packed_dir):
    n = ShardLoader(packed_dir, batch_size=1).num_samples
    per_rank = [_indices(ShardLoader(packed_dir, batch_size=7, rank=r, world_size=3, loop=False,
                                     drop_last=False, prefetch=0)) for r in range(3)]
    seen = sorted(itertools.chain.from_iterable(per_rank))
    assert seen == list(range(n))
    assert n % 21 != 0  # the test covers a tail that does not fill a global batch


def test_drop_last_drops_exactly_the_tail(packed_dir):
    loaders = [ShardLoader(packed_dir, batch_size=7, rank=r, world_size=3, loop=False, prefetch=0) for r in range(3)]
    n = loaders[0].num_samples
    seen = sorted(itertools.chain.from_iterable(_indices(x) for x in loaders))
    assert seen == list(range(n - n % 21)) and loaders[0].dropped == n % 21
    assert len(loaders[0]) == n // 21


def test_rank_batches_read_the_rows_of_their_indices(packed_dir):
    single = ShardLoader(packed_dir, batch_size=12, prefetch=0)
    rows = next(iter(single))[0]
    for r in range(3):
        part = next(iter(ShardLoader(packed_dir, batch_size=4, rank=r, world_size=3, prefetch=0)))[0]
        assert np.array_equal(part, rows[4 * r: 4 * r + 4])


def test_every_epoch_is_a_permutation_and_epochs_differ(packed_dir):
    loader = ShardLoader(packed_dir, batch_size=1, prefetch=0)
    n = loader.num_samples
    shard0, row0 = loader.locate(np.arange(n))
    shard1, row1 = loader.locate(np.arange(n, 2 * n))
    key0, key1 = shard0 * 10**6 + row0, shard1 * 10**6 + row1
    assert len(set(key0.tolist())) == n and set(key0.tolist()) == set(key1.tolist())
    assert not np.array_equal(key0, key1)


def test_looping_runs_across_the_epoch_end(packed_dir):
    n = ShardLoader(packed_dir, batch_size=1).num_samples
    loader = ShardLoader(packed_dir, batch_size=8, start_index=n - 3, prefetch=0)
    rows, _, first = next(iter(loader))
    assert first == n - 3 and rows.shape == (8, 128)


def test_pairs_loader_gives_labels(pairs_dir):
    rows, labels, _ = next(iter(ShardLoader(pairs_dir, batch_size=5, prefetch=0)))
    assert labels.shape == (5,) and set(labels.tolist()) <= {0, 1}


def test_unprepared_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="has no manifest.json"):
        ShardLoader(tmp_path, batch_size=2)


def test_unknown_split_is_a_config_error(packed_dir):
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        ShardLoader(packed_dir, "test", batch_size=2)


def test_rank_outside_world_is_a_config_error(packed_dir):
    with pytest.raises(ConfigError, match="rank must be in"):
        ShardLoader(packed_dir, batch_size=2, rank=2, world_size=2)
