"""What a search writes and logs: per-iteration records (iterations.jsonl, W&B), the uniform
baselines, the front (pareto.json), each budget's plan document (plans/) and the front plot."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from amq.config import PREDICTORS, Config
from amq.plan_document import PLAN_FORMAT, PlanBudget, PlanDocument
from amq.plotting import plot_front
from amq.rundir import read_json, write_json_atomic
from amq.search.archive import Record
from amq.search.final import BudgetChoice
from amq.search.pareto import front_records, hypervolume
from amq.search.space import SearchSpace
from amq.tracking import Tracker

if TYPE_CHECKING:
    from amq.search.loop import Prepared

log = logging.getLogger("amq.search.loop")


@dataclass
class SearchResult:
    run_dir: Path
    records: list[Record]
    front: list[Record]
    budget_plans: dict[float, Record | None]
    uniform: dict[int, float]
    predictor_metrics: dict[str, float]
    choices: list[BudgetChoice]  # each budget's candidates, ranked after the final quantizer


def iteration_records(run_dir: Path) -> dict[int, dict]:
    """iterations.jsonl by iteration: the record made when the iteration ran (a resumed run may log
    one again; a line cut mid-write is skipped)."""
    path = run_dir / "iterations.jsonl"
    out: dict[int, dict] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            row = json.loads(line)
            out.setdefault(int(row["iteration"]), row)
    return dict(sorted(out.items()))


def phase_seconds(run_dir: Path) -> float:
    """The search's own time: every phase of every iteration (model and bank included, final step not)."""
    return sum(v for row in iteration_records(run_dir).values() for k, v in row.items() if k.startswith("time/"))


def logged_iterations(run_dir: Path) -> set[int]:
    return set(iteration_records(run_dir))


def log_iteration(
    tracker: Tracker, run_dir: Path, it: int, records: list[Record], lo: int, hi: int, hv_ref, phase, pm, plot_path: Path | None
) -> None:
    """Per-iteration W&B record: archive size, hypervolume, predictor scores, phase times, front."""
    mem = [(r.bytes - lo) / max(1, hi - lo) for r in records]
    div = [r.divergence for r in records]
    hv = hypervolume(mem, div, hv_ref)
    front = front_records(records)
    metrics = {"archive/size": len(records), "search/hypervolume": hv, "search/front_size": len(front), "iteration": it}
    metrics.update({f"predictor/{k}": v for k, v in pm.items()})
    metrics.update({f"time/{k}": v for k, v in phase.items()})
    tracker.log(metrics, step=it)
    with (run_dir / "iterations.jsonl").open("a") as f:  # the same numbers, readable without W&B (last line of an iteration wins)
        f.write(json.dumps({**metrics, "front_sources": sorted({r.source for r in front})}) + "\n")
    tracker.table(
        "search/front",
        ["avg_bits", "bytes", "divergence", "iteration", "source"],
        [[r.avg_bits, r.bytes, r.divergence, r.iteration, r.source] for r in front],
        step=it,
    )
    if plot_path is not None:
        fb, fd = [r.avg_bits for r in front], [r.divergence for r in front]
        plot_front(plot_path, [r.avg_bits for r in records], div, fb, fd, {}, [], f"iteration {it}: {len(records)} evaluated plans")
        tracker.image("search/front_plot", plot_path, step=it)
    tau = pm.get("kendall_tau")
    log.info(
        "iteration %d: archive %d, front %d, hypervolume %.4f%s",
        it,
        len(records),
        len(front),
        hv,
        f", predictor {PREDICTORS[int(pm['choice'])]} cross-validated tau {tau:.3f} rmse {pm['rmse']:.2e}" if tau is not None else "",
    )


def uniform_baselines(run_dir: Path, cfg: Config, names: list[str], evaluate) -> dict[int, float]:
    """Every layer (pruned ones too) at one bit-width: the peers' plain baseline; cached."""
    path = run_dir / "baselines.json"
    if path.exists():
        data = read_json(path, "uniform plans' divergences")
        if sorted(int(k) for k in data) == sorted(cfg.bits.choices):
            return {int(k): float(v) for k, v in data.items()}
    out = {b: evaluate(tuple([b] * len(names)))[0] for b in cfg.bits.choices}
    write_json_atomic(path, {str(b): v for b, v in out.items()})
    return out


def plan_document(cfg: Config, prep: Prepared, names: list[str], rec: Record, predicted: float | None, **extra) -> PlanDocument:
    """A searched plan as saved: the measured record with the settings it was measured with."""
    return PlanDocument(
        model=prep.model_path,
        model_fingerprint=prep.fingerprint,
        layers=dict(zip(names, rec.plan, strict=True)),
        group_size=cfg.bits.group_size,
        choices=list(cfg.bits.choices),
        source=rec.source,
        avg_bits=rec.avg_bits,
        bytes=rec.bytes,
        model_gb=prep.cost.model_gb(rec.plan),
        divergence=rec.divergence,
        predicted_divergence=predicted,
        search={
            "proxy": cfg.proxy.name,
            "metric": cfg.search.metric,
            "metric_context": {"seq_len": cfg.data.seq_len, "samples": cfg.data.num_samples},
            "tie": list(cfg.search.tie),
        },
        **extra,
    )


def write_outputs(
    cfg, run_dir, prep: Prepared, space: SearchSpace, records, choices: list[BudgetChoice], predictor, uniform, pm
) -> SearchResult:
    cost = prep.cost
    names = list(space.names)
    front = front_records(records)
    pred = predictor.predict(space.encode([r.plan for r in front])) if front else []
    docs = [plan_document(cfg, prep, names, r, float(p)).to_json() for r, p in zip(front, pred, strict=True)]
    write_json_atomic(run_dir / "pareto.json", {"format": PLAN_FORMAT, "predictor": pm, "front": docs})

    plans_dir = run_dir / "plans"
    plans_dir.mkdir(exist_ok=True)
    chosen: dict[float, Record | None] = {}
    by_plan = {r.plan: r for r in records}
    for ch in choices:
        best = ch.best
        if best is None:
            chosen[ch.budget] = None
            continue
        source = "+".join(best.sources)
        rec = by_plan.get(best.plan) or Record(best.plan, best.proxy, best.bytes, best.avg_bits, -1, source, -1, 0.0)
        chosen[ch.budget] = rec
        doc = plan_document(
            cfg,
            prep,
            names,
            rec,
            float(predictor.predict(space.encode([best.plan]))[0]),
            budget=PlanBudget(value=ch.budget, unit=cfg.search.budget_unit, bytes=ch.cap),
            chosen_by={
                "method": cfg.final.method,
                "sources": best.sources,
                "divergence": best.final,
                "competitors": len(ch.candidates) - 1,
                "data": "held-out calibration windows" if cfg.final.method != "none" else "the search's calibration windows",
            },
        )
        doc.save(plans_dir / f"{ch.budget:g}{cfg.search.budget_unit}.json")

    full = {b: (cost.avg_bits([b] * len(names)), d) for b, d in uniform.items()}
    plot_front(
        run_dir / "front.png",
        [r.avg_bits for r in records],
        [r.divergence for r in records],
        [r.avg_bits for r in front],
        [r.divergence for r in front],
        full,
        list(cfg.search.budgets) if cfg.search.budget_unit == "bits" else [],
        f"{cfg.model.name}: {len(records)} evaluated plans, {cfg.search.metric.upper()} on {cfg.data.num_samples}x{cfg.data.seq_len} tokens",
    )
    return SearchResult(run_dir, records, front, chosen, uniform, pm, choices)


def flat_config(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
