"""Bit allocation from per-layer loss estimates: exact-budget integer programming and greedy.

The peers' way (MXQ, GAMMA-style): assume a plan's loss is the sum of each layer's loss when
quantized alone, and pick one bit-width per layer to minimize that sum under the byte budget.
The program is small (layers x choices binaries, one budget row, one row per layer), so
scipy's HiGHS solves it exactly in milliseconds. The same solver repairs a search plan to a
budget, and seeds the search's initial archive.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from amq.search.space import Plan, SearchSpace


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """HiGHS (scipy 1.17) prints a debug line ("HighsMipSolverData::transformNewIntegerFeasibleSolution
    tmpSolver.run();") straight to file descriptor 1 whenever it repairs a presolved solution,
    whatever its output options say: it would land in the middle of the search's progress bars."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no descriptor 1 to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def loss_table(per_bits: dict[str, dict[int, float]], names: Sequence[str], choices: Sequence[int]) -> np.ndarray:
    """(layers, choices) array of each layer's measured loss alone at each bit-width."""
    return np.array([[per_bits[n][b] for b in choices] for n in names], dtype=np.float64)


def allocate(
    loss: np.ndarray,
    cost: np.ndarray,
    cap: int,
    space: SearchSpace,
    allowed: np.ndarray | None = None,
) -> Plan | None:
    """Plan minimizing the summed per-layer loss with total bytes <= `cap`; None if none fits.

    `loss` and `cost` are (layers, choices); `allowed` (same shape, bool) narrows the choices
    further than the search space does (repair uses it)."""
    n_layers, n_choices = loss.shape
    mask = np.array([[b in space.options(i) for b in space.choices] for i in range(n_layers)])
    if allowed is not None:
        mask &= allowed
    if np.where(mask, cost, np.inf).min(axis=1).sum() > cap:
        return None
    one_each = np.kron(np.eye(n_layers), np.ones(n_choices))
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(cost.ravel()[None, :].astype(float), -np.inf, cap)]
    rows = []
    for group in space.ties:  # tied layers pick the same column
        for j in group[1:]:
            for c in range(n_choices):
                row = np.zeros(loss.size)
                row[group[0] * n_choices + c], row[j * n_choices + c] = 1.0, -1.0
                rows.append(row)
    if rows:
        constraints.append(LinearConstraint(np.array(rows), 0, 0))
    with _native_stdout_silenced():
        res = milp(c=loss.ravel(), integrality=np.ones(loss.size), bounds=Bounds(0, mask.ravel().astype(float)), constraints=constraints)
    if res.x is None:
        return None
    pick = res.x.reshape(n_layers, n_choices).argmax(axis=1)
    return tuple(int(space.choices[j]) for j in pick)


def greedy(loss: np.ndarray, cost: np.ndarray, cap: int, space: SearchSpace) -> Plan | None:
    """Sensitivity greedy: start every layer at its highest option, then repeatedly take the
    layer (or tied group) whose next step down adds the least loss per byte saved, until the
    plan fits."""
    col = {b: j for j, b in enumerate(space.choices)}
    units = space.units
    opts = [space.options(u[0]) for u in units]
    unit_loss = np.array([loss[list(u)].sum(0) for u in units])
    unit_cost = np.array([cost[list(u)].sum(0) for u in units])
    pos = [len(o) - 1 for o in opts]  # index into each unit's own options
    total = int(sum(unit_cost[k, col[o[-1]]] for k, o in enumerate(opts)))
    while total > cap:
        best, best_k = np.inf, -1
        for k, o in enumerate(opts):
            if pos[k] == 0:
                continue
            cur, nxt = col[o[pos[k]]], col[o[pos[k] - 1]]
            ratio = (unit_loss[k, nxt] - unit_loss[k, cur]) / max(1, unit_cost[k, cur] - unit_cost[k, nxt])
            if ratio < best:
                best, best_k = ratio, k
        if best_k < 0:
            return None
        o = opts[best_k]
        total -= int(unit_cost[best_k, col[o[pos[best_k]]]] - unit_cost[best_k, col[o[pos[best_k] - 1]]])
        pos[best_k] -= 1
    plan = [0] * len(space.names)
    for u, o, p in zip(units, opts, pos, strict=True):
        for i in u:
            plan[i] = int(o[p])
    return tuple(plan)


def repair(plan: Plan, loss: np.ndarray, cost: np.ndarray, cap: int, space: SearchSpace, reach: int = 1) -> Plan | None:
    """The best plan under `cap` (by the loss estimates) that moves each layer at most `reach`
    steps of the choice set away from `plan`: fits a searched plan to a budget exactly."""
    pos = np.array([space.choices.index(b) for b in plan])
    allowed = np.abs(np.arange(len(space.choices))[None, :] - pos[:, None]) <= reach
    return allocate(loss, cost, cap, space, allowed)


def fit_additive(plans: Sequence[Plan], y: np.ndarray, prior: np.ndarray, choices: Sequence[int], ridge: float = 0.1) -> np.ndarray:
    """Per-layer loss table refitted to measured plans: y ~ a * sum(prior) + sum(delta), with a
    ridge penalty pulling each delta to 0. The sensitivity table alone misses interactions
    (errors of many layers compound); the archive's real evaluations correct it where they
    have evidence, and the ILP then optimizes the corrected table exactly."""
    n_layers, n_choices = prior.shape
    col = {b: j for j, b in enumerate(choices)}
    x = np.zeros((len(plans), n_layers * n_choices))
    for r, plan in enumerate(plans):
        for i, b in enumerate(plan):
            x[r, i * n_choices + col[b]] = 1.0
    base = x @ prior.ravel()
    a = float(base @ y / max(base @ base, 1e-30))
    resid = y - a * base
    lam = ridge * len(plans) / n_choices
    delta = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ resid)
    return a * prior + delta.reshape(n_layers, n_choices)
