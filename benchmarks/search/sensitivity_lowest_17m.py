"""Lowest-bit-only sensitivity (`search.sensitivity_bits=lowest`) vs measuring every bit-width,
on the reference 17M Llama (CPU).

    AMQ_SHARED=/path/to/shared python benchmarks/search/sensitivity_lowest_17m.py --full outputs/bench-search-17m/<run> \\
        [--lowest outputs/bench-search-17m/<run with search.sensitivity_bits=lowest>]

`--full` is a run made by benchmarks/search/search_17m.py (every bit-width measured). The estimated 3- and
4-bit columns (lowest-bit value x weight-error ratio of the proxy bank) are compared with the
measured ones (rank correlation), the ILP plans from both tables are scored on the proxy, and,
with `--lowest`, the two searches' best plans under each budget are compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _ref17m import best_under, search_config
from scipy.stats import kendalltau, spearmanr

from amq.search.ilp import allocate, loss_table
from amq.search.loop import build_scorer, prepare
from amq.search.sensitivity import weight_error_estimate
from amq.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", type=Path, required=True)
    ap.add_argument("--lowest", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "search" / "results" / "sensitivity_lowest_17m.md")
    args = ap.parse_args()
    cfg = search_config()
    prep = prepare(cfg)
    bank, evaluator, _ = build_scorer(cfg, prep.model_path, show_progress=False)
    names, choices = bank.names, tuple(cfg.bits.choices)
    measured = {
        n: {int(b): v for b, v in d.items()} for n, d in json.loads((args.full / "sensitivity.json").read_text())["per_bits"].items()
    }
    est = weight_error_estimate(bank.sq_error, choices[0])
    estimated = {n: {b: (measured[n][b] if b == choices[0] else est(n, b, measured[n][choices[0]])) for b in choices} for n in names}

    lines = [
        "# Sensitivity at the lowest bit-width only vs every bit-width (amq-llama-17m, CPU)",
        "",
        f"Command: `AMQ_SHARED=<shared> python benchmarks/search/sensitivity_lowest_17m.py {' '.join(sys.argv[1:])}`",
        "",
        f"`search.sensitivity_bits=lowest` measures each layer at {choices[0]} bits only ({len(names)} evaluations instead of "
        f"{len(names) * len(choices)}) and estimates the other columns as the measured value times the proxy bank's squared "
        "weight-error ratio, ||W - Q_b(W)||^2 / ||W - Q_lowest(W)||^2.",
        "",
        "| column | Spearman (estimated vs measured, over layers) | Kendall tau | median estimated / measured |",
        "|---|---|---|---|",
    ]
    for b in choices[1:]:
        m = np.array([measured[n][b] for n in names])
        e = np.array([estimated[n][b] for n in names])
        lines.append(f"| {b} bits | {spearmanr(m, e)[0]:.3f} | {kendalltau(m, e)[0]:.3f} | {np.median(e / m):.2f} |")

    space = SearchSpace(tuple(names), choices)
    cost = prep.cost
    lines += ["", "ILP plans (exact budget) from each table, scored on the proxy (JSD):", "",
              "| budget | ILP on measured table | ILP on estimated table |", "|---|---|---|"]  # fmt: skip
    for budget in cfg.search.budgets:
        cap = cost.budget_to_bytes(budget, "bits")
        row = []
        for table in (measured, estimated):
            plan = allocate(loss_table(table, names, choices), cost.table(), cap, space)
            bank.apply(plan)
            row.append(evaluator.score())
        lines.append(f"| {budget:g} | {row[0]:.5f} | {row[1]:.5f} |")
    if args.lowest:
        full_rows = [json.loads(x) for x in (args.full / "archive.jsonl").read_text().splitlines()]
        low_rows = [json.loads(x) for x in (args.lowest / "archive.jsonl").read_text().splitlines()]
        lines += ["", f"Whole searches (same settings; `{args.lowest}` with `search.sensitivity_bits=lowest`):", "",
                  "| budget | every bit-width measured | lowest only |", "|---|---|---|"]  # fmt: skip
        for budget in cfg.search.budgets:
            f, lo = best_under(full_rows, budget), best_under(low_rows, budget)
            lines.append(f"| {budget:g} | {f['divergence']:.5f} | {lo['divergence']:.5f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
