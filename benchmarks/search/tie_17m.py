"""The quality cost of tied groups (q/k/v and gate/up share one bit-width) on the reference 17M Llama.

    AMQ_SHARED=/path/to/shared python benchmarks/search/tie_17m.py --untied outputs/bench-search-17m/<run> [overrides...]

Runs the search with `search.tie=[qkv,gate_up]` under the settings of an untied run made by
benchmarks/search/search_17m.py (its Hydra overrides are read from the run's config), then compares the
two fronts at the budgets: best proxy divergence under each budget, tied vs untied, and a plot.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _ref17m import best_under, search_config

from amq.search.loop import run_search

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--untied", type=Path, required=True, help="run dir of the untied search (benchmarks/search/search_17m.py)")
    ap.add_argument("--tie", default="[qkv,gate_up]")
    ap.add_argument("overrides", nargs="*", help="the Hydra overrides the untied run used (e.g. predictor=rbf)")
    args = ap.parse_args()
    cfg = search_config(f"search.tie={args.tie}", *args.overrides)
    run_dir = ROOT / "outputs" / "bench-tie-17m" / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    result = run_search(cfg, run_dir)
    minutes = (time.perf_counter() - t0) / 60

    untied = [json.loads(line) for line in (args.untied / "archive.jsonl").read_text().splitlines()]
    tied = [json.loads(line) for line in (run_dir / "archive.jsonl").read_text().splitlines()]
    sens_u = json.loads((args.untied / "sensitivity.json").read_text())["per_bits"]
    n_sens_u = sum(len(d) for d in sens_u.values())
    units = len(result.records[0].plan) - sum(len(g) - 1 for g in _groups(run_dir))
    lines = [
        "# Tied groups vs free layers on amq-llama-17m (CPU)",
        "",
        f"Command: `AMQ_SHARED=<shared> python benchmarks/search/tie_17m.py --untied {args.untied} {' '.join(args.overrides)}`",
        "",
        f"Both searches: `+experiment=small_cpu {' '.join(args.overrides)}` (linuxdoc calib 16 x 256, JSD, HQQ proxy). "
        f"Tied: `search.tie={args.tie}`: {units} search variables instead of {len(result.records[0].plan)}; "
        f"{len(tied)} archive evaluations (untied: {len(untied)}), sensitivity measured per tied group "
        f"({3 * units} evaluations; untied {n_sens_u}). Tied search wall time {minutes:.1f} min.",
        "",
        "| budget (avg bits) | untied: best divergence | tied: best divergence | cost of tying |",
        "|---|---|---|---|",
    ]
    for b in cfg.search.budgets:
        u, t = best_under(untied, b), best_under(tied, b)
        if u and t:
            lines.append(f"| {b:g} | {u['divergence']:.5f} ({u['avg_bits']:.3f} bits) | {t['divergence']:.5f} ({t['avg_bits']:.3f} bits) "
                         f"| {t['divergence'] / u['divergence'] - 1:+.1%} |")  # fmt: skip
    fig, ax = plt.subplots(figsize=(6, 4))
    for rows, label, m in ((untied, "untied", "o"), (tied, f"tied {args.tie}", "x")):
        ax.scatter([r["avg_bits"] for r in rows], [r["divergence"] for r in rows], s=10, marker=m, label=label, alpha=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("average bits per weight")
    ax.set_ylabel("JSD vs 16-bit (proxy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "benchmarks" / "search" / "results" / "tie_17m.png", dpi=120)
    lines += ["", f"Tied run dir: `{run_dir.relative_to(ROOT)}`.", "", "![tied vs untied](tie_17m.png)"]
    (ROOT / "benchmarks" / "search" / "results" / "tie_17m.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _groups(run_dir: Path) -> list[tuple[int, ...]]:
    from amq.search.ties import tie_groups

    sens = json.loads((run_dir / "sensitivity.json").read_text())
    return list(tie_groups(list(sens["per_bits"]), sens["key"]["tie"]))


if __name__ == "__main__":
    main()
