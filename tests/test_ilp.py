import itertools
import os

import numpy as np

from amq.search.ilp import allocate, greedy, repair
from amq.search.space import SearchSpace

CHOICES = (2, 3, 4)


def _problem(n_layers: int, seed: int):
    rng = np.random.default_rng(seed)
    loss = np.sort(rng.random((n_layers, 3)), axis=1)[:, ::-1].copy()  # fewer bits, more loss
    sizes = rng.integers(1, 5, n_layers) * 1000
    cost = sizes[:, None] * np.array(CHOICES)[None, :] // 8 + 16
    return loss, cost


def _brute(loss, cost, cap, space):
    best, best_plan = np.inf, None
    for plan in itertools.product(*(space.options(i) for i in range(len(space.names)))):
        j = [CHOICES.index(b) for b in plan]
        c = sum(cost[i, k] for i, k in enumerate(j))
        v = sum(loss[i, k] for i, k in enumerate(j))
        if c <= cap and v < best:
            best, best_plan = v, plan
    return best, best_plan


def _value(loss, plan):
    return sum(loss[i, CHOICES.index(b)] for i, b in enumerate(plan))


def _bytes(cost, plan):
    return sum(cost[i, CHOICES.index(b)] for i, b in enumerate(plan))


def test_allocate_is_exact_and_respects_restrictions():
    loss, cost = _problem(7, 0)
    space = SearchSpace(tuple(f"l{i}" for i in range(7)), CHOICES, {2: (4,), 5: (3, 4)})
    lo, hi = _bytes(cost, space.uniform(2)), _bytes(cost, space.uniform(4))
    for cap in np.linspace(lo, hi, 6).astype(int):
        plan = allocate(loss, cost, int(cap), space)
        best, _ = _brute(loss, cost, cap, space)
        assert plan is not None and _bytes(cost, plan) <= cap
        assert plan[2] == 4 and plan[5] in (3, 4)
        assert np.isclose(_value(loss, plan), best)
    assert allocate(loss, cost, lo - 1, space) is None


def test_greedy_fits_and_is_no_better_than_ilp():
    loss, cost = _problem(8, 1)
    space = SearchSpace(tuple(f"l{i}" for i in range(8)), CHOICES, {0: (3, 4)})
    cap = (_bytes(cost, space.uniform(2)) + _bytes(cost, space.uniform(4))) // 2
    g, ilp = greedy(loss, cost, cap, space), allocate(loss, cost, cap, space)
    assert g is not None and _bytes(cost, g) <= cap and g[0] in (3, 4)
    assert _value(loss, ilp) <= _value(loss, g) + 1e-12


def test_repair_moves_each_layer_at_most_one_step():
    loss, cost = _problem(8, 2)
    space = SearchSpace(tuple(f"l{i}" for i in range(8)), CHOICES)
    start = (4, 4, 2, 4, 3, 4, 2, 4)
    cap = _bytes(cost, start) - 600
    fixed = repair(start, loss, cost, cap, space)
    assert fixed is not None and _bytes(cost, fixed) <= cap
    assert all(abs(CHOICES.index(a) - CHOICES.index(b)) <= 1 for a, b in zip(start, fixed, strict=True))


def test_native_prints_during_the_solve_are_silenced_and_stdout_comes_back(capfd):
    """What HiGHS writes to descriptor 1 itself (its stray repair line) stays out of the output."""
    from amq.search.ilp import _native_stdout_silenced

    os.write(1, b"before\n")
    with _native_stdout_silenced():
        os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
    print("after", flush=True)
    out = capfd.readouterr().out
    assert out == "before\nafter\n"
