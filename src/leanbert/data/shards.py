"""``leanbert data prepare``: tokenise a corpus (in process, reading, tokenising and
flattening overlapped in three threads; or in worker processes) and pack fixed-length examples
into memory-mapped shards with a JSON manifest, at the speed of the tokenizer
(``benchmarks/bench_data.py`` compares it with plain ``tokenizers`` ``encode_batch``).

Two packing modes:

- ``packed`` (single segment, no next-sentence task): the token stream of consecutive
  documents, each document closed by [SEP], is cut into examples of exactly ``seq_length``
  tokens, ``[CLS] ... [SEP]``. This is RoBERTa's FULL-SENTENCES input (Liu et al. 2019,
  Sec. 4.2: inputs may cross document boundaries, with an extra separator between documents)
  and Cramming's packing (Geiping & Goldstein 2023, Sec. 4.3); no example has padding except
  the very last one of a split.
- ``pairs`` (BERT and MobileBERT): ``[CLS] A [SEP] B [SEP]`` with a sentence-level label,
  built as in BERT's ``create_pretraining_data.py`` (Devlin et al. 2019, Sec. 3.1 and A.2:
  segments of whole sentences filling the target length, a random shorter target with
  probability ``short_seq_prob``, pair truncated at random ends). ``next_sentence="nsp"``:
  half of the B segments come from a random other document, label 1 = random, 0 = actual
  next (Hugging Face's convention). ``next_sentence="sop"``: ALBERT's sentence-order
  prediction (Lan et al. 2020, Sec. 3.1): B always follows A, and half of the pairs are
  swapped, label 1 = swapped. MobileBERT pretrains with NSP (Sun et al. 2020, Sec. 4).
  Documents are blank-line blocks, and the random B comes from another block; but segments
  are built over runs of consecutive blocks of one file in the same split (at most 256), as
  paragraphs of a book or an article continue each other. With one block per BERT document,
  short paragraphs would give mostly half-empty examples and mostly "random" labels (BERT
  takes a random B whenever a segment holds one sentence).

Output directory::

    manifest.json                       written last: its presence means the shards are complete
    tokenizer/                          vocab.txt, tokenizer.json, tokenizer_config.json, ...
    train-00000.input_ids.npy           [n, seq_length] uint16 (uint32 if the vocabulary needs it)
    train-00000.nsp.npy                 [n] uint8 next-sentence labels (pairs mode only)
    validation-00000.input_ids.npy      same for the validation split
    .cache/tokens/<key>/                tokenised source files, reused by later runs

Determinism: for a given seed, corpus and tokenizer the shards are byte-identical whatever
the number of workers. The train/validation split is by document: each document goes to
validation with probability ``validation_fraction``, decided by a hash of (seed, file
checksum, document index). Examples are shuffled globally before being cut into shards.
Re-running with the same inputs skips all work; a run after a change reuses the tokenised
source files whose checksum and tokenizer did not change.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from leanbert.config import StrictConfig, validate
from leanbert.data.background import in_background
from leanbert.data.corpus import Source, file_sha256, find_sources, read_documents, split_sentences
from leanbert.data.tokenizer import (
    resolve_tokenizer,
    save_tokenizer,
    special_token_ids,
    tokenizer_hash,
    without_padding,
)
from leanbert.errors import DataError
from leanbert.io import atomic_directory, atomic_write_json, check_output_dir, remove_temporaries

FORMAT_VERSION = 1
SEGMENTER_VERSION = 1  # bump when corpus reading or sentence splitting changes the tokens
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
_CHUNK_CHARS = 1 << 20  # text per worker task
_MAX_RUN = 256  # pairs mode: consecutive blocks read as one text


class PrepareConfig(StrictConfig):
    """Everything that decides the content of the shards (and so goes into the manifest)."""

    seq_length: int = Field(128, ge=8, le=65536, description="tokens per example, [CLS] and [SEP] included")
    mode: Literal["packed", "pairs"] = "packed"
    next_sentence: Literal["nsp", "sop"] = "nsp"
    short_seq_prob: float = Field(0.1, ge=0.0, le=1.0, description="pairs: chance of a shorter target length")
    validation_fraction: float = Field(0.01, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0)
    shard_size: int = Field(65536, ge=1, description="examples per shard file")
    errors: Literal["strict", "replace"] = "strict"
    text_field: str = "text"
    hf_split: str = "train"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# --------------------------------------------------------------------------------------
# Tokenising sources (worker processes) into a per-file token cache
# --------------------------------------------------------------------------------------

_WORKER_TOKENIZER = None


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (``PR_SET_PDEATHSIG``), so
    that a killed ``data prepare`` leaves no orphaned workers behind; no-op elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def _worker_init(tokenizer_json: str) -> None:
    _die_with_parent()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    global _WORKER_TOKENIZER
    from tokenizers import Tokenizer

    _WORKER_TOKENIZER = Tokenizer.from_str(tokenizer_json)


def segment_documents(docs: Sequence[str]) -> tuple[list[str], list[int]]:
    """The sentences of ``docs`` in order, and how many each document has."""
    sentences: list[str] = []
    per_doc: list[int] = []
    for doc in docs:
        s = split_sentences(doc)
        sentences.extend(s)
        per_doc.append(len(s))
    return sentences, per_doc


# Punctuation characters tried as sentence markers (:func:`sentence_markers`).
_MARKERS = "\u00b6\u00a7\u2021\u2016\u2020"  # pilcrow, section, double dagger, double bar, dagger


def sentence_markers(tok) -> list[tuple[str, int]]:
    """``(character, id)`` pairs that let a whole document be encoded in one piece while its
    sentence boundaries stay known; empty when sentences must be encoded one by one.

    With BERT's normaliser and pre-tokeniser, tokenisation is local to the words between white
    space and punctuation, so ``encode(" \u00b6 ".join(sentences))`` is the concatenation of the
    sentences' own encodings with the pilcrow's id between them, and one piece per document
    costs about a tenth less than one per sentence. A marker must be a single token of the
    vocabulary, and absent from the chunk's text (:func:`_encode` takes the first that is)."""
    pre, norm = tok.pre_tokenizer, tok.normalizer
    if type(pre).__name__ != "BertPreTokenizer" or (norm is not None and type(norm).__name__ != "BertNormalizer"):
        return []
    b = tok.encode("b", add_special_tokens=False).ids
    out = []
    for c in _MARKERS:
        mid = tok.token_to_id(c)
        if mid is not None and tok.encode(f"a{c}b", add_special_tokens=False).ids[1:] == [mid, *b]:
            out.append((c, mid))
    return out


