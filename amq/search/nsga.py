"""NSGA-II over the predictor (Optuna's NSGAIISampler, a generation at a time).

Objectives: predicted divergence and plan bytes, both minimized; plans outside the memory
window of interest are marked infeasible through a trial constraint. Each free layer is an
ordinal integer parameter (index into the choice set), so Optuna's crossovers see an order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.samplers import NSGAIISampler
from optuna.samplers.nsgaii import (
    BLXAlphaCrossover,
    SBXCrossover,
    SPXCrossover,
    UNDXCrossover,
    UniformCrossover,
    VSBXCrossover,
)
from optuna.trial import TrialState, create_trial
from tqdm import tqdm

from amq.config import OptimizerConfig
from amq.search.pareto import front_indices
from amq.search.space import Plan, SearchSpace

CROSSOVERS = {
    "uniform": lambda cfg: UniformCrossover(cfg.swapping_prob),
    "blxalpha": lambda cfg: BLXAlphaCrossover(),
    "sbx": lambda cfg: SBXCrossover(),
    "vsbx": lambda cfg: VSBXCrossover(),
    "undx": lambda cfg: UNDXCrossover(),
    "spx": lambda cfg: SPXCrossover(),
}


class _SharedIntDistribution(IntDistribution):
    """An IntDistribution that deep-copies as itself. Optuna deep-copies the search space on
    every ask and the whole trial on every tell; with one parameter per layer (224 at 7B) those
    copies of never-mutated distributions took a large share of a round (nsga_profile.md)."""

    def __deepcopy__(self, memo: dict) -> _SharedIntDistribution:
        return self


class _GenerationalNSGAII(NSGAIISampler):
    """Optuna's NSGA-II, each trial's generation given by `propose` (in the trial's system attributes),
    which draws exactly one population per generation and adds it whole before the next. Optuna instead
    finds it by scanning every finished trial at every ask (quadratic in a round's trials: about a third
    of a default round), and never gives one to enqueued trials, so the seeds (the archive's best plans)
    never became parents. Here every trial, seeds included, belongs to its generation."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._parents: dict[int, list[optuna.trial.FrozenTrial]] = {}
        self.generation_key = self._get_generation_key()

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[optuna.trial.FrozenTrial]:
        # Optuna caches the ids and re-finds the trials among all of them at every ask; a generation's parents do not change
        if generation not in self._parents:
            self._parents[generation] = super().get_parent_population(study, generation)
        return self._parents[generation]


def _generation(
    sampler: _GenerationalNSGAII, study: optuna.Study, dists: dict[str, BaseDistribution], generation: int, size: int
) -> list[dict[str, int]]:
    """`size` children of NSGA-II's generation, each drawn exactly as `study.ask` + a suggest per
    parameter would (the same sampler calls, in the same order: the same plans for a seed), without
    Optuna's per-parameter bookkeeping on a running trial (a copy of the trial's whole parameter dict
    per parameter: quadratic in the 224 layers of a 7B model, most of a round's time). The relative
    search space (the intersection over `study`'s finished trials) is the same for the whole generation."""
    trial = create_trial(state=TrialState.RUNNING, system_attrs={sampler.generation_key: generation})
    space = sampler.infer_relative_search_space(study, trial)
    children = []
    for _ in range(size):
        relative = sampler.sample_relative(study, trial, space)
        children.append({n: relative[n] if n in relative else sampler.sample_independent(study, trial, n, d) for n, d in dists.items()})
    return children


def propose(
    space: SearchSpace,
    predict: Callable[[list[Plan]], np.ndarray],
    plan_bytes: Callable[[Plan], int],
    window: tuple[int, int],
    cfg: OptimizerConfig,
    seed: int,
    seeds: list[Plan] | None = None,
    show_progress: bool = True,
) -> list[tuple[Plan, float, int]]:
    """Run NSGA-II; return every feasible plan it saw as (plan, predicted divergence, bytes).

    Generation by generation: the sampler draws a whole population from a fresh view of the study
    (the previous generations' trials), the predictor scores it at once, and the population goes
    into the study as finished trials (`add_trials`), each with its generation and its memory
    constraint; the archive's best plans (`seeds`) are the first generation's first members."""
    if cfg.crossover not in CROSSOVERS:
        raise ValueError(f"unknown crossover {cfg.crossover!r}; choose from {sorted(CROSSOVERS)}")
    sampler = _GenerationalNSGAII(
        population_size=cfg.population,
        crossover=CROSSOVERS[cfg.crossover](cfg),
        crossover_prob=cfg.crossover_prob,
        swapping_prob=cfg.swapping_prob,
        mutation_prob=cfg.mutation_prob,
        seed=seed,
    )
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=["minimize", "minimize"], sampler=sampler)
    free = space.free
    opts = {i: space.options(i) for i in free}
    dists: dict[str, BaseDistribution] = {f"l{i}": _SharedIntDistribution(0, len(opts[i]) - 1) for i in free}
    first = [{f"l{i}": opts[i].index(plan[i]) for i in free} for plan in (seeds or [])[: cfg.population]]

    lo, hi = window
    seen: dict[Plan, tuple[float, int]] = {}
    for gen in tqdm(range(cfg.generations), desc="nsga-ii", unit="gen", disable=not show_progress, leave=False):
        view = optuna.load_study(study_name=study.study_name, storage=storage, sampler=sampler)  # sees every earlier generation
        given = first if gen == 0 else []
        params = given + _generation(sampler, view, dists, gen, cfg.population - len(given))
        plans = [space.make([opts[i][pp[f"l{i}"]] for i in free]) for pp in params]
        preds = predict(plans)
        trials = []
        for pp, plan, p in zip(params, plans, preds, strict=True):
            nbytes = plan_bytes(plan)
            trials.append(
                create_trial(
                    params=pp,
                    distributions=dists,
                    values=[float(p), float(nbytes)],
                    constraints={"memory_window": max(lo - nbytes, nbytes - hi, 0)},  # <= 0 is feasible
                    system_attrs={sampler.generation_key: gen},
                )
            )
            if lo <= nbytes <= hi:
                seen[plan] = (float(p), nbytes)
        view.add_trials(trials)

    return [(plan, pred, nbytes) for plan, (pred, nbytes) in seen.items()]


def front_levels(points: list[tuple[Plan, float, int]]) -> list[int]:
    """Non-dominated sorting: 0 for the predicted front, 1 for the front of the rest, ..."""
    level = [-1] * len(points)
    left = list(range(len(points)))
    depth = 0
    while left:
        idx = front_indices([points[i][2] for i in left], [points[i][1] for i in left])
        for j in idx:
            level[left[j]] = depth
        keep = set(idx)
        left = [i for j, i in enumerate(left) if j not in keep]
        depth += 1
    return level


def pick_spread(
    points: list[tuple[Plan, float, int]], k: int, window: tuple[int, int], exclude: set[Plan], caps: list[int] | None = None
) -> list[Plan]:
    """K new plans: first, for every budget cap, the best plan that fits under it within one
    bin width (a budget is served only by plans at or below it); then the best plan in each of
    the remaining equal bins of the window; empty bins are filled from the best remaining.
    "Best" is (front level, predicted divergence)."""
    fresh = [p for p in points if p[0] not in exclude]
    if not fresh or k <= 0:
        return []
    level = front_levels(fresh)
    rank = {p[0]: (lv, p[1]) for p, lv in zip(fresh, level, strict=True)}
    lo, hi = window
    width = (hi - lo) / k
    chosen: list[Plan] = []
    for cap in sorted(caps or []):
        under = [p[0] for p in fresh if cap - width <= p[2] <= cap and p[0] not in chosen]
        if under and len(chosen) < k:
            chosen.append(min(under, key=rank.__getitem__))
    edges = np.linspace(lo, hi, k - len(chosen) + 1)
    for a, b in itertools.pairwise(edges):
        in_bin = [p[0] for p in fresh if a <= p[2] <= b and p[0] not in chosen]
        if in_bin:
            chosen.append(min(in_bin, key=rank.__getitem__))
    rest = sorted((p[0] for p in fresh if p[0] not in chosen), key=rank.__getitem__)
    return (chosen + rest)[:k]
