"""`python -m amq.plan run_dir=DIR budget=2.75 [unit=bits|gb]`: a plan for a new memory target
from a finished search, in seconds, with no new evaluation.

Candidates: every evaluated plan that fits (the best is the measured front's), and the
exact-budget ILP on the per-layer table refitted to the archive (`fit_additive`), plus an ILP
repair of the best fitting front plan to use the whole budget. The archive-refitted table
ranks them; the chosen plan is written to DIR/plans/<budget><unit>.json like the search's own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from amq.config import AMQConfigError
from amq.cost import build_cost_model
from amq.models import load_config, shapes_from_config
from amq.plan_document import PlanDocument, schema_json
from amq.plan_sources import read_sensitivity
from amq.rundir import read_json
from amq.search.ilp import allocate, fit_additive, loss_table, repair
from amq.search.space import SearchSpace
from amq.search.ties import tie_groups


def replan(run_dir: Path, budget: float, unit: str = "bits") -> PlanDocument:
    """The plan document for `budget`, chosen among measured and ILP plans by the refitted table."""
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
    cost.check_budget(budget, unit)
    cap = cost.budget_to_bytes(budget, unit)

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
    fits = [p for p in plans if cost.plan_bytes(p) <= cap]
    candidates: dict[tuple, str] = {p: "archive" for p in fits}
    layer_cost = cost.table()
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
            "budget": {"value": budget, "unit": unit, "bytes": cap},
            "chosen_by": None,
        },
        "amq.plan",
    )


def parse(argv: list[str]) -> dict[str, str]:
    """key=value arguments, as Hydra users type them; --help prints usage (exit 0), bad ones exit 2."""
    ap = argparse.ArgumentParser(prog="python -m amq.plan", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("args", nargs="*", metavar="key=value", help="run_dir=<search run dir> budget=<number> [unit=bits|gb]")
    ap.add_argument("--schema", action="store_true", help="print the plan document's JSON schema and exit")
    ns = ap.parse_args(argv)
    if ns.schema:
        print(schema_json())
        raise SystemExit(0)
    args = dict(a.partition("=")[::2] for a in ns.args)
    unknown = sorted(set(args) - {"run_dir", "budget", "unit"})
    if unknown:
        ap.error(f"unknown argument(s) {', '.join(unknown)}; expected run_dir=, budget= and unit=")
    if "run_dir" not in args or "budget" not in args:
        ap.error("run_dir=<search run dir> and budget=<number> are required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    try:
        unit = args.get("unit", "bits")
        if unit not in ("bits", "gb"):
            raise AMQConfigError(f"unit must be bits or gb, got {unit!r}")
        doc = replan(Path(args["run_dir"]), float(args["budget"]), unit)
    except (AMQConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args["run_dir"]) / "plans" / f"{float(args['budget']):g}{unit}.json"
    out.parent.mkdir(exist_ok=True)
    doc.save(out)
    measured = f"measured {doc.divergence:.4g}" if doc.divergence is not None else f"estimated {doc.predicted_divergence:.4g}"
    print(f"{out}: {doc.avg_bits:.3f} bits, {doc.model_gb:.4f} GB, divergence {measured} ({doc.source}), {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
