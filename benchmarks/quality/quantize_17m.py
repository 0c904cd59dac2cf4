"""Plans to quantized models on amq-llama-17m: perplexity of every method side by side.

    AMQ_SHARED=/path/to/shared python benchmarks/quality/quantize_17m.py --search-run outputs/bench-search-17m/<run>

Rows: 16-bit; uniform 2/3/4-bit with GPTQ, AWQ and HQQ; and at 2.5/3.0/3.5 average bits, GPTQ
applied to the plans of AMQ (the search run's plans/), ILP and greedy (from the same run's
per-layer sensitivity table) and random search (as many proxy evaluations as the search used,
scored here). Calibration: linuxdoc/calib.txt (GPTQ/AWQ: --calib-samples x --seq-len random
windows; random search: the search's own 16 x 256 setting). Perplexity: the whole linuxdoc and
WikiText-2 test files, non-overlapping windows of --seq-len. Then the AMQ 3.0-bit GPTQ model is
exported, reloaded and made to generate (on a GPU its QuantLinear layers run our Triton kernels).
Writes <out>/quantize_17m_ctx<seq-len>.md, .png and .json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from amq.config import DataConfig, ModelConfig, ProxyConfig, QuantizerConfig
from amq.cost import build_cost_model
from amq.data import calibration_ids
from amq.export import load_quantized, payload_bytes, save_quantized
from amq.metrics import DivergenceEvaluator
from amq.models import layer_infos, load_model, load_tokenizer, searchable_linears
from amq.perplexity import perplexity, token_stream
from amq.plan_document import PlanDocument
from amq.plan_sources import read_sensitivity
from amq.quant.apply import quantize_model
from amq.quant.bank import ProxyBank
from amq.report import plot, table
from amq.search.baselines import random_search
from amq.search.ilp import allocate, greedy, loss_table
from amq.search.space import SearchSpace

BUDGETS = (2.5, 3.0, 3.5)


def _random_best(model, ids, space, cost, n_evals, caps):
    """Random search on the HQQ proxy with the search's own divergence setting."""
    evaluator = DivergenceEvaluator(model, ids, 8, "jsd")
    bank = ProxyBank(searchable_linears(model), [2, 3, 4], 128, ProxyConfig(), show_progress=False)

    def score(plan):
        bank.apply(plan)
        return evaluator.score()

    _, best = random_search(space, score, cost.plan_bytes, n_evals, caps, seed=1, show_progress=False)
    bank.restore()
    return best


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--search-run", type=Path, required=True)
    ap.add_argument("--search-label", default=None, help="how the search run is named in the report (when copied elsewhere)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks"))
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--random-evals", type=int, default=None, help="default: as many as the search used (quick checks only)")
    ap.add_argument("--max-windows", type=int, default=None, help="limit perplexity windows (quick checks only)")
    args = ap.parse_args()
    shared = Path(os.environ.get("AMQ_SHARED", ""))
    if not (shared / "models" / "amq-llama-17m").is_dir():
        sys.exit("set AMQ_SHARED to the folder holding models/amq-llama-17m and data/")
    mpath = str(shared / "models" / "amq-llama-17m")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mcfg = ModelConfig(name="amq-llama-17m", path=mpath, dtype="float16", device=device)
    tok = load_tokenizer(mpath)
    tests = {
        "linuxdoc/test": token_stream((shared / "data/linuxdoc/test.txt").read_text(), tok),
        "wikitext2/test": token_stream((shared / "data/wikitext2/test.txt").read_text(), tok),
    }
    calib_cfg = DataConfig(name="text", path=str(shared / "data/linuxdoc/calib.txt"), num_samples=args.calib_samples, seq_len=args.seq_len)
    calib = calibration_ids(calib_cfg, tok)

    base = load_model(mcfg, mpath)
    names = list(searchable_linears(base))
    cost = build_cost_model(layer_infos(base), [2, 3, 4], 128, sum(p.numel() for p in base.parameters()))
    space = SearchSpace(tuple(names), (2, 3, 4))
    caps = {b: cost.budget_to_bytes(b, "bits") for b in BUDGETS}

    # --- plans -------------------------------------------------------------------------------
    plans: dict[tuple[str, float | None], dict[str, int]] = {}
    per_bits = read_sensitivity(args.search_run)
    loss = loss_table(per_bits, names, (2, 3, 4))
    for b in BUDGETS:
        plans[("amq", b)] = PlanDocument.load(args.search_run / "plans" / f"{b:g}bits.json").layers
        plans[("ilp", b)] = dict(zip(names, allocate(loss, cost.table(), caps[b], space), strict=True))
        plans[("greedy", b)] = dict(zip(names, greedy(loss, cost.table(), caps[b], space), strict=True))
    n_archive = len((args.search_run / "archive.jsonl").read_text().splitlines())
    n_evals = args.random_evals or n_archive + sum(len(d) for d in per_bits.values())
    t0 = time.perf_counter()
    rs_cfg = DataConfig(name="text", path=calib_cfg.path, num_samples=16, seq_len=256)
    best = _random_best(base, calibration_ids(rs_cfg, tok), space, cost, n_evals, list(caps.values()))
    for b in BUDGETS:
        plans[("random", b)] = dict(zip(names, best[caps[b]][0], strict=True))
    logging.info("random search: %d proxy evaluations in %.1fs", n_evals, time.perf_counter() - t0)
    del base

    # --- quantize and measure ----------------------------------------------------------------
    jobs: list[tuple[str, str, float | None, dict[str, int]]] = [("none", "fp16", None, {})]
    jobs += [("uniform", m, None, {n: bits for n in names}) for m in ("gptq", "awq", "hqq") for bits in (2, 3, 4)]
    jobs += [(src, "gptq", b, plans[(src, b)]) for src in ("amq", "ilp", "greedy", "random") for b in BUDGETS]
    rows = []
    for source, method, budget, plan in jobs:
        t = time.perf_counter()
        model = load_model(mcfg, mpath)
        if plan:
            quantize_model(model, plan, QuantizerConfig(method=method), calib, show_progress=False, pack_layers=False)
        bits = [plan.get(n, 16) for n in names]
        row = {
            "method": method,
            "plan_source": source,
            "budget": budget,
            "avg_bits": cost.avg_bits(bits) if plan else 16.0,
            "model_gb": cost.model_gb(bits) if plan else 2 * sum(p.numel() for p in model.parameters()) / 1e9,
            "perplexity": {},
        }
        for name, ids in tests.items():
            ppl, windows = perplexity(model, ids, args.seq_len, 8, args.max_windows, show_progress=False)
            row["perplexity"][name] = {"ppl": ppl, "seq_len": args.seq_len, "windows": windows}
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        logging.info("%s %s %s: %s", source, method, budget, {k: round(v["ppl"], 3) for k, v in row["perplexity"].items()})

    # --- export the AMQ 3.0-bit GPTQ model, reload, generate ---------------------------------
    model = load_model(mcfg, mpath)
    quantize_model(model, plans[("amq", 3.0)], QuantizerConfig(method="gptq"), calib, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = save_quantized(model, Path(tmp) / "export", "gptq", tokenizer=tok)
        payload, size = payload_bytes(out / "model.safetensors"), (out / "model.safetensors").stat().st_size
        predicted = cost.model_gb([plans[("amq", 3.0)][n] for n in names]) * 1e9
        loaded = load_quantized(out, device=device, dtype=torch.float16)
        ppl_loaded, _ = perplexity(loaded, tests["linuxdoc/test"], args.seq_len, 8, args.max_windows, show_progress=False)
        prompt = tok("The kernel", return_tensors="pt").input_ids.to(device)
        t = time.perf_counter()
        gen = loaded.generate(prompt, max_new_tokens=32, do_sample=False)
        gen_s = time.perf_counter() - t
    text = tok.decode(gen[0], skip_special_tokens=True)

    # --- how the 16-bit model's perplexity depends on the context (which length is fair) ----
    ref = load_model(mcfg, mpath)
    ctx_sweep = {n: perplexity(ref, tests["linuxdoc/test"], n, 8, args.max_windows, show_progress=False)[0] for n in (256, 512, 1024, 2048)}
    del ref

    # --- write -----------------------------------------------------------------------------
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"quantize_17m_ctx{args.seq_len}"
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / f"{stem}.png")
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    by = {(r["plan_source"], r["budget"]): r for r in rows if r["method"] == "gptq" and r["budget"]}
    verdict = []
    for t_name in tests:
        wins = {
            p: sum(by[("amq", b)]["perplexity"][t_name]["ppl"] < by[(p, b)]["perplexity"][t_name]["ppl"] for b in BUDGETS)
            for p in ("ilp", "greedy", "random")
        }
        verdict.append(
            f"- {t_name}: AMQ+GPTQ has lower perplexity than " + ", ".join(f"{p} at {w}/3 budgets" for p, w in wins.items()) + "."
        )
    lines = [
        "# From plans to quantized models: amq-llama-17m",
        "",
        "Command: `AMQ_SHARED=<shared> python benchmarks/quality/quantize_17m.py --search-run "
        + (args.search_label or str(args.search_run))
        + f" --seq-len {args.seq_len}`"
        + (f" `--max-windows {args.max_windows}`" if args.max_windows else ""),
        "",
        f"Device: {gpu}. GPTQ/AWQ calibration: {args.calib_samples} x {args.seq_len} tokens of linuxdoc/calib.txt. Perplexity: whole test"
        f" files, non-overlapping windows of {args.seq_len} tokens (context {args.seq_len}). Budget rows all use GPTQ; random search got"
        f" {n_evals} proxy evaluations (= the search's archive + sensitivity passes).",
        "",
        *table(rows),
        "",
        *verdict,
        "",
        f"Export of the AMQ 3.0-bit GPTQ model: {size} bytes on disk ({payload} of tensors) vs {predicted:.0f} by the cost model"
        f" (tensors/cost model = {payload / predicted:.4f}); reloaded on {device}: linuxdoc perplexity {ppl_loaded:.3f}"
        f" (in-memory {by[('amq', 3.0)]['perplexity']['linuxdoc/test']['ppl']:.3f}); 32 greedy tokens in {gen_s:.2f}s: {text!r}",
        "",
        "16-bit perplexity on linuxdoc/test by context length (the same protocol): "
        + ", ".join(f"{n}: {p:.2f}" for n, p in ctx_sweep.items())
        + ". The model's config allows 2048 positions, but its perplexity rises past its training length.",
        "",
        f"![perplexity vs bits]({stem}.png)",
        "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
