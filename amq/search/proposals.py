"""Where each iteration's plans come from: ILP seeds and refits on the per-layer table,
predictor-ranked local moves, NSGA-II on the predictor, and the random-search baseline's picks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from amq.config import Config
from amq.cost import CostModel
from amq.predictor import make_predictor
from amq.search.archive import Record
from amq.search.ilp import allocate, fit_additive
from amq.search.local import local_moves
from amq.search.nsga import pick_spread, propose
from amq.search.pareto import front_records
from amq.search.space import Plan, SearchSpace


def propose_candidates(
    cfg: Config,
    space: SearchSpace,
    predictor,
    trusted: bool,
    records: list[Record],
    known: set[Plan],
    loss: np.ndarray,
    cost: CostModel,
    budgets_bytes: dict[float, int],
    window: tuple[int, int],
    it: int,
    show_progress: bool,
) -> list[tuple[str, list[Plan]]]:
    """One iteration's plans to evaluate, by source: the ILP on the per-layer table refitted to
    the archive, predictor-ranked local moves around each budget's best plan, and NSGA-II's
    front on the predictor thinned to what is left of `search.candidates`. A predictor that is
    not `trusted` proposes nothing: the refitted table ranks the local moves, which take every
    place the refit leaves."""
    if not trusted:
        predictor = make_predictor(replace(cfg.predictor, name="additive"), cfg.seed + it, space, loss)
        predictor.fit(space.encode([r.plan for r in records]), np.array([r.divergence for r in records]))

    def predict(plans):
        return predictor.predict(space.encode(plans))

    refit = ilp_refit(space, records, loss, cost, budgets_bytes, known) if cfg.search.ilp_refit else []
    best = best_under(records, budgets_bytes)
    room = max(0, cfg.search.candidates - len(refit))
    # every budget gets the same share; NSGA-II keeps at least half of what refit leaves
    per_budget = min(cfg.search.local_moves, room // 2 // max(1, len(best))) if trusted else -(-room // max(1, len(best)))
    local = local_moves(space, best, predict, cost.plan_bytes, known | set(refit), per_budget)
    if not trusted:
        return [("ilp-refit", refit), ("local", local[:room])]
    seeds = [r.plan for r in front_records(records)]
    points = propose(space, predict, cost.plan_bytes, window, cfg.optimizer, seed=cfg.seed + it, seeds=seeds, show_progress=show_progress)
    taken = known | set(refit) | set(local)
    n_picks = max(0, cfg.search.candidates - len(refit) - len(local))
    picks = pick_spread(points, n_picks, window, taken, list(budgets_bytes.values()))
    return [("ilp-refit", refit), ("local", local), ("nsga2", picks)]


def ilp_seeds(space: SearchSpace, loss: np.ndarray, cost: CostModel, budgets_bytes: dict, window: tuple[int, int], n: int) -> list[Plan]:
    """Integer-programming plans (summed per-layer loss, exact budget) at every budget and at
    `n` caps spread over the window: the peers' best guess, which the search must improve on."""
    if n <= 0:
        return []
    caps = sorted({*budgets_bytes.values(), *np.linspace(window[0], window[1], n).astype(int).tolist()})
    table = cost.table()
    plans = [allocate(loss, table, cap, space) for cap in caps]
    return list(dict.fromkeys(p for p in plans if p is not None))


def ilp_refit(space: SearchSpace, records: list[Record], loss: np.ndarray, cost: CostModel, budgets_bytes: dict, known: set) -> list[Plan]:
    """Exact-budget ILP on the per-layer table refitted to the archive: one new plan per budget
    (if it is not already evaluated). Complements NSGA-II, which explores; this exploits."""
    if len(records) < 8:
        return []
    table = fit_additive([r.plan for r in records], np.array([r.divergence for r in records]), loss, space.choices)
    layer_cost = cost.table()
    out: list[Plan] = []
    for cap in budgets_bytes.values():
        plan = allocate(table, layer_cost, cap, space)
        if plan is not None and plan not in known and plan not in out:
            out.append(plan)
    return out


def random_in_window(space: SearchSpace, cost: CostModel, window: tuple[int, int], known: set, k: int, seed: int) -> list[Plan]:
    """The random-search baseline's proposals: fresh random plans inside the memory window."""
    rng = np.random.default_rng(seed)
    out: list[Plan] = []
    for _ in range(100):
        for plan in space.random_plans(8 * k, rng):
            if window[0] <= cost.plan_bytes(plan) <= window[1] and plan not in known and plan not in out:
                out.append(plan)
        if len(out) >= k:
            break
    return out[:k]


def best_under(records: list[Record], budgets_bytes: dict[float, int]) -> dict[int, Plan]:
    """Budget cap (bytes) -> the lowest-divergence evaluated plan that fits under it."""
    out: dict[int, Plan] = {}
    for cap in budgets_bytes.values():
        fits = [r for r in records if r.bytes <= cap]
        if fits:
            out[cap] = min(fits, key=lambda r: r.divergence).plan
    return out


def search_window(cost: CostModel, budgets_bytes: dict[float, int], lo: int, hi: int) -> tuple[int, int]:
    """Memory range NSGA-II proposes in: the budgets widened by a quarter bit, within the space."""
    quarter_bit = int(cost.numel.sum() / 32)
    vals = list(budgets_bytes.values())
    return max(lo, min(vals) - quarter_bit), min(hi, max(vals) + quarter_bit)
