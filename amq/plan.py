"""`python -m amq.plan run_dir=DIR budget=2.75 [unit=bits|gb]`: a plan for a new memory target
from a finished search, in seconds, with no new evaluation; or for a speed target
(`unit=tok_s|us latency=measure`: our kernels' time per layer on this GPU, amq.latency).

Candidates: every evaluated plan that fits (the best is the measured front's), and the
exact-budget ILP on the per-layer table refitted to the archive (`fit_additive`), plus an ILP
repair of the best fitting front plan to use the whole budget. The archive-refitted table
ranks them; the chosen plan is written to DIR/plans/<budget><unit>.json like the search's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from amq.config import AMQConfigError
from amq.cost import build_cost_model
from amq.latency import UNITS, LatencyTable, budget_to_ns, cost_table_ns
from amq.models import load_config, shapes_from_config
from amq.plan_document import PlanDocument
from amq.plan_sources import read_sensitivity
from amq.rundir import read_json
from amq.search.ilp import allocate, fit_additive, loss_table, repair
from amq.search.space import SearchSpace
from amq.search.ties import tie_groups


def replan(run_dir: Path, budget: float, unit: str = "bits", latency: LatencyTable | None = None, overhead_us: float = 0.0) -> PlanDocument:
    """The plan document for `budget`, chosen among measured and ILP plans by the refitted table.
    Speed units (us, tok_s) cost each layer by `latency` (nanoseconds a call) instead of bytes;
    `overhead_us`: the rest of a decode step, for tok_s."""
    front_path, archive_path = run_dir / "pareto.json", run_dir / "archive.jsonl"
    if not front_path.is_file() or not archive_path.is_file():
        raise AMQConfigError(f"run_dir {str(run_dir)!r}: no finished search there (pareto.json, archive.jsonl)")
    front = read_json(front_path, "the search's front").get("front")
    if not isinstance(front, list):
        raise AMQConfigError(f"{front_path}: has no 'front' list; not a search's pareto.json")
    if not front:
        raise AMQConfigError(f"{front_path}: the front is empty")
    first = PlanDocument.from_json(front[0], f"{front_path} (front[0])")
    names = list(first.layers)
    choices = tuple(first.choices)
    layers, total = shapes_from_config(load_config(first.model))
    cost = build_cost_model(layers, choices, first.group_size, total)
    if unit in UNITS:  # speed: nanoseconds of our GEMMs a decode step, by the latency table
        if latency is None:
            raise AMQConfigError(f"unit={unit} needs a latency table (latency=measure, or a table's path)")
        layer_cost = cost_table_ns(latency, layers, choices)
        cap = budget_to_ns(budget, unit, overhead_us)
        gpu = latency.device
        fastest = int(layer_cost.min(axis=1).sum())
        if fastest > cap:
            raise AMQConfigError(
                f"budget {budget:g} {unit} is out of reach on {latency.device}: the fastest plan's GEMMs take {fastest / 1000:.1f} us a step"
                + (f" ({1e6 / (fastest / 1000 + overhead_us):.0f} tok/s with overhead_us={overhead_us:g})" if unit == "tok_s" else "")
            )
    else:
        cost.check_budget(budget, unit)
        cap = cost.budget_to_bytes(budget, unit)
        layer_cost = cost.table()
        gpu = None

    def plan_cost(p: tuple) -> int:
        return int(sum(layer_cost[i, choices.index(b)] for i, b in enumerate(p)))

    try:
        rows = [json.loads(line) for line in archive_path.read_text().splitlines() if line.strip()]
        plans = [tuple(r["plan"]) for r in rows]
        _ = [float(r["divergence"]) for r in rows]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise AMQConfigError(f"{archive_path}: not the archive of a search (JSON lines with plan and divergence)") from None
    if len(rows) < 2:
        raise AMQConfigError(f"{archive_path}: {len(rows)} evaluated plans; a plan for a new budget needs the search's archive")
    table = fit_additive(plans, np.array([r["divergence"] for r in rows]), loss_table(read_sensitivity(run_dir), names, choices), choices)
    space = SearchSpace(tuple(names), choices, ties=tie_groups(names, first.search.get("tie", [])))
    measured = {tuple(r["plan"]): r["divergence"] for r in rows}
    fits = [p for p in plans if plan_cost(p) <= cap]
    candidates: dict[tuple, str] = {p: "archive" for p in fits}
    ilp = allocate(table, layer_cost, cap, space)
    if ilp is not None:
        candidates.setdefault(ilp, "ilp")
    if fits:
        best = min(fits, key=measured.__getitem__)
        fixed = repair(best, table, layer_cost, cap, space)
        if fixed is not None:
            candidates.setdefault(fixed, "repair")
    if not candidates:
        raise AMQConfigError(f"no plan fits {budget:g} {unit}")

    def estimate(p: tuple) -> float:  # measured where measured, else the refitted table's sum
        return measured.get(p, float(sum(table[i, choices.index(b)] for i, b in enumerate(p))))

    plan = min(candidates, key=estimate)
    return PlanDocument.from_json(
        {
            **first.to_json(),
            "layers": dict(zip(names, plan, strict=True)),
            "source": f"amq.plan:{candidates[plan]}",
            "avg_bits": cost.avg_bits(plan),
            "bytes": cost.plan_bytes(plan),
            "model_gb": cost.model_gb(plan),
            "divergence": measured.get(plan),
            "predicted_divergence": estimate(plan),
            "budget": {"value": budget, "unit": unit, "bytes": cap}
            if unit not in UNITS
            else {"value": budget, "unit": unit, "step_us": plan_cost(plan) / 1000, "device": gpu},
            "chosen_by": None,
        },
        "amq.plan",
    )


if __name__ == "__main__":  # python -m amq.plan: the command line lives in amq.cli.plan
    import runpy

    runpy.run_module("amq.cli.plan", run_name="__main__")
