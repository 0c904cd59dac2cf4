"""Where a plan to apply comes from: uniform bits, a search's plan JSON, or a peer allocator
(ILP, greedy) over a search's per-layer sensitivity table at a budget."""

from __future__ import annotations

import json
from pathlib import Path

from amq.config import AMQConfigError, PlanConfig
from amq.cost import CostModel
from amq.plan_document import PlanDocument
from amq.search.ilp import allocate, greedy, loss_table, repair
from amq.search.space import SearchSpace
from amq.search.ties import tie_groups


def _sensitivity_doc(path: str | Path) -> dict:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "sensitivity.json"
    if not p.is_file():
        raise AMQConfigError(f"plan.path {str(path)!r}: no sensitivity.json (give a search run dir)")
    return json.loads(p.read_text())


def run_ties(path: str | Path, names: list[str], tie: list[str] | None = None) -> tuple[tuple[int, ...], ...]:
    """Tied groups: `tie` when given, else those the search run measured with."""
    specs = tie if tie is not None else _sensitivity_doc(path).get("key", {}).get("tie", [])
    return tie_groups(names, specs)


def read_sensitivity(path: str | Path) -> dict[str, dict[int, float]]:
    """The per-layer table (layer -> bits -> divergence) from a run dir or its sensitivity.json."""
    p = Path(path).expanduser()
    doc = _sensitivity_doc(path)
    if "per_bits" not in doc:
        raise AMQConfigError(f"{p}: has no per-bit-width table (written by an older amq); run the search again")
    return {n: {int(b): float(v) for b, v in d.items()} for n, d in doc["per_bits"].items()}


def repair_to_budget(plan: dict[str, int], run_dir: Path, names: list[str], cost: CostModel, cfg: PlanConfig) -> dict[str, int]:
    """Fit a searched plan to a new budget exactly: the ILP over the run's per-layer table,
    each layer allowed one step of the choice set away from the plan (two if one is not enough)."""
    table = read_sensitivity(run_dir)
    assert cfg.budget is not None
    cost.check_budget(float(cfg.budget), cfg.budget_unit)
    cap = cost.budget_to_bytes(float(cfg.budget), cfg.budget_unit)
    space = SearchSpace(tuple(names), tuple(cost.choices), ties=run_ties(run_dir, names, cfg.tie))
    loss = loss_table(table, names, cost.choices)
    for reach in (1, 2, len(cost.choices)):
        fixed = repair(tuple(plan[n] for n in names), loss, cost.table(), cap, space, reach)
        if fixed is not None:
            return dict(zip(names, fixed, strict=True))
    raise AMQConfigError(f"no plan fits the budget {cfg.budget} {cfg.budget_unit}")


def build_plan(cfg: PlanConfig, names: list[str], cost: CostModel, fingerprint: str | None = None) -> dict[str, int]:
    """The layer -> bits plan that `cfg` describes, for a model with searchable layers `names`
    (and, when given, the architecture `fingerprint` a plan file must have been made for)."""
    if cfg.source == "none":
        return {}
    if cfg.source == "uniform":
        return {n: cfg.bits for n in names}
    if cfg.source == "file":
        plan = PlanDocument.load(str(cfg.path)).bits_for(names, cost.group_size, fingerprint, where=f"plan.path {cfg.path}")
        if cfg.budget is not None:
            plan = repair_to_budget(plan, Path(str(cfg.path)).expanduser().parent.parent, names, cost, cfg)
    else:
        table = read_sensitivity(str(cfg.path))
        if sorted(table) != sorted(names):
            raise AMQConfigError(f"plan.path {cfg.path!r}: its sensitivity table is for another model")
        missing = [b for b in cost.choices if any(b not in d for d in table.values())]
        if missing:
            raise AMQConfigError(f"the sensitivity table has no {missing} bits entries; plan.choices must match the search")
        if cfg.budget is None:
            raise AMQConfigError(f"plan={cfg.source} needs plan.budget=<bits or GB>")
        cost.check_budget(float(cfg.budget), cfg.budget_unit)
        cap = cost.budget_to_bytes(float(cfg.budget), cfg.budget_unit)
        space = SearchSpace(tuple(names), tuple(cost.choices), ties=run_ties(str(cfg.path), names, cfg.tie))
        fn = allocate if cfg.source == "ilp" else greedy
        bits = fn(loss_table(table, names, cost.choices), cost.table(), cap, space)
        if bits is None:
            raise AMQConfigError(f"no plan fits the budget {cfg.budget} {cfg.budget_unit}")
        plan = dict(zip(names, bits, strict=True))
    unknown = sorted(set(plan) - set(names))
    if unknown or len(plan) != len(names):
        raise AMQConfigError(
            f"the plan does not match the model's searchable layers (e.g. {(unknown or sorted(set(names) - set(plan)))[:2]})"
        )
    return {n: plan[n] for n in names}
