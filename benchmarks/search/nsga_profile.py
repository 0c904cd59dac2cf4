"""Where an NSGA-II proposal round spends its time at Llama-2-7B's 224 variables (CPU).

    python benchmarks/search/nsga_profile.py   # writes benchmarks/search/results/nsga_profile.md

A 224-layer {2,3,4} space, an RBF predictor fitted on 250 random plans (synthetic divergences:
the cost of proposing does not depend on them), 10 generations of population 100. Timed twice
side by side, with Optuna's own IntDistribution (deep-copied at every ask and tell) and with
amq's shared one, then profiled; time grouped by the package the code belongs to.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import amq.search.nsga as nsga
from amq.config import OptimizerConfig, PredictorConfig
from amq.predictor import make_predictor
from amq.search.nsga import propose
from amq.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    names = tuple(f"model.layers.{i // 7}.l{i % 7}" for i in range(224))
    space = SearchSpace(names, (2, 3, 4))
    rng = np.random.default_rng(0)
    archive = space.random_plans(250, rng)
    pred = make_predictor(PredictorConfig(name="rbf"), 0)
    pred.fit(space.encode(archive), np.array([1 / np.mean(p) ** 3 for p in archive]))
    sizes = rng.integers(1, 4, len(names))
    nbytes = lambda p: int(np.dot(sizes, p))  # noqa: E731
    window = (nbytes(space.uniform(2)), nbytes(space.uniform(4)))
    cfg = OptimizerConfig(generations=10)
    args = (space, lambda ps: pred.predict(space.encode(ps)), nbytes, window, cfg, 0)
    shared = nsga._SharedIntDistribution
    walls, outs = {}, {}
    for name, dist in (("optuna IntDistribution", nsga.IntDistribution), ("shared distribution", shared)):
        nsga._SharedIntDistribution = dist
        t = time.perf_counter()
        outs[name] = propose(*args, show_progress=False)
        walls[name] = time.perf_counter() - t
    nsga._SharedIntDistribution = shared
    same = outs["optuna IntDistribution"] == outs["shared distribution"]
    prof = cProfile.Profile()
    prof.runcall(propose, *args, show_progress=False)
    stats = pstats.Stats(prof).stats
    by_pkg: dict[str, float] = defaultdict(float)
    for (path, _, _), (_, _, tottime, _, _) in stats.items():
        pkg = "optuna" if "optuna" in path else "amq" if "/amq/" in path else "copy (deepcopy)" if path.endswith("copy.py") else "other"
        by_pkg[pkg] += tottime
    total = sum(by_pkg.values())
    lines = [
        "# NSGA-II proposal round at 224 variables: where the time goes (CPU)",
        "",
        "Command: `python benchmarks/search/nsga_profile.py`",
        "",
        f"{os.cpu_count()} CPU cores, population {cfg.population}, {cfg.generations} generations, one process, side by side:",
        "",
        "| distributions | wall s |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in walls.items()],
        "",
        f"Speedup {walls['optuna IntDistribution'] / walls['shared distribution']:.2f}x; the proposals are "
        f"{'identical' if same else 'DIFFERENT'} (same seed). (The 7B benchmark's 40 generations took 53.6 s on the GPU "
        "machine's CPU before this change, search_cost_7b.md.)",
        "",
        "Profile of the shared-distribution round:",
        "",
        "| code | share of time (own time, profiled) |",
        "|---|---|",
        *[f"| {k} | {100 * v / total:.0f}% |" for k, v in sorted(by_pkg.items(), key=lambda kv: -kv[1])],
        "",
        "`copy (deepcopy)` is called from Optuna: it deep-copies the relative search space at every ask and the whole "
        "trial at every tell. With Optuna's IntDistribution those copies were 38% of the profiled time "
        "(an earlier run of this script); the shared distribution deep-copies as itself.",
    ]
    (ROOT / "benchmarks" / "search" / "results" / "nsga_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
