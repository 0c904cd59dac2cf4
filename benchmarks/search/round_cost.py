"""Issue 19: one search iteration's CPU work at 7B and 13B (predictor fit + NSGA-II round), timed alone.

    python benchmarks/search/round_cost.py > benchmarks/search/results/logs/round_cost_h200.log   # on the GPU machine

The fit (rbf, the default's first candidate) and the proposal round of `search_cost_7b.py`, on the same
synthetic 250-plan archive and the model's layer shapes (no weights, no GPU), with the experiment's
optimizer settings; best of 3. `one_gpu_projection.py` takes the round from this log where present: the
round runs on the CPU, whose speed differs from one GPU machine to the next (12.7 and 26.2 s for the same
7B round in two search_cost_7b.py runs).
"""

from __future__ import annotations

from one_gpu_projection import experiment, nsga_round_seconds
from search_cost_7b import build_model_meta

if __name__ == "__main__":
    for model in ("llama2_7b", "llama2_13b"):
        meta, cfg = build_model_meta(model), experiment(model)
        best = min(nsga_round_seconds(meta, cfg) for _ in range(3))
        print(f"{model}: predictor fit + NSGA-II round: {best:.2f} s", flush=True)
