"""The random-search baseline scored offline: N random plans evaluated with the proxy, and for
each budget the best that fits. (`search.strategy=random` runs the same idea inside the search
loop, archive and resume included; this is the lightweight form benchmarks use.)"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from amq.search.space import Plan, SearchSpace


def random_search(
    space: SearchSpace,
    evaluate: Callable[[Plan], float],
    plan_bytes: Callable[[Plan], int],
    n: int,
    caps: Sequence[int],
    seed: int,
    show_progress: bool = True,
) -> tuple[list[tuple[Plan, int, float]], dict[int, tuple[Plan, int, float] | None]]:
    """Evaluate `n` random plans spread over the memory range; return every (plan, bytes,
    divergence) and, per cap, the best one at or under it."""
    rng = np.random.default_rng(seed)
    rows = [(p, plan_bytes(p), evaluate(p)) for p in tqdm(space.random_plans(n, rng), desc="random search", disable=not show_progress)]
    best = {}
    for cap in caps:
        fits = [r for r in rows if r[1] <= cap]
        best[cap] = min(fits, key=lambda r: r[2]) if fits else None
    return rows, best
