"""Re-planning time: a plan for new budgets from a finished search (`python -m amq.plan`'s work).

python benchmarks/search/replan_time.py outputs/bench-search-17m/<run>     # writes benchmarks/search/results/replan_time.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from amq.plan import replan


def main() -> None:
    run = Path(sys.argv[1])
    t0 = time.perf_counter()
    replan(run, 3.0)  # first call pays the imports and the model config read
    first = time.perf_counter() - t0
    rows = []
    for budget in (2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75):
        t = time.perf_counter()
        doc = replan(run, budget)
        rows.append((budget, doc, time.perf_counter() - t))
    lines = [
        "# Re-planning for new budgets from a finished search (no new evaluation)",
        "",
        f"Command: `python benchmarks/search/replan_time.py {run}` (the amq-llama-17m search of search_17m_rbf_prune-no_lowest_ilp5.md).",
        f"First call, imports and config read included: {first:.2f} s. Then per budget:",
        "",
        "| budget (bits) | plan bits | from | divergence (measured or table estimate) | seconds |",
        "|---|---|---|---|---|",
        *[
            f"| {b:g} | {d['avg_bits']:.3f} | {d['from']} | {d['divergence'] if d['divergence'] is not None else d['predicted_divergence']:.5f}"
            f"{'' if d['divergence'] is not None else ' (est.)'} | {s:.2f} |"
            for b, d, s in rows
        ],
        "",
    ]
    (Path(__file__).parent / "results" / "replan_time.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
