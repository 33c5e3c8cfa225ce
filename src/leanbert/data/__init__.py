"""Data pipeline: raw text -> WordPiece tokenizer -> token shards -> masked batches."""
