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
