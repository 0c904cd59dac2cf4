"""Local moves around the best plan at each budget: trade bits between two layers.

The ILP seeds are optimal for the summed per-layer table; what is left to find near a budget
lies in how layers interact, which only real evaluations show. Each iteration the predictor
(fitted on the whole archive, so it sees interactions) ranks every one-step swap of the best
in-budget plan: one layer up a bit-width, another down one, still under the budget.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from amq.search.space import Plan, SearchSpace


def swap_neighbours(space: SearchSpace, plan: Plan, plan_bytes: Callable[[Plan], int], cap: int) -> list[Plan]:
    """Every plan one step up in one layer (or tied group) and one step down in another (or one
    step up alone), whose memory stays at or under `cap`."""
    ups, downs = [], []
    for i in space.free:
        opts = space.options(i)
        k = opts.index(plan[i])
        if k + 1 < len(opts):
            ups.append((i, opts[k + 1]))
        if k > 0:
            downs.append((i, opts[k - 1]))
    out: list[Plan] = []
    for i, hi in ups:
        raised = space.with_bits(plan, i, hi)
        if plan_bytes(raised) <= cap:
            out.append(raised)
        for j, lo in downs:
            if j == i:
                continue
            cand = space.with_bits(raised, j, lo)
            if plan_bytes(cand) <= cap:
                out.append(cand)
    return out


def local_moves(
    space: SearchSpace,
    best: dict[int, Plan],
    predict: Callable[[list[Plan]], np.ndarray],
    plan_bytes: Callable[[Plan], int],
    known: set[Plan],
    per_budget: int,
) -> list[Plan]:
    """For each budget cap -> its best evaluated plan, the `per_budget` unevaluated swaps the
    predictor rates best."""
    out: list[Plan] = []
    for cap, plan in best.items():
        cands = [p for p in swap_neighbours(space, plan, plan_bytes, cap) if p not in known and p not in out]
        if not cands or per_budget <= 0:
            continue
        order = np.argsort(predict(cands), kind="stable")
        out.extend(cands[i] for i in order[:per_budget])
    return out
