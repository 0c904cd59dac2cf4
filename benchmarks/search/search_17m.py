"""AMQ search vs uniform plans vs random search on the reference 17M Llama (CPU).

    AMQ_SHARED=/path/to/shared python benchmarks/search/search_17m.py

Runs the real search (`+experiment=small_cpu`), then a random search given the same number of
real evaluations (the archive plus the sensitivity pass), on the same proxy bank, calibration
tokens and metric, and writes benchmarks/search_17m_<predictor>_prune-<prune_to>_ilp<n>_local<n>.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from _ref17m import search_config

from amq.search.baselines import random_search
from amq.search.ilp import allocate, greedy, loss_table
from amq.search.loop import build_scorer, prepare, run_search
from amq.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = search_config(*sys.argv[1:])
    run_dir = ROOT / "outputs" / "bench-search-17m" / time.strftime("%Y%m%d-%H%M%S")

    t0 = time.perf_counter()
    result = run_search(cfg, run_dir)
    search_s = time.perf_counter() - t0
    per_bits = json.loads((run_dir / "sensitivity.json").read_text())["per_bits"]
    sens_doc = json.loads((run_dir / "sensitivity.json").read_text())
    n_estimated = len(sens_doc.get("estimated_bits", []))
    n_sens = sum(len(d) - n_estimated for d in per_bits.values())  # real evaluations only
    n_evals = len(result.records) + n_sens

    # random search with the same number of real evaluations, same bank and data
    prep = prepare(cfg)
    bank, evaluator, _ = build_scorer(cfg, prep.model_path)
    space = SearchSpace(tuple(bank.names), tuple(cfg.bits.choices))

    def score(plan):
        bank.apply(plan)
        return evaluator.score()

    rows, _ = random_search(space, score, prep.cost.plan_bytes, n_evals, [], seed=cfg.seed + 1)
    random_rows = [(nbytes, prep.cost.avg_bits(plan), div) for plan, nbytes, div in rows]

    # the peers from the same per-layer table: exact-budget ILP and sensitivity greedy
    cost = prep.cost
    loss = loss_table({n: {int(b): v for b, v in d.items()} for n, d in per_bits.items()}, bank.names, cfg.bits.choices)
    peers: dict[str, dict[float, tuple[float, float]]] = {"ilp": {}, "greedy": {}}
    for budget in cfg.search.budgets:
        cap = cost.budget_to_bytes(budget, "bits")
        for name, fn in (("ilp", allocate), ("greedy", greedy)):
            plan = fn(loss, cost.table(), cap, space)
            bank.apply(plan)
            peers[name][budget] = (cost.avg_bits(plan), evaluator.score())
    lines = [
        "# AMQ search on amq-llama-17m (CPU)",
        "",
        "Command: `AMQ_SHARED=<shared> python benchmarks/search/search_17m.py " + " ".join(sys.argv[1:]) + "`",
        "",
        f"Calibration: `linuxdoc/calib.txt`, {cfg.data.num_samples} x {cfg.data.seq_len} tokens, {cfg.search.metric.upper()};"
        f" proxy {cfg.proxy.name}, group {cfg.bits.group_size}. Search wall time {search_s / 60:.1f} min on {os.cpu_count()} CPU cores;"
        f" {len(result.records)} archive evaluations + {n_sens} sensitivity evaluations ("
        + ("every layer at every bit-width" if not n_estimated else "the lowest bit-width; the other columns estimated")
        + f") = {n_evals};"
        f" random search got the same {n_evals} evaluations.",
        f"Predictor ({cfg.predictor.name}) on held-out archive points after the last iteration:"
        f" Kendall tau {result.predictor_metrics.get('kendall_tau', float('nan')):.3f},"
        f" RMSE {result.predictor_metrics.get('rmse', float('nan')):.2e}.",
        "",
        "ILP (exact budget, summed per-layer divergences) and greedy use the sensitivity table the search measured.",
        "",
        "| budget (avg bits) | AMQ plan bits | AMQ divergence | AMQ plan from | random search best | uniform plan at >= memory | uniform divergence"
        " | ILP | greedy | AMQ better than random and uniform |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    uniform = result.uniform
    for budget, rec in result.budget_plans.items():
        cap = cost.budget_to_bytes(budget, "bits")
        fits = [r for r in random_rows if r[0] <= cap]
        rnd = min(fits, key=lambda r: r[2]) if fits else None
        ub = min((b for b in uniform if b >= budget - 1e-9), default=None)
        amq_div = rec.divergence if rec else float("nan")
        better = rec is not None and (rnd is None or amq_div < rnd[2]) and (ub is None or amq_div < uniform[ub])
        lines.append(
            f"| {budget:g} | {rec.avg_bits:.3f} | {amq_div:.5f} | {rec.source} (iteration {rec.iteration}) | "
            + (f"{rnd[2]:.5f} ({rnd[1]:.3f} bits)" if rnd else "none fits")
            + f" | {ub}-bit | {uniform[ub]:.5f}"
            + "".join(f" | {peers[k][budget][1]:.5f} ({peers[k][budget][0]:.3f} bits)" for k in ("ilp", "greedy"))
            + f" | {'yes' if better else 'no'} |"
        )
    lines += ["", f"Uniform plans (every layer): {', '.join(f'{b}-bit {d:.5f}' for b, d in sorted(uniform.items()))}.", ""]
    lines += [f"Run dir: `{run_dir.relative_to(ROOT)}` (front.png, pareto.json, plans/).", ""]
    sens = "" if cfg.search.sensitivity_bits == "all" else f"_sens-{cfg.search.sensitivity_bits}"
    proxy = "" if cfg.proxy.name == "hqq" else f"_proxy-{cfg.proxy.name}"
    name = (
        f"search_17m_{cfg.predictor.name}_prune-{cfg.search.prune_to}_ilp{cfg.search.ilp_seeds}_local{cfg.search.local_moves}"
        f"{sens}{proxy}.md"
    )
    out = ROOT / "benchmarks" / "search" / "results" / name
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