@dataclass
class _Encoded:
    """One chunk's encodings: one per sentence, or one per document (sentences joined by the
    marker ``marker_id``, documents without sentences left out)."""

    encodings: list
    marker_id: int | None = None


def _encode(tok, sentences: Sequence[str], per_doc: Sequence[int]) -> _Encoded:
    """One ``encode_batch`` call on a chunk (the tokenizer's own Rust threads, the GIL released;
    ``encode_batch_fast``: no character offsets)."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    if not sentences:
        return _Encoded([])
    marker = next(((c, mid) for c, mid in sentence_markers(tok) if not any(c in x for x in sentences)), None)
    if marker is not None:
        joiner = f" {marker[0]} "
        docs, k = [], 0
        for n in per_doc:
            if n:
                docs.append(joiner.join(sentences[k:k + n]))
                k += n
        return _Encoded(encode(docs, add_special_tokens=False), marker[1])
    return _Encoded(encode(sentences, add_special_tokens=False))


def flatten_encodings(encoded: _Encoded, per_doc: Sequence[int], tok=None,
                      sentences: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, tokens per sentence and sentences per document of a chunk's encodings without
    a Python loop per token: ``len(encoding)`` needs no list, and the ids stream through
    ``itertools.chain`` into one numpy array; with a sentence marker the boundaries are where
    its id is (a document end counts as one)."""
    encs = encoded.encodings
    if encoded.marker_id is None:
        lengths = np.fromiter(map(len, encs), dtype=np.int32, count=len(encs))
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.uint32,
                          count=int(lengths.sum()))
    else:
        mid = encoded.marker_id
        end = (mid,)
        total = sum(map(len, encs)) + len(encs)
        marked = np.fromiter(itertools.chain.from_iterable(x for e in encs for x in (e.ids, end)), dtype=np.uint32,
                             count=total)
        is_marker = marked == mid
        bounds = np.flatnonzero(is_marker)
        if len(bounds) != sum(per_doc):  # cannot happen with the checks of _encode; stay exact anyway
            return flatten_encodings(_Encoded(tok.encode_batch(list(sentences), add_special_tokens=False)), per_doc)
        lengths = (np.diff(bounds, prepend=-1) - 1).astype(np.int32)
        ids = marked[~is_marker]
    # Drop empty sentences, then empty documents.
    doc_of_sentence = np.repeat(np.arange(len(per_doc)), per_doc)
    keep = lengths > 0
    n_per_doc = np.bincount(doc_of_sentence[keep], minlength=len(per_doc)).astype(np.int32)
    return ids, lengths[keep], n_per_doc[n_per_doc > 0]


