"""Cross-validated predictor quality on a finished search's archive, overall and near each budget.

    python benchmarks/search/predictor_cv.py <run dir> [mlp|rbf ...] > benchmarks/search/results/predictor_cv.md

Overall Kendall tau is dominated by memory (more bits, less divergence); what selection needs is
the ranking among plans of about the same size, so tau is also given within +-0.15 bits of each
budget.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from amq.config import PredictorConfig
from amq.predictor import make_predictor


def main() -> None:
    run = Path(sys.argv[1])
    names = sys.argv[2:] or ["mlp", "rbf"]
    rows = [json.loads(line) for line in (run / "archive.jsonl").read_text().splitlines()]
    plans = np.array([r["plan"] for r in rows], dtype=float)
    free = [j for j in range(plans.shape[1]) if len(set(plans[:, j])) > 1]
    lo, hi = plans.min(), plans.max()
    x = (plans[:, free] - lo) / max(1.0, hi - lo)
    y = np.array([r["divergence"] for r in rows])
    bits = np.array([r["avg_bits"] for r in rows])
    perm = np.random.default_rng(0).permutation(len(y))
    print(f"# Predictor 5-fold CV on `{run.name}` ({len(y)} plans, {len(free)} free layers)\n")
    print(f"Command: `python benchmarks/search/predictor_cv.py {run} {' '.join(names)}`\n")
    print("| predictor | tau overall | tau near 2.5 | tau near 3.0 | tau near 3.5 |")
    print("|---|---|---|---|---|")
    for name in names:
        pred = np.zeros_like(y)
        for fold in np.array_split(perm, 5):
            train = np.setdiff1d(perm, fold)
            p = make_predictor(PredictorConfig(name=name), seed=0)
            p.fit(x[train], y[train])
            pred[fold] = p.predict(x[fold])
        near = [kendalltau(y[m], pred[m]).statistic for m in (np.abs(bits - c) < 0.15 for c in (2.5, 3.0, 3.5))]
        print(f"| {name} | {kendalltau(y, pred).statistic:.3f} | " + " | ".join(f"{t:.3f}" for t in near) + " |")


if __name__ == "__main__":
    main()
