import numpy as np
import pytest

from amq.search.sensitivity import prune
from amq.search.space import SearchSpace

NAMES = tuple(f"l{i}" for i in range(6))
SENS = {"l0": 1.0, "l1": 1.1, "l2": 9.0, "l3": 0.9, "l4": 5.0, "l5": 1.0}


def test_prune_highest_fixes_sensitive_layers_most_sensitive_first():
    restricted = prune(SENS, NAMES, 2.0, (2, 3, 4), "highest")
    assert restricted == {2: (4,), 4: (4,)}
    space = SearchSpace(NAMES, (2, 3, 4), restricted)
    assert space.free == [0, 1, 3, 5]
    assert space.uniform(2) == (2, 2, 4, 2, 4, 2)
    assert abs(space.log10_size() - 4 * np.log10(3)) < 1e-9


def test_prune_no_lowest_keeps_the_uniform_middle_plan_reachable():
    restricted = prune(SENS, NAMES, 2.0, (2, 3, 4), "no_lowest")
    space = SearchSpace(NAMES, (2, 3, 4), restricted)
    assert space.uniform(3) == (3,) * 6 and space.uniform(2) == (2, 2, 3, 2, 3, 2)
    plans = space.random_plans(200, np.random.default_rng(0))
    assert all(p[2] in (3, 4) and p[4] in (3, 4) for p in plans)
    assert {p[0] for p in plans} == {2, 3, 4}


def test_prune_stops_when_a_budget_would_become_unreachable():
    restricted = prune(SENS, NAMES, 2.0, (2, 3, 4), "highest", allowed=lambda r: len(r) <= 1)
    assert restricted == {2: (4,)}  # the most sensitive one only


def test_pick_spread_serves_each_budget_from_below():
    from amq.search.nsga import pick_spread

    # (plan, predicted divergence, bytes): the best predictions sit just above the budget of 100
    points = [((i,), 1.0 / b, b) for i, b in enumerate(range(60, 141, 2))]
    picks = pick_spread(points, 4, (60, 140), set(), caps=[100])
    by_plan = {p[0]: p[2] for p in points}
    assert by_plan[picks[0]] == 100  # the cap's pick fits under it
    assert len(picks) == 4 and len(set(picks)) == 4


def test_swap_neighbours_stay_under_the_cap_and_differ_by_one_step_in_two_layers():
    from amq.search.local import local_moves, swap_neighbours

    space = SearchSpace(tuple(f"l{i}" for i in range(6)), (2, 3, 4), {0: (4,)})
    sizes = [1, 1, 2, 2, 3, 3]
    nbytes = lambda p: sum(b * s for b, s in zip(p, sizes, strict=True))  # noqa: E731
    plan = (4, 3, 3, 2, 4, 3)
    cap = nbytes(plan) + 1
    nbrs = swap_neighbours(space, plan, nbytes, cap)
    assert nbrs and len(set(nbrs)) == len(nbrs)
    for n in nbrs:
        assert nbytes(n) <= cap and n[0] == 4  # the fixed layer never moves
        diff = [b - a for a, b in zip(plan, n, strict=True) if a != b]
        assert sorted(diff) in ([1], [-1, 1])
    # layer 1 up (+1 byte) alone fits; layer 5 up (+3) needs a layer of size >= 2 down
    assert (4, 4, 3, 2, 4, 3) in nbrs and (4, 3, 3, 2, 4, 4) not in nbrs and (4, 3, 2, 2, 4, 4) in nbrs

    # ranked by the predictor; known plans are skipped
    predict = lambda plans: np.array([-sum(p[1:3]) for p in plans], dtype=float)  # noqa: E731
    picks = local_moves(space, {cap: plan}, predict, nbytes, {(4, 4, 3, 2, 4, 3)}, 2)
    assert len(picks) == 2 and (4, 4, 3, 2, 4, 3) not in picks
    assert all(sum(p[1:3]) == 7 for p in picks)


def _respects(space, plan):
    """Every layer within its options and tied layers equal."""
    return all(plan[i] in space.options(i) for i in range(len(space.names))) and all(len({plan[j] for j in g}) == 1 for g in space.ties)