def encode_sentences(tok, sentences: Sequence[str], per_doc: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenise sentences (no special tokens): :func:`_encode` then :func:`flatten_encodings`.
    Returns (ids uint32 [T], tokens per sentence int32 [N], sentences per document int32 [D]);
    empty sentences and documents are dropped."""
    return flatten_encodings(_encode(tok, sentences, per_doc), per_doc, tok, sentences)


def tokenize_documents(tok, docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split documents into sentences and tokenise them (no special tokens).

    Returns (ids uint32 [T], tokens per sentence int32 [N], sentences per document int32 [D]);
    empty sentences and documents are dropped.
    """
    return encode_sentences(tok, *segment_documents(docs))


def _tokenize_task(docs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tokenize_documents(_WORKER_TOKENIZER, docs)


@dataclass
class TokenizedFile:
    """One source file's tokens, memory-mapped: ``ids[tok_off[s]:tok_off[s+1]]`` is sentence
    ``s``, and sentences ``doc_off[d]:doc_off[d+1]`` make document ``d``."""

    ids: np.ndarray
    tok_off: np.ndarray
    doc_off: np.ndarray

    @property
    def n_docs(self) -> int:
        return len(self.doc_off) - 1

    def sentences(self, doc: int) -> list[np.ndarray]:
        s0, s1 = self.doc_off[doc], self.doc_off[doc + 1]
        return [self.ids[self.tok_off[s]:self.tok_off[s + 1]] for s in range(s0, s1)]

    def doc_tokens(self, doc: int) -> np.ndarray:
        return self.ids[self.tok_off[self.doc_off[doc]]:self.tok_off[self.doc_off[doc + 1]]]

    @classmethod
    def open(cls, directory: Path) -> TokenizedFile:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        ids = (np.memmap(directory / "ids.bin", dtype=dtype, mode="r", shape=(meta["tokens"],))
               if meta["tokens"] else np.zeros(0, dtype))
        lens = np.fromfile(directory / "sentence_lengths.bin", dtype=np.int32)
        nsent = np.fromfile(directory / "document_sentences.bin", dtype=np.int32)
        tok_off = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=tok_off[1:])
        doc_off = np.zeros(len(nsent) + 1, np.int64)
        np.cumsum(nsent, out=doc_off[1:])
        return cls(ids, tok_off, doc_off)


def _cache_key(sha: str, tok_hash: str, cfg: PrepareConfig, kind: str) -> str:
    blob = json.dumps([sha, tok_hash, SEGMENTER_VERSION, cfg.errors, cfg.text_field if kind != "text" else "",
                       cfg.hf_split if kind == "hf_dataset" else ""])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _chunks(source: Source, cfg: PrepareConfig) -> Iterator[list[str]]:
    """Documents of a source grouped into tasks of about ``_CHUNK_CHARS`` characters."""
    batch: list[str] = []
    size = 0
    for doc in read_documents(source, errors=cfg.errors, text_field=cfg.text_field, hf_split=cfg.hf_split):
        batch.append(doc)
        size += len(doc)
        if size >= _CHUNK_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _CacheWriter:
    """Streams one file's tokenised chunks to raw binary files inside a temporary directory."""

    def __init__(self, directory: Path, dtype: np.dtype, source: Source, sha: str):
        self.dir, self.dtype, self.source, self.sha = directory, dtype, source, sha
        self.files = {n: open(directory / n, "wb") for n in ("ids.bin", "sentence_lengths.bin", "document_sentences.bin")}
        self.tokens = self.sentences = self.documents = 0

    def add(self, ids: np.ndarray, lens: np.ndarray, nsent: np.ndarray) -> None:
        self.files["ids.bin"].write(ids.astype(self.dtype).tobytes())
        self.files["sentence_lengths.bin"].write(lens.astype(np.int32).tobytes())
        self.files["document_sentences.bin"].write(nsent.astype(np.int32).tobytes())
        self.tokens += len(ids)
        self.sentences += len(lens)
        self.documents += len(nsent)

    def __enter__(self) -> _CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.files.values():
            f.close()

    def finish(self) -> dict[str, Any]:
        if self.documents == 0:
            raise DataError(f"{self.source.path} contains no text; remove it from the corpus")
        meta = {"source": str(self.source.path), "sha256": self.sha, "dtype": self.dtype.str,
                "tokens": self.tokens, "sentences": self.sentences, "documents": self.documents}
        atomic_write_json(self.dir / "meta.json", meta)
        return meta


# Up to this many cores, tokenising in process (a reading thread, an encoding thread with the
# tokenizer's Rust threads, this one flattening) keeps every core busy, and worker processes only
# add the cost of shipping text: measured on 2 cores, in process 0.84-1.03x plain encode_batch,
# 2 workers 0.73-0.74x (benchmarks/bench_data.py). The measure below cannot tell a busy machine
# (load from other programs) from a tokenizer that leaves cores idle, so it is not trusted there.
_IN_PROCESS_CORES = 2


def auto_workers(sources: Sequence[Source | Path], tok, cfg: PrepareConfig | None = None, *,
                 cores: int | None = None, probe_chars: int = 1_000_000) -> int:
    """How many worker processes pay for tokenising on this machine, measured, not guessed
    from the core count.

    Tokenises the first ``probe_chars`` characters in this process and compares CPU time with
    wall time: ``busy = cpu / wall`` is how many cores the in-process path (the tokenizer's own
    Rust threads) already keeps busy. Worker processes only pay for the cores it leaves idle:
    ``cores // busy`` workers, or 0 (in process) when that is one or less; always 0 on two cores
    or fewer (``_IN_PROCESS_CORES``)."""
    import os

    cores = cores or os.cpu_count() or 1
    if cores <= _IN_PROCESS_CORES or not sources:
        return 0
    cfg = cfg or PrepareConfig()
    source = sources[0] if isinstance(sources[0], Source) else find_sources([sources[0]])[0]
    docs: list[str] = []
    size = 0
    for chunk in _chunks(source, cfg):
        docs.extend(chunk)
        size += sum(len(d) for d in chunk)
        if size >= probe_chars:
            break
    t0, c0 = time.perf_counter(), time.process_time()
    tokenize_documents(tok, docs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if wall < 0.05:  # too little text to be worth a process pool
        return 0
    return workers_for(cpu / wall, cores)


def workers_for(busy: float, cores: int) -> int:
    """Worker processes for ``cores`` when tokenising in process keeps ``busy`` cores busy:
    one per share of the machine the in-process path leaves idle, or 0 (in process) when that
    is one or less (a single worker only adds the cost of shipping text to it)."""
    workers = int(cores // max(1.0, busy))
    return workers if workers > 1 else 0


def tokenize_sources(
    sources: Sequence[Source],
    shas: Sequence[str],
    tok,
    cfg: PrepareConfig,
    cache_root: Path,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[Path]:
    """Tokenise every source not already in ``cache_root``; return each source's cache dir.

    ``workers`` > 0 runs that many spawned processes (bounded queue of tasks, results taken
    in submission order, so the output does not depend on the number of workers); 0 runs in
    this process, where a background thread reads and splits the next chunk while
    ``encode_batch`` works on this one; None measures which pays, on the first chunk, which is
    kept (:func:`auto_workers` explains the measure).
    """
    from tqdm.auto import tqdm

    tok_hash = tokenizer_hash(tok)
    dtype = dtype_for_vocab(tok.get_vocab_size())
    remove_temporaries(cache_root)  # a killed run's (only leanbert writes here)
    dirs = [cache_root / _cache_key(sha, tok_hash, cfg, s.kind) for s, sha in zip(sources, shas, strict=True)]
    todo = [i for i, d in enumerate(dirs) if not (d / "meta.json").is_file()]
    if not todo:
        return dirs
    total = sum(sources[i].path.stat().st_size for i in todo if sources[i].path.is_file())
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenising", disable=not progress)
    pool = None
    measure = workers is None
    if measure and (os.cpu_count() or 1) <= _IN_PROCESS_CORES:
        workers, measure = 0, False

    def start_pool(n: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: safe with threads (tokenizers' own pool, torch) in the parent; a
        # worker that dies makes the executor raise instead of hanging.
        return ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                   initargs=(tok.to_str(),))

    def segmented(chunks: Iterator[list[str]]) -> Iterator[tuple[list[str], list[int], int]]:
        for docs in chunks:
            yield (*segment_documents(docs), sum(len(d) for d in docs))

    try:
        if workers:
            pool = start_pool(workers)
        for i in todo:
            with atomic_directory(dirs[i]) as tmp:
                writer = _CacheWriter(tmp, dtype, sources[i], shas[i])
                with writer:
                    chunks = _chunks(sources[i], cfg)
                    if measure:  # the first chunk, in process, decides (and is kept)
                        first = next(chunks, None)
                        if first is not None:
                            t0, c0 = time.perf_counter(), time.process_time()
                            writer.add(*tokenize_documents(tok, first))
                            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                            bar.update(sum(len(d) for d in first))
                            workers = 0 if wall < 0.05 else workers_for(cpu / wall, os.cpu_count() or 1)
                            measure = False
                            if workers:
                                pool = start_pool(workers)
                    if pool is None:
                        # Three stages at once: a thread reads and splits chunk k+2 (Python), one
                        # encodes chunk k+1 (Rust, GIL released), this one flattens chunk k.
                        encoded = in_background((_encode(tok, sentences, per_doc), sentences, per_doc, n)
                                                 for sentences, per_doc, n in in_background(segmented(chunks)))
                        for encs, sentences, per_doc, n in encoded:
                            writer.add(*flatten_encodings(encs, per_doc, tok, sentences))
                            bar.update(n)
                    else:
                        pending: collections.deque = collections.deque()
                        for docs in chunks:
                            pending.append((pool.submit(_tokenize_task, docs), sum(len(d) for d in docs)))
                            while len(pending) > 2 * workers:  # bounded memory: back-pressure on the reader
                                res, n = pending.popleft()
                                writer.add(*res.result())
                                bar.update(n)
                        while pending:
                            res, n = pending.popleft()
                            writer.add(*res.result())
                            bar.update(n)
                writer.finish()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return dirs


# --------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------


class _ExampleWriter:
    """Appends examples to a raw temporary file (unknown count up front)."""

    def __init__(self, path: Path, seq_length: int, dtype: np.dtype):
        self.path, self.seq_length, self.dtype = path, seq_length, dtype
        self.f = open(path, "wb")
        self.count = 0
        self.tokens = 0  # non-pad tokens
        self.labels: list[int] = []

    def add(self, rows: np.ndarray, labels: Sequence[int] | None = None) -> None:
        rows = np.asarray(rows).reshape(-1, self.seq_length)
        self.f.write(rows.astype(self.dtype).tobytes())
        self.count += len(rows)
        self.tokens += int(np.count_nonzero(rows))
        if labels is not None:
            self.labels.extend(labels)

    def close(self) -> None:
        self.f.close()


def _pack_stream(files: list[TokenizedFile], docs: list[np.ndarray], seq_length: int,
                 ids: dict[str, int], writer: _ExampleWriter, block: int = 1 << 20) -> None:
    """``packed`` mode: documents (each followed by [SEP]) cut into full-length examples.

    Vectorised: the token stream of a block of documents (about ``block`` tokens) is one fancy
    index into the file's memory-mapped ids, with the [SEP] slots written afterwards; examples
    are cut from the stream with a reshape. No Python loop per document or per token."""
    body = seq_length - 2
    cls_id, sep_id = ids["[CLS]"], ids["[SEP]"]
    carry = np.zeros(0, np.int64)

    def emit(stream: np.ndarray, final: bool) -> np.ndarray:
        n = len(stream) // body
        if n:
            rows = np.empty((n, seq_length), np.int64)
            rows[:, 0] = cls_id
            rows[:, 1:-1] = stream[: n * body].reshape(n, body)
            rows[:, -1] = sep_id
            writer.add(rows)
        rest = stream[n * body:]
        if final and len(rest):
            row = np.zeros(seq_length, np.int64)  # [PAD] = 0
            row[0], row[1:1 + len(rest)], row[1 + len(rest)] = cls_id, rest, sep_id
            writer.add(row[None])
            rest = rest[:0]
        return rest

    for f, doc_ids in zip(files, docs, strict=True):
        if not len(doc_ids):
            continue
        starts = f.tok_off[f.doc_off[doc_ids]]
        lengths = f.tok_off[f.doc_off[doc_ids + 1]] - starts
        source = np.asarray(f.ids)
        # blocks of documents of about `block` tokens: bounded memory
        cuts = np.searchsorted(np.cumsum(lengths), np.arange(block, int(lengths.sum()) + block, block), "right")
        for lo, hi in zip(np.concatenate([[0], cuts[:-1]]), cuts, strict=True):
            if hi <= lo:
                continue
            size = lengths[lo:hi] + 1  # the document's tokens, then its [SEP]
            out_start = np.cumsum(size) - size
            index = np.repeat(starts[lo:hi] - out_start, size) + np.arange(int(size.sum()))
            sep_slots = out_start + size - 1
            index[sep_slots] = 0  # (a valid index; overwritten below)
            stream = source[index].astype(np.int64)
            stream[sep_slots] = sep_id
            carry = emit(np.concatenate([carry, stream]), final=False)
    emit(carry, final=True)


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int, rng: np.random.Generator):
    """BERT's ``truncate_seq_pair``: remove one token at a time from the longer segment (B on a
    tie), from its front or back at random. Same result distribution, in closed form."""
    la, lb = len(a), len(b)
    excess = la + lb - max_tokens
    if excess > 0:
        first = min(excess, abs(la - lb))  # the longer one down to the shorter one's length
        if la > lb:
            la -= first
        else:
            lb -= first
        rest = excess - first  # then alternately, B first
        lb -= (rest + 1) // 2
        la -= rest // 2
    fa = int(rng.binomial(len(a) - la, 0.5))
    fb = int(rng.binomial(len(b) - lb, 0.5))
    return a[fa:fa + la], b[fb:fb + lb]


def _pack_pairs(files: list[TokenizedFile], docs: list[np.ndarray], cfg: PrepareConfig,
                ids: dict[str, int], writer: _ExampleWriter, rng: np.random.Generator) -> None:
    """``pairs`` mode: BERT's ``create_instances_from_document`` with NSP or SOP labels."""
    S = cfg.seq_length
    max_tokens = S - 3
    cls_id, sep_id = ids["[CLS]"], ids["[SEP]"]
    # Global list of (file, doc) of this split, for drawing random documents (NSP).
    owners = np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(docs)] or [np.zeros(0, np.int64)])
    all_docs = np.concatenate(docs or [np.zeros(0, np.int64)]).astype(np.int64)
    n_all = len(all_docs)
    rows: list[np.ndarray] = []
    labels: list[int] = []

    def emit(a: np.ndarray, b: np.ndarray, label: int) -> None:
        a, b = _truncate_pair(a, b, max_tokens, rng)
        row = np.zeros(S, np.int64)
        la, lb = len(a), len(b)
        row[0] = cls_id
        row[1:1 + la] = a
        row[1 + la] = sep_id
        row[2 + la:2 + la + lb] = b
        row[2 + la + lb] = sep_id
        rows.append(row)
        labels.append(label)
        if len(rows) >= 4096:
            writer.add(np.stack(rows), labels)
            rows.clear()
            labels.clear()

    def take(sentences: list[np.ndarray], start: int, target_b: int) -> np.ndarray:
        parts, blen = [], 0
        for sent in sentences[start:]:
            parts.append(sent)
            blen += len(sent)
            if blen >= target_b:
                break
        return np.concatenate(parts)

    g = 0  # global index of the current document in this split
    for f, doc_ids in zip(files, docs, strict=True):
        # Runs of consecutive blocks of one file (at most _MAX_RUN) are one text for building
        # segments: paragraphs of a book or article continue each other.
        breaks = np.flatnonzero(np.diff(doc_ids) != 1) + 1 if len(doc_ids) else np.zeros(0, np.int64)
        runs = [r[k:k + _MAX_RUN] for r in np.split(doc_ids, breaks) for k in range(0, len(r), _MAX_RUN)]
        for run in runs:
            if not len(run):
                continue
            document = [sent for d in run for sent in f.sentences(int(d))]
            target = max_tokens if rng.random() >= cfg.short_seq_prob else int(rng.integers(2, max_tokens + 1))
            chunk: list[np.ndarray] = []
            length = 0
            i = 0
            while i < len(document):
                chunk.append(document[i])
                length += len(document[i])
                if i == len(document) - 1 or length >= target:
                    a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                    a = np.concatenate(chunk[:a_end])
                    if cfg.next_sentence == "sop":
                        if len(chunk) >= 2:
                            b = np.concatenate(chunk[a_end:])
                        elif len(a) >= 2:  # one sentence: split it at a random token
                            cut = int(rng.integers(1, len(a)))
                            a, b = a[:cut], a[cut:]
                        else:
                            b = a[:0]
                        if len(b):
                            if rng.random() < 0.5:
                                emit(b, a, 1)  # swapped order
                            else:
                                emit(a, b, 0)
                    else:
                        b = None
                        if len(chunk) >= 2 and rng.random() >= 0.5:  # actual next text
                            b = np.concatenate(chunk[a_end:])
                        if b is not None:
                            emit(a, b, 0)
                        else:
                            other = int(rng.integers(0, n_all))
                            for _ in range(10):  # a block outside this run if possible
                                if not (g <= other < g + len(run)):
                                    break
                                other = int(rng.integers(0, n_all))
                            rdoc = files[owners[other]].sentences(int(all_docs[other]))
                            b = take(rdoc, int(rng.integers(0, len(rdoc))), max(1, target - len(a)))
                            i -= len(chunk) - a_end  # unused segments go back into the document
                            emit(a, b, 1)
                    chunk, length = [], 0
                    target = max_tokens if rng.random() >= cfg.short_seq_prob else int(rng.integers(2, max_tokens + 1))
                i += 1
            g += len(run)
    if rows:
        writer.add(np.stack(rows), labels)


def _split_documents(f: TokenizedFile, sha: str, cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """Document indices of each split: validation with probability ``validation_fraction``,
    from a generator seeded by (seed, file checksum): independent of other files and workers."""
    u = np.random.default_rng([cfg.seed, int(sha[:15], 16)]).random(f.n_docs)
    val = u < cfg.validation_fraction
    return {"train": np.flatnonzero(~val), "validation": np.flatnonzero(val)}


def _write_shards(tmp_path: Path, count: int, labels: list[int] | None, split: str, out: Path,
                  cfg: PrepareConfig, dtype: np.dtype, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Shuffle the packed examples of a split globally and cut them into .npy shards."""
    shards: list[dict[str, Any]] = []
    if count == 0:
        return shards
    data = np.memmap(tmp_path, dtype=dtype, mode="r", shape=(count, cfg.seq_length))
    order = rng.permutation(count)
    label_arr = np.asarray(labels, np.uint8) if labels is not None else None
    for k, start in enumerate(range(0, count, cfg.shard_size)):
        idx = order[start:start + cfg.shard_size]
        name = f"{split}-{k:05d}"
        entry: dict[str, Any] = {"input_ids": f"{name}.input_ids.npy", "examples": int(len(idx))}
        _save_npy(out / entry["input_ids"], data[np.sort(idx)][np.argsort(np.argsort(idx))])
        if label_arr is not None:
            entry["nsp"] = f"{name}.nsp.npy"
            _save_npy(out / entry["nsp"], label_arr[idx])
        shards.append(entry)
    del data
    return shards


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write an .npy file atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype, shape=array.shape)
    arr[...] = array
    arr.flush()
    del arr
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# The prepare entry point
# --------------------------------------------------------------------------------------


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a prepared directory, with a clear error when it is missing or bad."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise DataError(f"prepared data directory not found: {directory}; run 'leanbert data prepare' first")
    if not path.is_file():
        raise DataError(f"{directory} has no {MANIFEST} (not prepared, or preparation was interrupted); run 'leanbert data prepare'")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path} is not valid JSON; prepare the data again with --overwrite") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path} has format version {manifest.get('format_version')}, expected {FORMAT_VERSION}; prepare the data again")
    return manifest


def _fingerprint(cfg: PrepareConfig, tok_hash: str, shas: list[str]) -> str:
    blob = json.dumps([FORMAT_VERSION, SEGMENTER_VERSION, cfg.model_dump(), tok_hash, shas], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare(
    corpus: str | Path | Sequence[str | Path],
    tokenizer: Any,
    out_dir: str | Path,
    config: PrepareConfig | dict[str, Any] | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tokenise ``corpus`` and write shards + manifest to ``out_dir``; return the manifest.

    ``workers``: tokeniser processes; 0 tokenises in this process; None (the default) measures
    which pays on this machine (:func:`auto_workers`).

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or anything :func:`resolve_tokenizer` takes.
    An existing complete output with the same inputs is returned as is (``manifest['skipped']``
    is then True); one prepared from different inputs is an error unless ``overwrite``.
    """
    cfg = config if isinstance(config, PrepareConfig) else validate(PrepareConfig, config or {}, "data prepare")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise DataError(f"workers must be 0 (in this process) or a positive number, got {workers}")
    sources = find_sources(corpus)
    tok = tokenizer if hasattr(tokenizer, "encode_batch") else resolve_tokenizer(tokenizer)
    tok = without_padding(tok)  # a tokenizer.json that pads or truncates would corrupt the stream
    special = special_token_ids(tok)
    tok_hash = tokenizer_hash(tok)
    vocab_size = tok.get_vocab_size()
    dtype = dtype_for_vocab(vocab_size)
    out = check_output_dir(out_dir, "data prepare output")
    shas = [file_sha256(s.path) for s in sources]
    fingerprint = _fingerprint(cfg, tok_hash, shas)

    if (out / MANIFEST).is_file():
        old = read_manifest(out)
        if old.get("fingerprint") == fingerprint:
            old["skipped"] = True
            return old
        if not overwrite:
            if old["tokenizer"]["sha256"] != tok_hash:
                why = (f"a different tokenizer (hash {old['tokenizer']['sha256'][:12]}, "
                       f"this one {tok_hash[:12]})")
            elif [s["sha256"] for s in old["sources"]] != shas:
                why = "different source files"
            else:
                old_cfg = old["config"]
                diff = [f"{k}={old_cfg.get(k)!r}" for k, v in cfg.model_dump().items() if old_cfg.get(k) != v]
                why = f"different settings ({', '.join(diff)})"
            raise DataError(f"{out} holds shards prepared with {why}; pass --overwrite or choose another --out")
        (out / MANIFEST).unlink()  # from here on the directory is not valid until the new manifest
        for old_file in out.glob("*.npy"):
            old_file.unlink()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out, ".*.examples.tmp")  # a killed run's half-written examples
    try:
        cache_dirs = tokenize_sources(sources, shas, tok, cfg, out / ".cache" / "tokens",
                                      workers=workers, progress=progress)
    except BaseException:
        # Nothing that looks like (part of) a prepared directory stays behind a failed start.
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for empty in (out / ".cache" / "tokens", out / ".cache"):
                with contextlib.suppress(OSError):
                    empty.rmdir()
        raise
    files = [TokenizedFile.open(d) for d in cache_dirs]
    metas = [json.loads((d / "meta.json").read_text(encoding="utf-8")) for d in cache_dirs]

    splits_docs = [_split_documents(f, sha, cfg) for f, sha in zip(files, shas, strict=True)]
    splits: dict[str, Any] = {}
    for k, split in enumerate(SPLITS):
        docs = [sd[split] for sd in splits_docs]
        tmp_path = out / f".{split}.examples.tmp"
        writer = _ExampleWriter(tmp_path, cfg.seq_length, dtype)
        rng = np.random.default_rng([cfg.seed, k, 1])
        try:
            if cfg.mode == "packed":
                _pack_stream(files, docs, cfg.seq_length, special, writer)
            else:
                _pack_pairs(files, docs, cfg, special, writer, rng)
            writer.close()
            labels = writer.labels if cfg.mode == "pairs" else None
            shards = _write_shards(tmp_path, writer.count, labels, split, out, cfg, dtype,
                                   np.random.default_rng([cfg.seed, k, 2]))
        finally:
            writer.close()
            tmp_path.unlink(missing_ok=True)
        entry: dict[str, Any] = {
            "examples": writer.count,
            "tokens": writer.tokens,
            "documents": int(sum(len(d) for d in docs)),
            "shards": shards,
        }
        if labels is not None:
            entry["label_1_fraction"] = round(float(np.mean(labels)), 6) if labels else 0.0
        splits[split] = entry

    if splits["train"]["examples"] == 0:
        raise DataError("the corpus gave no training examples; give more text or a lower validation fraction")
    save_tokenizer(tok, out / "tokenizer")
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "seq_length": cfg.seq_length,
        "mode": cfg.mode,
        "next_sentence": cfg.next_sentence if cfg.mode == "pairs" else None,
        "dtype": dtype.name,
        "seed": cfg.seed,
        "config": cfg.model_dump(),
        "tokenizer": {"sha256": tok_hash, "vocab_size": vocab_size, "special_ids": special, "dir": "tokenizer"},
        "splits": splits,
        "sources": [
            {"path": str(s.path), "sha256": sha, "kind": s.kind, "bytes": _size(s.path),
             "documents": m["documents"], "sentences": m["sentences"], "tokens": m["tokens"]}
            for s, sha, m in zip(sources, shas, metas, strict=True)
        ],
    }
    atomic_write_json(out / MANIFEST, manifest)
    manifest["skipped"] = False
    return manifest


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def clean_cache(out_dir: str | Path) -> None:
    """Delete the tokenised-source cache of a prepared directory (the shards stay valid)."""
    shutil.rmtree(Path(out_dir) / ".cache", ignore_errors=True)
