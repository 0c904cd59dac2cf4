"""benchmarks/search/results/search_cost.md from the phase timings of benchmarks/search_cost_7b.py.

    python benchmarks/search/search_cost_7b.py --model llama2_7b --out benchmarks/search/results/search_cost_7b.md   # on the GPU
    python benchmarks/search/search_cost_report.py                                                    # here

Projects the wall time of a full search from measured per-phase times, for AMQ's published
search settings and for ours, at every calibration size the benchmark timed.
"""

from __future__ import annotations

import json
from pathlib import Path

from amq.config import SearchConfig

HERE = Path(__file__).resolve().parent
AMQ = {"initial": 250, "iterations": 200, "candidates": 50}  # github.com/dlwns147/amq scripts/amq_search.sh


def main() -> None:
    r = json.loads((HERE / "results" / "search_cost_7b.json").read_text())
    phases = {p["phase"]: p for p in r["phases"]}
    setup = sum(p["seconds"] for name, p in phases.items() if name.startswith(("build", "proxy bank")))
    fit = phases["predictor fit (rbf, 250 plans)"]["seconds"]
    nsga = next(p["seconds"] for name, p in phases.items() if name.startswith("NSGA-II"))
    per_eval = {"128x2048": r["eval_s"], **r["small"]}
    ours = SearchConfig()
    n_layers = r["layers"]
    plans = {
        "AMQ's settings": (AMQ["initial"] + AMQ["iterations"] * AMQ["candidates"], n_layers, AMQ["iterations"]),
        "ours (defaults)": (
            ours.initial_random + 3 + len(ours.budgets) + ours.ilp_seeds + ours.iterations * ours.candidates,
            3 * n_layers,
            ours.iterations,
        ),
        "ours, `search.sensitivity_bits=lowest`": (
            ours.initial_random + 3 + len(ours.budgets) + ours.ilp_seeds + ours.iterations * ours.candidates,
            n_layers,
            ours.iterations,
        ),
    }
    lines = [
        "# Search cost at Llama-2-7B scale",
        "",
        "Measured with `python benchmarks/search/search_cost_7b.py --model llama2_7b --out benchmarks/search/results/search_cost_7b.md` on the GPU "
        f"({r['device']}), projected with `python benchmarks/search/search_cost_report.py` (this file). Phase table: "
        "[search_cost_7b.md](search_cost_7b.md); raw numbers: search_cost_7b.json.",
        "",
        f"Model: Llama-2-7B shape ({r['params'] / 1e9:.2f} B parameters, {n_layers} searchable layers), random non-zero "
        f"weights, fp16; proxy bank HQQ {{2,3,4}} bits group 128, `codes` layout ({r['bank_gb']:.1f} GB on the GPU); "
        f"peak GPU memory of the whole run {max(p['gpu_peak_gb'] for p in r['phases']):.1f} GB: 7B fits one 80 GB GPU with "
        "the reference log-probs of 128 x 2048 tokens kept on it. 13B/70B: see memory_plan.md (codes bank on the GPU or "
        "in pinned host memory, `proxy.bank_device=cpu`).",
        "",
        "Per-candidate evaluation (swap the plan in from the GPU-resident bank, one forward pass, JSD against cached "
        "reference log-probs, one host sync):",
        "",
        "| calibration (samples x tokens) | seconds per candidate |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in per_eval.items()],
        "",
        f"Fixed costs: model + bank {setup:.0f} s; per iteration: predictor fit (rbf) {fit:.2f} s, NSGA-II round {nsga:.1f} s "
        "(224 variables, population 100 x 40 generations; CPU-bound).",
        "",
        "Projected wall time of a full search (evaluations x measured seconds + fixed costs):",
        "",
        "| search | real evaluations | sensitivity evaluations | " + " | ".join(f"hours at {k}" for k in per_eval) + " |",
        "|---|---|---|" + "---|" * len(per_eval),
    ]
    for name, (n_eval, n_sens, iters) in plans.items():
        hours = [(setup + (n_eval + n_sens) * s + iters * (fit + nsga)) / 3600 for s in per_eval.values()]
        lines.append(f"| {name} | {n_eval} | {n_sens} | " + " | ".join(f"{h:.2f}" for h in hours) + " |")
    n_amq = plans["AMQ's settings"][0]
    amq_h = (setup + (plans["AMQ's settings"][0] + n_layers) * r["eval_s"] + AMQ["iterations"] * (fit + nsga)) / 3600
    our_h = (setup + sum(plans["ours (defaults)"][:2]) * r["eval_s"] + ours.iterations * (fit + nsga)) / 3600
    lines += [
        "",
        f"At equal calibration (128 x 2048) and on the same GPU, our default search projects to {our_h:.2f} h against "
        f"{amq_h:.1f} h for AMQ's published search settings ({our_h / amq_h:.1%}): the per-evaluation cost is the same "
        f"(one forward pass either way); the difference is how many plans are evaluated: {plans['ours (defaults)'][0]} "
        f"instead of {n_amq} ({n_amq / plans['ours (defaults)'][0]:.0f}x fewer), "
        "because ILP seeds, the per-iteration ILP on the refitted table and local swaps do what many NSGA-II rounds did. "
        "On the 17M model a search of this size beats random search, uniform plans, ILP and greedy (search_17m_*.md, "
        "quantize_17m_ctx512.md); whether so few evaluations suffice at 7B is not measured here (no 7B weights). "
        "Measuring sensitivity at the lowest bit-width only and estimating the other columns from the proxy's weight "
        "error (`search.sensitivity_bits=lowest`, default in the Llama-2 experiments) halves it again; on the 17M model "
        "the estimated columns rank layers as the measured ones do (sensitivity_lowest_17m.md).",
        "",
        "What the AMQ paper itself reports for its Llama-2-7B search time could not be read in this workplace (no internet; "
        "the stored copy of the paper holds only its first page). A third-party measurement of AMQ's public code on "
        "Llama-2-7B (the DartMQ project's README, RTX 3090, calibration size not stated) gives 21,078 s in all, 20,516 s "
        "of it the search. Compare with care: different GPU, unknown calibration size.",
    ]
    (HERE / "results" / "search_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
