"""A second model family for the quality benchmarks: a Qwen2 (grouped-query attention, biases
on q/k/v) the size of amq-llama-17m, trained on the same in-domain text with its tokenizer.

    python benchmarks/quality/build_qwen2.py --tokenizer <shared>/models/amq-llama-17m \
        --text <shared>/data/linuxdoc/calib.txt --out outputs/models/qwen2-17m-linuxdoc

Trained once with `amq.tiny.build_tiny_model` (the embedded default's trainer) and kept in --out:
a second run finds config.json there and does nothing. On a GPU it takes about a minute.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from amq.models import load_tokenizer
from amq.tiny import TinyRecipe, build_tiny_model

RECIPE = dict(
    arch="qwen2", hidden_size=384, intermediate_size=1024, num_layers=8, num_heads=6, num_kv_heads=2,
    seq_len=512, batch_size=16, steps=1200, lr=1e-3,
)  # fmt: skip


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="a model dir whose tokenizer to use")
    ap.add_argument("--text", required=True, help="training text (the calibration file; never the test file)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=RECIPE["steps"])
    args = ap.parse_args()
    out = Path(args.out)
    if (out / "config.json").exists():
        print(f"{out} already built")
        return
    tok = load_tokenizer(args.tokenizer)
    recipe = TinyRecipe(vocab_size=len(tok), **{**RECIPE, "steps": args.steps})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    build_tiny_model(out, recipe, Path(args.text).read_text(encoding="utf-8", errors="replace"), tok, device)
    print(f"built {out}")


if __name__ == "__main__":
    main()