def test_tied_layers_move_together_everywhere():
    from amq.search.ilp import allocate, greedy
    from amq.search.local import swap_neighbours
    from amq.search.ties import tie_groups

    names = tuple(
        f"model.layers.{b}.{m}" for b in range(2) for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.up_proj")
    )
    ties = tie_groups(names, ["qkv"])
    assert ties == ((0, 1, 2), (4, 5, 6))
    space = SearchSpace(names, (2, 3, 4), {1: (3, 4)}, ties)
    assert space.free == [0, 3, 4, 7] and space.options(2) == (3, 4) and space.options(5) == (2, 3, 4)
    assert space.units == [(0, 1, 2), (3,), (4, 5, 6), (7,)]
    assert abs(space.log10_size() - (np.log10(2) + 3 * np.log10(3))) < 1e-12
    rng = np.random.default_rng(0)
    plans = [*space.random_plans(50, rng), space.make([3, 2, 4, 2])]
    assert all(_respects(space, p) for p in plans)

    sizes = np.array([1, 1, 1, 4, 1, 1, 1, 4])
    cost = np.outer(sizes, [2, 3, 4])
    loss = rng.random((8, 3)) * np.array([3.0, 1.0, 0.2])  # lower bits lose more
    for cap in (31, 36, 44):
        for fn in (allocate, greedy):
            plan = fn(loss, cost, cap, space)
            assert plan is not None and _respects(space, plan) and (cost[np.arange(8), [b - 2 for b in plan]].sum() <= cap)
    nbytes = lambda p: int(sum(s * b for s, b in zip(sizes, p, strict=True)))  # noqa: E731
    base = space.make([3, 2, 3, 2])
    assert all(_respects(space, p) for p in swap_neighbours(space, base, nbytes, nbytes(base) + 3))
    assert tie_groups(names, ["q_proj+k_proj"]) == ((0, 1), (4, 5))


@pytest.mark.parametrize(
    ("spec", "message"), [(["qkv", "q_proj+k_proj"], "overlaps"), (["nope"], "not one of"), (["gate_up"], "no module")]
)
def test_bad_tie_specs_say_what_is_wrong(spec, message):
    from amq.config import AMQConfigError
    from amq.search.ties import tie_groups

    names = ("m.0.self_attn.q_proj", "m.0.self_attn.k_proj", "m.0.self_attn.v_proj")
    with pytest.raises(AMQConfigError, match=message):
        tie_groups(names, spec)


def test_lowest_only_sensitivity_measures_a_third_and_estimates_the_rest(tmp_path):
    import json

    from amq.search.sensitivity import load_or_measure

    names = ["a", "b", "c"]
    calls = []

    def apply(plan):
        calls.append(tuple(plan))

    def score():
        return float(sum(b for b in calls[-1] if b != 16))  # any number that depends on the plan

    est = lambda name, bits, low: low / bits  # noqa: E731
    table = load_or_measure(tmp_path / "s.json", {"k": 1}, names, (2, 3, 4), apply, score, show_progress=False, estimate=est)
    measured = [c for c in calls if any(b != 16 for b in c)]
    assert len(measured) == len(names) and all(sorted(c) == [2, 16, 16] for c in measured)
    assert table["a"] == {2: 2.0, 3: 2.0 / 3, 4: 0.5}
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["estimated_bits"] == [3, 4] and doc["per_bits"]["b"]["4"] == 0.5


def test_nsga_generations_improve_the_predicted_front_and_keep_the_seeds():
    from amq.config import OptimizerConfig
    from amq.search.nsga import propose

    space = SearchSpace(tuple(f"l{i}" for i in range(24)), (2, 3, 4), {0: (4,)})
    weights = np.linspace(0.2, 3.0, 24)
    sizes = np.arange(1, 25)
    predict = lambda plans: np.array([float(np.dot(weights, (4 - np.array(p)) ** 2)) for p in plans])  # noqa: E731
    nbytes = lambda p: int(np.dot(sizes, p))  # noqa: E731
    window = (nbytes(space.uniform(2)), nbytes(space.uniform(4)))
    cap = nbytes(space.uniform(3))
    seed_plan = space.uniform(3)

    def best_under_cap(generations: int, seeds: list | None = None) -> tuple[float, list]:
        cfg = OptimizerConfig(population=24, generations=generations)
        points = propose(space, predict, nbytes, window, cfg, seed=0, seeds=seeds, show_progress=False)
        assert all(window[0] <= b <= window[1] and p[0] == 4 for p, _, b in points)  # feasible, the fixed layer kept
        return min(d for _, d, b in points if b <= cap), points

    assert seed_plan in {p for p, _, _ in best_under_cap(1, [seed_plan])[1]}  # a seed is a member of the first generation
    first = best_under_cap(1)[0]
    later, points = best_under_cap(12)
    assert later < 0.8 * first  # selection and crossover find better plans than the first (random) population
    assert best_under_cap(12)[1] == points  # one seed, one answer
