"""Streams batches from prepared shards: bounded memory, exact resume, data-parallel ranks.

Sample order. The samples of a split form an endless stream, epoch after epoch. Global
sample index ``i`` is sample ``j = i mod N`` of epoch ``e = i div N`` (N samples in the
split). With ``shuffle``, epoch ``e`` visits the shards in a random order and each shard in a
random order, both drawn from (seed, e) (and the shard number): memory stays bounded by one
shard's permutation, and since ``prepare`` already shuffled the examples globally before
cutting the shards, this is as good as a global shuffle. Without ``shuffle`` the order is the
shard order.

Batches and ranks. With per-rank batch size B and W ranks, the global batch is G = B*W. The
t-th batch of a loader started at ``start_index`` covers the global samples
``[start_index + t*G, start_index + (t+1)*G)``; rank r takes the r-th block of B of them. So
ranks never overlap, nothing is skipped, and resuming from a checkpoint is exact: pass the
``next_index`` of the loader as ``start_index`` of the new one (it need not be a multiple
of G, and W may change between runs).

Remainder. With ``loop=True`` (training) there is none: batches run on across epoch ends.
With ``loop=False`` (one pass, e.g. validation) the samples from ``start_index`` to the end
of the split are served once; the last ``(N - start_index) mod G`` samples do not fill a
global batch: ``drop_last=True`` drops them (``loader.dropped`` says how many), and
``drop_last=False`` serves them in one final, smaller batch, split over the ranks as evenly
as possible in contiguous blocks (a rank may then get one sample fewer, or none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from leanbert.data.background import in_background
from leanbert.data.shards import read_manifest
from leanbert.errors import ConfigError, DataError


class ShardLoader:
    """Iterate (masked) batches of one split of a prepared directory.

    ``collator`` (e.g. :class:`~leanbert.data.masking.MaskingCollator`) is called as
    ``collator(rows, next_sentence_labels, sample_index)``; without one the loader yields
    ``(rows, labels_or_None, sample_index)`` numpy tuples.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        *,
        batch_size: int,
        collator: Any = None,
        rank: int = 0,
        world_size: int = 1,
        start_index: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        loop: bool = True,
        drop_last: bool = True,
        prefetch: int = 2,
    ):
        self.dir = Path(data_dir)
        manifest = read_manifest(self.dir)
        if split not in manifest["splits"]:
            raise ConfigError(f"unknown split '{split}'; choose one of: {', '.join(manifest['splits'])}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size) and world_size >= 1, got rank {rank}, world size {world_size}")
        if start_index < 0:
            raise ConfigError(f"start index must be >= 0, got {start_index}")
        info = manifest["splits"][split]
        self.manifest = manifest
        self.split = split
        self.shards = info["shards"]
        self.sizes = np.array([s["examples"] for s in self.shards], np.int64)
        self.num_samples = int(self.sizes.sum())
        if self.num_samples == 0:
            raise DataError(f"split '{split}' of {self.dir} has no examples; prepare more data or another split")
        if not loop and start_index > self.num_samples:
            raise ConfigError(f"start index {start_index} is past the end of split '{split}' ({self.num_samples} samples)")
        self.seq_length = int(manifest["seq_length"])
        self.batch_size = batch_size
        self.collator = collator
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.start_index = int(start_index)
        self.next_index = int(start_index)
        self.shuffle, self.seed, self.loop, self.drop_last = shuffle, seed, loop, drop_last
        self.prefetch = prefetch
        remaining = self.num_samples - self.start_index
        self.dropped = 0 if loop or not drop_last else remaining % self.global_batch
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._epoch_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- sample order -------------------------------------------------------------------

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard visiting order, start offset of each visited shard in the epoch)."""
        if epoch not in self._epoch_cache:
            n = len(self.sizes)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            starts = np.concatenate([[0], np.cumsum(self.sizes[order])[:-1]])
            self._epoch_cache = {epoch: (order, starts)}  # one epoch at a time: bounded memory
        return self._epoch_cache[epoch]

    def _within(self, epoch: int, shard: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        key = (epoch, shard)
        if key not in self._perm_cache:
            if len(self._perm_cache) >= 4:
                self._perm_cache.pop(next(iter(self._perm_cache)))
            self._perm_cache[key] = np.random.default_rng([self.seed, epoch, shard, 1]).permutation(int(self.sizes[shard]))
        return self._perm_cache[key]

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global sample indices -> (shard number, row within the shard)."""
        indices = np.asarray(indices, np.int64)
        shard = np.empty_like(indices)
        row = np.empty_like(indices)
        epochs = indices // self.num_samples
        for e in np.unique(epochs):
            sel = epochs == e
            j = indices[sel] - e * self.num_samples
            order, starts = self._epoch_order(int(e))
            k = np.searchsorted(starts, j, side="right") - 1
            s = order[k]
            local = j - starts[k]
            for sh in np.unique(s):
                m = s == sh
                perm = self._within(int(e), int(sh))
                local[m] = perm[local[m]] if perm is not None else local[m]
            shard[sel], row[sel] = s, local
        return shard, row

    def _open(self, shard: int) -> tuple[np.ndarray, np.ndarray | None]:
        if shard not in self._arrays:
            entry = self.shards[shard]
            try:
                ids = np.load(self.dir / entry["input_ids"], mmap_mode="r", allow_pickle=False)
                labels = np.load(self.dir / entry["nsp"], mmap_mode="r", allow_pickle=False) if "nsp" in entry else None
            except (OSError, ValueError) as e:
                raise DataError(f"shard {entry['input_ids']} of {self.dir} could not be read ({e}); prepare the data again") from None
            if ids.shape != (entry["examples"], self.seq_length):
                raise DataError(f"shard {entry['input_ids']} has shape {ids.shape}, the manifest says "
                                f"({entry['examples']}, {self.seq_length}); prepare the data again")
            self._arrays[shard] = (ids, labels)
        return self._arrays[shard]

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows (and next-sentence labels) of the given global sample indices, in that order."""
        shard, row = self.locate(indices)
        rows = np.empty((len(indices), self.seq_length), np.int64)
        pairs = "nsp" in self.shards[0]
        labels = np.empty(len(indices), np.int64) if pairs else None
        for sh in np.unique(shard):
            m = np.flatnonzero(shard == sh)
            ids, lab = self._open(int(sh))
            r = row[m]
            o = np.argsort(r)  # sorted reads: sequential on disk
            rows[m[o]] = ids[r[o]]
            if labels is not None:
                labels[m[o]] = lab[r[o]]
        return rows, labels

    # -- batches ------------------------------------------------------------------------

    def batch_ranges(self) -> Iterator[tuple[int, int, int]]:
        """(global batch start, this rank's first index, this rank's sample count) per batch."""
        G, B, r = self.global_batch, self.batch_size, self.rank
        t = 0
        while True:
            g0 = self.start_index + t * G
            if self.loop or g0 + G <= self.num_samples:
                yield g0, g0 + r * B, B
            else:
                tail = self.num_samples - g0
                if tail > 0 and not self.drop_last:
                    counts = [len(c) for c in np.array_split(np.arange(tail), self.world_size)]
                    if counts[r]:
                        yield g0, g0 + sum(counts[:r]), counts[r]
                return
            t += 1

    def __len__(self) -> int:
        if self.loop:
            raise TypeError("a looping loader has no length; use steps_per_epoch")
        full = (self.num_samples - self.start_index) // self.global_batch
        return full + int(not self.drop_last and (self.num_samples - self.start_index) % self.global_batch > 0)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def _make(self, first: int, count: int) -> Any:
        rows, labels = self.read(np.arange(first, first + count))
        if self.collator is None:
            return rows, labels, first
        return self.collator(rows, labels, first)

    def _produce(self) -> Iterator[tuple[int, Any]]:
        for g0, first, count in self.batch_ranges():
            yield g0, self._make(first, count)

    def __iter__(self) -> Iterator[Any]:
        self.next_index = self.start_index
        source = self._produce() if self.prefetch <= 0 else in_background(self._produce(), self.prefetch, name="leanbert-loader")
        try:
            for g0, batch in source:
                self.next_index = g0 + self.global_batch if self.loop or g0 + self.global_batch <= self.num_samples else self.num_samples
                yield batch
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint needs to resume exactly: the next global sample index."""
        return {"next_index": self.next_index, "world_size": self.world_size, "batch_size": self.batch_size}


