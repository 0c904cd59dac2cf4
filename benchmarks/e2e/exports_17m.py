"""The three export paths round-trip on the reference 17M model at a searched 3.0-bit plan (CPU).

    AMQ_SHARED=/path/to/shared python benchmarks/e2e/exports_17m.py --plan outputs/bench-search-17m/<run>/plans/3bits.json

GPTQ (integer zero-points) applies the plan; then the model is written as our bit-plane
checkpoint, as compressed-tensors `pack-quantized` and as a GPTQ checkpoint with per-module
`dynamic` bits. Each is read back (ours: amq.export.load_quantized; compressed-tensors:
transformers' own integration, decompressed on the CPU; GPTQ: amq.export.gptq.load_gptq) and
its logits on held-out text are compared with the in-memory QuantLinear model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from amq.config import DataConfig, ModelConfig, QuantizerConfig
from amq.data import calibration_ids
from amq.export import load_quantized, payload_bytes, save_quantized
from amq.export.compressed_tensors import save_compressed_tensors
from amq.export.gptq import layer_bits_from_gptq_config, load_gptq, save_gptq
from amq.models import load_model, load_tokenizer
from amq.perplexity import token_stream
from amq.plan_document import PlanDocument
from amq.quant.apply import quantize_model

ROOT = Path(__file__).resolve().parents[2]


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("*.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "e2e" / "results" / "exports_17m.md")
    args = ap.parse_args()
    shared = Path(os.environ.get("AMQ_SHARED", ""))
    mpath = shared / "models" / "amq-llama-17m"
    if not mpath.is_dir():
        sys.exit("set AMQ_SHARED to the folder holding models/amq-llama-17m and data/")
    from transformers import AutoModelForCausalLM

    plan = PlanDocument.load(args.plan).layers
    doc = json.loads(args.plan.read_text())
    mcfg = ModelConfig(name="amq-llama-17m", path=str(mpath), dtype="float32", device="cpu")
    model = load_model(mcfg, str(mpath))
    tok = load_tokenizer(str(mpath))
    calib = calibration_ids(DataConfig(name="text", path=str(shared / "data" / "linuxdoc" / "calib.txt"), num_samples=64, seq_len=256), tok)
    t = time.perf_counter()
    quantize_model(model, plan, QuantizerConfig(method="gptq", integer_zeros=True), calib)
    gptq_s = time.perf_counter() - t
    ids = token_stream((shared / "data" / "linuxdoc" / "test.txt").read_text()[:20000], tok)[: 4 * 256].view(4, 256)
    with torch.no_grad():
        ref = model(ids).logits.float()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_quantized(model, tmp / "amq", "gptq", tokenizer=tok, dtype=torch.float32)
        ct = save_compressed_tensors(model, tmp / "ct", tok, dtype=torch.float32)
        gq = save_gptq(model, tmp / "gptq", tok, dtype=torch.float32, checkpoint_format="gptq_v2")
        listed_ct = {}
        for group in json.loads((ct / "config.json").read_text())["quantization_config"]["config_groups"].values():
            for target in group["targets"]:
                listed_ct[target.removeprefix("re:^").removesuffix("$").replace("\\", "")] = group["weights"]["num_bits"]
        listed_gptq = layer_bits_from_gptq_config(json.loads((gq / "quantize_config.json").read_text()), list(plan))
        listed_amq = {n: v["bits"] for n, v in json.loads((tmp / "amq" / "quantization.json").read_text())["layers"].items()}
        readers = {
            "amq bit-plane (amq.export.load_quantized)": (
                tmp / "amq",
                lambda: load_quantized(tmp / "amq", dtype=torch.float32),
                listed_amq,
            ),
            "compressed-tensors pack-quantized (transformers from_pretrained)": (
                ct,
                lambda: AutoModelForCausalLM.from_pretrained(ct, dtype=torch.float32),
                listed_ct,
            ),
            "GPTQ v2 + dynamic bits (amq.export.gptq.load_gptq)": (gq, lambda: load_gptq(gq), listed_gptq),
        }
        for name, (path, read, listed) in readers.items():
            loaded = read().eval()
            with torch.no_grad():
                out = loaded(ids).logits.float()
            rel = float((out - ref).abs().max() / ref.abs().max())
            same_top = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
            rows.append((name, dir_bytes(path), payload_bytes(next(path.glob("*.safetensors"))), listed == plan, rel, same_top))

    lines = [
        "# Export round trips: amq-llama-17m at a searched 3.0-bit plan (CPU)",
        "",
        f"Command: `AMQ_SHARED=<shared> python benchmarks/e2e/exports_17m.py --plan {args.plan}`",
        "",
        f"Plan: {doc['avg_bits']:.3f} average bits ({sum(b == 2 for b in plan.values())} layers at 2 bits, "
        f"{sum(b == 3 for b in plan.values())} at 3, {sum(b == 4 for b in plan.values())} at 4), GPTQ with integer zero-points "
        f"({gptq_s:.0f} s on the CPU, 64 x 256 calibration tokens). Logits compared on 4 x 256 tokens of linuxdoc/test against "
        "the in-memory QuantLinear model; all in float32.",
        "",
        "| format (reader) | safetensors bytes | tensor bytes | every layer's bits in the config | max abs logit diff / max abs logit | same top token |",
        "|---|---|---|---|---|---|",
        *[f"| {n} | {b} | {p} | {'yes' if ok else 'NO'} | {rel:.2e} | {100 * top:.2f}% |" for n, b, p, ok, rel, top in rows],
        "",
        "The float32 files are larger than the 16-bit ones users ship (`dtype` defaults to float16); the comparison is "
        "in float32 so that only the formats' own rounding could show.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
