"""Does a GPTQ proxy bank make the search's plans better GPTQ models? amq-llama-17m, side by side.

    AMQ_SHARED=<shared> python benchmarks/search/search_17m.py search.prune_to=no_lowest predictor=rbf proxy=gptq
    AMQ_SHARED=<shared> python benchmarks/search/proxy_gptq_17m.py --hqq-run outputs/bench-search-17m/<hqq run> \\
        --gptq-run outputs/bench-search-17m/<gptq run> [--max-windows N]

Two searches with the same settings except `proxy` (hqq: the data-free default; gptq: every
layer by GPTQ on its full-precision inputs). At 2.5 / 3.0 / 3.5 average bits, four plans each
(AMQ from each search, and the ILP allocation on each search's own sensitivity table) are
quantized with the same GPTQ (128 x seq-len calibration tokens of linuxdoc/calib.txt) and
scored by perplexity on both test files, in one process. Writes benchmarks/search/results/proxy_gptq_17m.md
and .json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch
from _ref17m import shared_dir

from amq.config import DataConfig, ModelConfig, QuantizerConfig
from amq.cost import build_cost_model
from amq.data import calibration_ids
from amq.models import layer_infos, load_model, load_tokenizer, searchable_linears
from amq.perplexity import perplexity, token_stream
from amq.plan_document import PlanDocument
from amq.plan_sources import read_sensitivity
from amq.quant.apply import quantize_model
from amq.search.ilp import allocate, loss_table
from amq.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]
BUDGETS = (2.5, 3.0, 3.5)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--hqq-run", type=Path, required=True)
    ap.add_argument("--gptq-run", type=Path, required=True)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--max-windows", type=int, default=None, help="perplexity windows per test file (default: all)")
    args = ap.parse_args()
    shared = shared_dir()
    mpath = str(shared / "models" / "amq-llama-17m")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "float16" if device == "cuda" else "float32"
    mcfg = ModelConfig(name="amq-llama-17m", path=mpath, dtype=dtype, device=device)
    tok = load_tokenizer(mpath)
    tests = {n: token_stream((shared / "data" / n).with_suffix(".txt").read_text(), tok) for n in ("linuxdoc/test", "wikitext2/test")}
    calib = calibration_ids(
        DataConfig(name="text", path=str(shared / "data/linuxdoc/calib.txt"), num_samples=args.calib_samples, seq_len=args.seq_len), tok
    )
    base = load_model(mcfg, mpath)
    names = list(searchable_linears(base))
    cost = build_cost_model(layer_infos(base), [2, 3, 4], 128, sum(p.numel() for p in base.parameters()))
    space = SearchSpace(tuple(names), (2, 3, 4))
    del base

    jobs: list[tuple[str, float | None, dict[str, int]]] = [("16-bit", None, {})]
    for proxy, run in (("hqq", args.hqq_run), ("gptq", args.gptq_run)):
        loss = loss_table(read_sensitivity(run), names, (2, 3, 4))
        for b in BUDGETS:
            jobs.append((f"AMQ, {proxy} proxy", b, PlanDocument.load(run / "plans" / f"{b:g}bits.json").layers))
            jobs.append(
                (
                    f"ILP, {proxy} sensitivity",
                    b,
                    dict(zip(names, allocate(loss, cost.table(), cost.budget_to_bytes(b, "bits"), space), strict=True)),
                )
            )

    rows = []
    for source, budget, plan in jobs:
        t = time.perf_counter()
        model = load_model(mcfg, mpath)
        if plan:
            quantize_model(model, plan, QuantizerConfig(method="gptq"), calib, show_progress=False, pack_layers=False)
        bits = [plan.get(n, 16) for n in names]
        row = {"plan": source, "budget": budget, "avg_bits": cost.avg_bits(bits) if plan else 16.0, "perplexity": {}}
        for name, ids in tests.items():
            ppl, windows = perplexity(model, ids, args.seq_len, 8, args.max_windows, show_progress=False)
            row["perplexity"][name] = {"ppl": ppl, "windows": windows}
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        logging.info("%s %s: %s", source, budget, {k: round(v["ppl"], 3) for k, v in row["perplexity"].items()})

    by = {(r["plan"], r["budget"]): r for r in rows}
    out = ROOT / "benchmarks" / "search" / "results" / "proxy_gptq_17m"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    cmd = f"AMQ_SHARED=<shared> python benchmarks/search/proxy_gptq_17m.py --hqq-run {args.hqq_run} --gptq-run {args.gptq_run}"
    cmd += f" --seq-len {args.seq_len}" + (f" --max-windows {args.max_windows}" if args.max_windows else "")
    dev = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores, float32)"
    windows = {n: rows[0]["perplexity"][n]["windows"] for n in tests}
    lines = [
        "# GPTQ proxy bank vs the HQQ proxy: plans quantized with GPTQ, amq-llama-17m",
        "",
        f"Command: `{cmd}`",
        "",
        f"Device: {dev}. Every plan quantized with the same GPTQ ({args.calib_samples} x {args.seq_len} tokens of linuxdoc/calib.txt);"
        f" perplexity at context {args.seq_len} on " + ", ".join(f"{n} ({w} windows)" for n, w in windows.items()) + ".",
        "",
        "| budget | plan | avg bits | " + " | ".join(f"{n} ppl" for n in tests) + " |",
        "|---|---|---|" + "---|" * len(tests),
    ]
    for r in rows:
        budget = "-" if r["budget"] is None else f"{r['budget']:g}"
        lines.append(
            f"| {budget} | {r['plan']} | {r['avg_bits']:.3f} | " + " | ".join(f"{r['perplexity'][n]['ppl']:.3f}" for n in tests) + " |"
        )
    lines.append("")
    for n in tests:
        for other in ("AMQ, hqq proxy", "ILP, gptq sensitivity", "ILP, hqq sensitivity"):
            wins = sum(by[("AMQ, gptq proxy", b)]["perplexity"][n]["ppl"] < by[(other, b)]["perplexity"][n]["ppl"] for b in BUDGETS)
            lines.append(f"- {n}: AMQ with the gptq proxy is lower than {other} at {wins}/3 budgets.")
    lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
