"""Does a sensitivity pass on fewer calibration windows rank layers as the full one does?

    python benchmarks/search/sensitivity_samples.py [--shared DIR]   # writes benchmarks/search/results/sensitivity_samples.md

For each model (the embedded default on its builtin calibration; with --shared, the 17M Llama on
the linuxdoc calibration text as `+experiment=small_cpu` reads it), the search's own sensitivity
pass (HQQ proxy, JSD, lowest and all bit-widths, from cached block inputs) on all windows and on
the first quarter and half (`search.sensitivity_samples`): Kendall tau of each layer's value
against the full pass, pooled over bit-widths and for the lowest column (what pruning uses),
and the pass's time. Issue 19 asks tau >= 0.9 before fewer windows may be used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from scipy.stats import kendalltau

from amq.config import register_configs, to_object
from amq.models import layer_blocks
from amq.search.loop import build_scorer, prepare
from amq.search.sensitivity import measure_sensitivity

ROOT = Path(__file__).resolve().parents[2]


def config(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_object(compose("config", ["logger=none", *overrides]))


def measure(cfg) -> list[dict]:
    prep = prepare(cfg)
    bank, evaluator, _ = build_scorer(cfg, prep.model_path, show_progress=False)
    names, choices = bank.names, list(cfg.bits.choices)
    blocks = layer_blocks(evaluator.model, names)
    n = cfg.data.num_samples
    rows, full = [], None
    for k in (n, n // 2, n // 4):
        ev = evaluator.first(k)
        t0 = time.perf_counter()
        table = measure_sensitivity(names, choices, bank.apply, ev.score, False, None, ev.score_from, blocks)
        seconds = time.perf_counter() - t0
        full = full or table
        pooled = kendalltau([full[x][b] for x in names for b in choices], [table[x][b] for x in names for b in choices])[0]
        lowest = kendalltau([full[x][choices[0]] for x in names], [table[x][choices[0]] for x in names])[0]
        rows.append({"windows": k, "seq_len": cfg.data.seq_len, "seconds": seconds, "tau_all": pooled, "tau_lowest": lowest})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", help="the workplace's shared dir (models/amq-llama-17m, data/linuxdoc/calib.txt)")
    args = ap.parse_args()
    models = {"embedded default (builtin:tiny-llama, builtin data)": []}
    if args.shared:
        s = Path(args.shared)
        models["amq-llama-17m (linuxdoc calibration, small_cpu preset)"] = [
            "+experiment=small_cpu",
            f"model.path={s / 'models/amq-llama-17m'}",
            f"data.path={s / 'data/linuxdoc/calib.txt'}",
        ]
    lines = [
        "# Sensitivity on fewer calibration windows",
        "",
        f"Command: `python benchmarks/search/sensitivity_samples.py{' --shared <shared>' if args.shared else ''}` (CPU).",
        "Kendall tau of each layer's sensitivity against the pass on every window; time of the pass (every bit-width, from",
        "cached block inputs). Goal before fewer windows may be used: tau >= 0.9.",
        "",
        "| model | windows | tau, every bit-width | tau, lowest bits | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, overrides in models.items():
        for r in measure(config(overrides)):
            lines.append(f"| {name} | {r['windows']} x {r['seq_len']} | {r['tau_all']:.3f} | {r['tau_lowest']:.3f} | {r['seconds']:.1f} |")
    out = ROOT / "benchmarks" / "search" / "results" / "sensitivity_samples.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
