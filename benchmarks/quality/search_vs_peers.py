"""After GPTQ, on one model: AMQ (search + final choice) vs ILP, greedy, uniform and random search,
the predictor's ranking per iteration, and how well the proxy agrees with GPTQ around each budget.

    python benchmarks/quality/search_vs_peers.py --model DIR --name NAME --calib FILE --test FILE [--test FILE] \
        [--agreement 30] [--out benchmarks/quality] [search overrides, e.g. predictor=rbf ...]

1. The search, `python -m amq.run +experiment=small_cpu` as shipped (plus the overrides), calibrated on --calib.
2. Random search: the same loop and evaluation count with `search.strategy=random final.method=none
   final.peers=false`, i.e. its best proxy plan under each budget.
3. Per budget: the AMQ plan (chosen after GPTQ by the search's final step), the plan the proxy alone
   would have chosen (the archive's lowest proxy divergence), ILP and greedy on the search's
   sensitivity table (what `amq.evaluate plan=ilp|greedy` builds), uniform at equal memory where one
   exists, and the random search's plan. Each is quantized with GPTQ on --gptq-samples x --seq-len
   windows of --calib (as `amq.evaluate` does) and scored by perplexity on every --test file whole
   (non-overlapping windows of --seq-len).
4. Agreement: the --agreement archive plans nearest each budget (at or under it): proxy divergence,
   divergence after GPTQ on held-out calibration windows (the final step's own scorer), and
   perplexity of that GPTQ model on the first --test file; Kendall tau of each pair.

Writes <out>/<name>.md and <name>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from scipy.stats import kendalltau

from amq.config import PREDICTORS, Config, DataConfig, PlanConfig, QuantizerConfig, register_configs, to_object
from amq.data import calibration_ids
from amq.evaluate import test_name
from amq.metrics import compare_to_reference
from amq.models import load_model, load_tokenizer, searchable_linears
from amq.perplexity import perplexity, token_stream
from amq.plan_sources import build_plan
from amq.search.final import FinalScorer
from amq.search.loop import SearchResult, prepare, run_search
from amq.search.outputs import iteration_records, phase_seconds

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("bench")


def search_config(model: str, name: str, calib: str, overrides: list[str]) -> Config:
    register_configs()
    base = ["+experiment=small_cpu", f"model.path={model}", f"model.name={name}", f"data.path={calib}", "logger=none"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_object(compose(config_name="config", overrides=base + overrides))


def timed_search(cfg: Config, run_dir: Path) -> tuple[SearchResult, float]:
    t = time.perf_counter()
    result = run_search(cfg, run_dir, show_progress=False)
    return result, time.perf_counter() - t


def tau(a, b) -> float:
    return float(kendalltau(a, b).statistic)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--test", action="append", required=True)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--gptq-samples", type=int, default=128)
    ap.add_argument("--agreement", type=int, default=30, help="plans per budget for the agreement table (0: skip)")
    ap.add_argument(
        "--agreement-windows", type=int, help="agreement perplexity on the first N windows of the first test file (default: all)"
    )
    ap.add_argument(
        "--keep-agreement",
        action="store_true",
        help="reuse the agreement table of <out>/<name>.json (same run dir) instead of measuring it",
    )
    ap.add_argument("--deadline-at", type=float, default=float("inf"), help="unix time after which no agreement plan is started")
    ap.add_argument("--run-dir", help="runs go here (default: --runs/<name>-<time>); finished or killed ones resume")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "quality" / "results"))
    ap.add_argument("--runs", default=str(ROOT / "outputs" / "bench-quality"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    command = "python benchmarks/quality/search_vs_peers.py " + " ".join(sys.argv[1:])
    runs = Path(args.run_dir) if args.run_dir else Path(args.runs) / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    # --- 1, 2: the search and the random search ------------------------------------------------
    def resume(sub: str) -> list[str]:
        return ["resume=true"] if (runs / sub / "optuna.journal").exists() else []

    # the final step quantizes with exactly the GPTQ windows the table below uses (the user's amq.evaluate settings)
    final_calib = [f"final.samples={args.gptq_samples}", f"final.seq_len={args.seq_len}"]
    cfg = search_config(args.model, args.name, args.calib, [*args.overrides, *final_calib, *resume("amq")])
    amq, _ = timed_search(cfg, runs / "amq")
    amq_s = phase_seconds(runs / "amq")
    random_overrides = [*args.overrides, "search.strategy=random", "final=none", "final.peers=false", *resume("random")]
    rnd, _ = timed_search(search_config(args.model, args.name, args.calib, random_overrides), runs / "random")
    rnd_s = phase_seconds(runs / "random")
    final_doc = json.loads((runs / "amq" / "final.json").read_text()) if (runs / "amq" / "final.json").exists() else {}

    # --- 3: every method's plan per budget -----------------------------------------------------
    prep = prepare(cfg)
    cost = prep.cost
    names = [lay.name for lay in cost.layers]
    plans: dict[float, dict[str, tuple[int, ...]]] = {}
    for choice, rchoice in zip(amq.choices, rnd.choices, strict=True):
        b, cap = choice.budget, choice.cap
        fits = [r for r in amq.records if r.bytes <= cap]
        row = {"AMQ": choice.best.plan, "AMQ, proxy's choice": min(fits, key=lambda r: r.divergence).plan}
        for peer in ("ilp", "greedy"):
            p = build_plan(PlanConfig(source=peer, path=str(runs / "amq"), budget=b, choices=list(cfg.bits.choices)), names, cost)
            row[peer.upper() if peer == "ilp" else peer] = tuple(p[n] for n in names)
        if float(b).is_integer() and int(b) in cfg.bits.choices:
            row[f"uniform {int(b)}-bit"] = (int(b),) * len(names)
        row["random search"] = rchoice.best.plan
        plans[b] = row

    model = load_model(replace(cfg.model, device="auto"), prep.model_path)
    tok = load_tokenizer(prep.model_path)
    device = next(model.parameters()).device
    ppl_batch = 16 if device.type == "cuda" else 4
    tests = {test_name(t): token_stream(Path(t).read_text(encoding="utf-8", errors="replace"), tok) for t in args.test}

    def ppls(m) -> dict[str, float]:
        return {k: perplexity(m, ids, args.seq_len, ppl_batch, show_progress=False)[0] for k, ids in tests.items()}

    linears = searchable_linears(model)
    gptq_ids = calibration_ids(DataConfig(name="text", path=args.calib, num_samples=args.gptq_samples, seq_len=args.seq_len), tok)
    held_out = calibration_ids(replace(cfg.data, num_samples=args.gptq_samples, seq_len=args.seq_len, seed=cfg.data.seed + 1), tok)
    gptq = QuantizerConfig(method="gptq", group_size=cfg.bits.group_size, batch_size=8)
    full = FinalScorer(model, linears, gptq_ids, held_out, gptq, cfg.search.metric)  # the user's GPTQ (amq.evaluate)
    fp16 = ppls(model)
    reference = copy.deepcopy(model)  # the 16-bit model, for KL on the first test file
    first_test = next(iter(tests.values()))
    n_win = first_test.numel() // args.seq_len
    test_windows = first_test[: n_win * args.seq_len].view(n_win, args.seq_len)
    scored: dict[tuple[int, ...], dict] = {}
    t0 = time.perf_counter()
    for row in plans.values():
        for plan in row.values():
            if plan not in scored:
                with full.quantized(dict(zip(names, plan, strict=True))) as m:
                    scored[plan] = {
                        "ppl": ppls(m),
                        "divergence": full.evaluator.score(),
                        "test": compare_to_reference(m, reference, test_windows, ppl_batch),
                        "avg_bits": cost.avg_bits(plan),
                    }
    gptq_s = time.perf_counter() - t0

    # --- 4: agreement around each budget ---------------------------------------------------------
    # budgets in turn, nearest plans first, until --agreement each or --deadline-s (then fewer, said)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    agreement: dict[float, dict] = {}
    kept_s: float | None = None  # the agreement's time in the earlier run, when kept
    t0 = time.perf_counter()

    def write() -> None:
        doc = report_doc(
            args, command, device, amq_s, rnd_s, gptq_s, kept_s or time.perf_counter() - t0, final_doc, fp16, plans, scored, runs, agreement
        )
        (out / f"{args.name}.json").write_text(json.dumps(doc, indent=1))
        (out / f"{args.name}.md").write_text(render(doc, args, cfg, list(tests), plans, scored, agreement))

    earlier = out / f"{args.name}.json"
    if args.keep_agreement and earlier.exists():
        earlier_doc = json.loads(earlier.read_text())
        agreement.update({float(b): a for b, a in earlier_doc.get("agreement", {}).items()})
        kept_s = earlier_doc["seconds"]["agreement"] if agreement else None
        log.info("agreement: kept from %s", earlier)
    write()
    if args.agreement and not agreement:
        final = full  # the final step's own GPTQ and held-out windows
        first = next(iter(tests))
        near = {
            ch.budget: sorted((r for r in amq.records if r.bytes <= ch.cap), key=lambda r: ch.cap - r.bytes)[: args.agreement]
            for ch in amq.choices
        }
        rows: dict[float, list] = {b: [] for b in near}
        for k in range(args.agreement):
            if time.time() > args.deadline_at:
                log.warning("agreement: deadline reached after %d plans per budget", k)
                break
            for b, recs in near.items():
                if k < len(recs):
                    with final.quantized(dict(zip(names, recs[k].plan, strict=True))) as m:
                        ppl = perplexity(m, tests[first], args.seq_len, ppl_batch, args.agreement_windows, show_progress=False)[0]
                        rows[b].append((recs[k].divergence, final.evaluator.score(), ppl, recs[k].avg_bits))
        for b, rs in rows.items():
            if len(rs) >= 3:
                px, dv, pp, bits = zip(*rs, strict=True)
                agreement[b] = {
                    "plans": len(rs),
                    "avg_bits": [min(bits), max(bits)],
                    "tau_proxy_gptqdiv": tau(px, dv),
                    "tau_proxy_ppl": tau(px, pp),
                    "tau_gptqdiv_ppl": tau(dv, pp),
                    "rows": rs,
                }
        write()
    print((out / f"{args.name}.md").read_text())


def report_doc(args, command, device, amq_s, rnd_s, gptq_s, agree_s, final_doc, fp16, plans, scored, runs, agreement) -> dict:
    return {
        "command": command,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "search_config": args.overrides,
        "seconds": {"search": amq_s, "random_search": rnd_s, "gptq_and_ppl": gptq_s, "agreement": agree_s},
        "final_step_seconds": final_doc.get("seconds"),
        "fp16": fp16,
        "plans": {str(b): {k: {**scored[p], "plan": list(p)} for k, p in row.items()} for b, row in plans.items()},
        "iterations": list(iteration_records(runs / "amq").values()),
        "final": final_doc.get("budgets"),
        "agreement": {str(b): v for b, v in agreement.items()},
        "runs": str(runs),
    }


def render(doc, args, cfg: Config, tests, plans, scored, agreement) -> str:
    s = doc["seconds"]
    lines = [
        f"# AMQ vs the peers after GPTQ: {args.name}",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Device: {doc['device']}. Search: `+experiment=small_cpu`{' ' + ' '.join(args.overrides) if args.overrides else ' as shipped'}"
        f" ({cfg.data.num_samples} x {cfg.data.seq_len} calibration tokens, {cfg.search.initial_random} random + "
        f"{cfg.search.iterations} x {cfg.search.candidates} plans, predictor {cfg.predictor.name}, final choice {cfg.final.method}"
        f" among the top {cfg.final.top_k} and the peers, fitted on the GPTQ windows below and scored on as many held-out"
        f" ones: final.samples={cfg.final.samples} final.seq_len={cfg.final.seq_len}). Search phases (iterations.jsonl) {s['search']:.0f} s, then the final"
        f" choice {doc['final_step_seconds'] or 0:.0f} s (final.json); random search {s['random_search']:.0f} s.",
        f"Every plan quantized with GPTQ (g{cfg.bits.group_size}, {args.gptq_samples} x {args.seq_len} windows of the calibration"
        f" file); perplexity on each test file whole, context {args.seq_len}. 16-bit: "
        + ", ".join(f"{k} {v:.2f}" for k, v in doc["fp16"].items())
        + ".",
        "",
    ]
    methods = list(dict.fromkeys(k for row in plans.values() for k in row))
    for t in tests:
        lines += [
            f"## Perplexity on {t}",
            "",
            "| method | " + " | ".join(f"{b:g} bits" for b in plans) + " |",
            "|---|" + "---|" * len(plans),
        ]
        for m in methods:
            cells = []
            for row in plans.values():
                cells.append(f"{scored[row[m]]['ppl'][t]:.2f}" if m in row else "")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        checks = []
        for b, row in plans.items():
            mine = scored[row["AMQ"]]["ppl"][t]
            for m, p in row.items():
                if m in ("AMQ", "AMQ, proxy's choice"):
                    continue
                other = scored[p]["ppl"][t]
                rel = 100 * (mine - other) / other
                verdict = "same plan" if p == row["AMQ"] else ("lower" if mine < other else "higher" if mine > other else "equal")
                checks.append(f"{b:g}: vs {m} {rel:+.2f}% ({verdict})")
        lines += ["AMQ against each: " + "; ".join(checks) + ".", ""]
        wins = sum(scored[row["AMQ"]]["ppl"][t] <= 0.99 * scored[row["ILP"]]["ppl"][t] for row in plans.values())
        lines += [f"AMQ >= 1% lower than ILP at {wins} of {len(plans)} budgets on {t}.", ""]

    lines += [
        "## Held-out calibration divergence after GPTQ (what the final choice ranks by; never test data)",
        "",
        "| method | " + " | ".join(f"{b:g} bits" for b in plans) + " |",
        "|---|" + "---|" * len(plans),
    ]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{scored[row[m]]['divergence']:.5f}" if m in row else "" for row in plans.values()) + " |")
    lines += [
        "",
        f"## Distance from the 16-bit model on {tests[0]} (whole file, context {args.seq_len})",
        "",
        "Mean per-token KL(p16 || q) in nats, and in brackets how often the top next token is the 16-bit model's: what a",
        "quantized model is meant to keep. Perplexity can move either way around 16-bit; this cannot.",
        "",
        "| method | " + " | ".join(f"{b:g} bits" for b in plans) + " |",
        "|---|" + "---|" * len(plans),
    ]
    for m in methods:
        cells = [
            f"{scored[row[m]]['test']['kl']:.5f} ({100 * scored[row[m]]['test']['same_top_token']:.1f}%)" if m in row else ""
            for row in plans.values()
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    klwins = sum(scored[row["AMQ"]]["test"]["kl"] <= min(scored[p]["test"]["kl"] for p in row.values()) for row in plans.values())
    lines += ["", f"AMQ has the lowest test KL of every method at {klwins} of {len(plans)} budgets.", ""]
    lines += [
        "",
        "## Final choice per budget (the search's own step)",
        "",
        "| budget | chosen | candidates (sources: proxy -> after GPTQ) |",
        "|---|---|---|",
    ]
    for ch in doc["final"] or []:
        cands = "; ".join(f"{'+'.join(c['sources'])}: {c['proxy_divergence']:.4g} -> {c['final_divergence']:.4g}" for c in ch["candidates"])
        lines.append(f"| {ch['budget']:g} | {'+'.join(ch['candidates'][0]['sources'])} | {cands} |")
    lines += [
        "",
        "## Predictor per iteration (k-fold cross-validated on the archive)",
        "",
        "| iteration | archive | predictor | tau | RMSE | fallback | hypervolume | front from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    kinds = PREDICTORS
    for it in doc["iterations"]:
        pred = kinds[int(it["predictor/choice"])] if "predictor/choice" in it else ""
        tau_s = f"{it['predictor/kendall_tau']:.3f}" if "predictor/kendall_tau" in it else ""
        rmse = f"{it['predictor/rmse']:.2e}" if "predictor/rmse" in it else ""
        fb = {0.0: "no", 1.0: "yes"}.get(it.get("predictor/fallback"), "")
        others = ", ".join(f"{k} {it['predictor/tau_' + k]:.2f}" for k in kinds if "predictor/tau_" + k in it)
        lines.append(
            f"| {it['iteration']} | {it['archive/size']} | {pred}{' (' + others + ')' if others else ''} | {tau_s} | {rmse} | {fb} | "
            f"{it['search/hypervolume']:.4f} | {', '.join(it['front_sources'])} |"
        )
    if agreement:
        lines += [
            "",
            "## Proxy vs GPTQ around each budget (the archive plans nearest each, at or under it)",
            "",
            "GPTQ here is the final step's own (= the table's); divergence on its held-out calibration windows, perplexity on "
            f"{tests[0]}"
            + (f" (its first {args.agreement_windows} windows)" if args.agreement_windows else "")
            + ". Goal: tau(proxy, GPTQ) >= 0.8.",
            "",
            "| budget | plans | avg bits | tau(proxy, GPTQ divergence) | tau(proxy, GPTQ ppl) | tau(GPTQ divergence, GPTQ ppl) |",
            "|---|---|---|---|---|---|",
        ]
        for b, a in agreement.items():
            lo, hi = a["avg_bits"]
            lines.append(
                f"| {b:g} | {a['plans']} | {lo:.3f}-{hi:.3f} | {a['tau_proxy_gptqdiv']:.3f} | {a['tau_proxy_ppl']:.3f} | {a['tau_gptqdiv_ppl']:.3f} |"
            )
    lines += [
        "",
        f"Run dirs: `{doc['runs']}`. Times: GPTQ + perplexity of the table's plans {s['gptq_and_ppl']:.0f} s, agreement {s['agreement']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
