"""Per-layer sensitivity and search-space pruning.

Each layer is measured alone at every bit-width of the choice set (every other layer at full
precision). The lowest bit-width's column is AMQ's sensitivity, which pruning uses; the whole
table is the per-layer loss estimate that integer-programming and greedy allocation need.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from amq.quant.bank import FULL

log = logging.getLogger(__name__)


def measure_sensitivity(
    names: Sequence[str],
    choices: Sequence[int],
    apply: Callable[[Sequence[int]], None],
    score: Callable[[], float],
    show_progress: bool = True,
    units: Sequence[Sequence[int]] | None = None,
    score_from: Callable[[int], float] | None = None,
    blocks: Sequence[int] | None = None,
) -> dict[str, dict[int, float]]:
    """Divergence with one layer at each of `choices` and every other layer at full precision.

    `units` measures tied layers together (all at b at once); each member is credited an equal
    share, so the table's sum over a group is the group's measured loss. With `score_from` and
    each layer's decoder block in `blocks`, a unit in block k is scored by `score_from(k)`: the
    same number from blocks k.. on cached inputs (amq.prefix), units taken in block order."""
    out: dict[str, dict[int, float]] = {n: {} for n in names}
    units = units or [(i,) for i in range(len(names))]
    if score_from is not None and blocks is not None:
        units = sorted(units, key=lambda u: min(blocks[i] for i in u))
    bar = tqdm(total=len(units) * len(choices), desc="sensitivity", unit="eval", disable=not show_progress)
    for unit in units:
        for b in choices:
            plan = [FULL] * len(names)
            for i in unit:
                plan[i] = b
            apply(plan)
            value = score_from(min(blocks[i] for i in unit)) if score_from is not None and blocks is not None else score()
            for i in unit:
                out[names[i]][b] = value / len(unit)
            bar.update()
    bar.close()
    apply([FULL] * len(names))
    return out


def lowest_column(per_bits: dict[str, dict[int, float]]) -> dict[str, float]:
    """AMQ's sensitivity: each layer's divergence at the lowest bit-width."""
    return {n: d[min(d)] for n, d in per_bits.items()}


def weight_error_estimate(sq_error: Callable[[str, int], float], lowest: int) -> Callable[[str, int, float], float]:
    """`estimate` for load_or_measure: a layer's divergence at `bits` from its measured value at
    the lowest bit-width, scaled by how much less the proxy moves its weights,
    ||W - Q_bits(W)||^2 / ||W - Q_lowest(W)||^2 (divergence grows with the squared perturbation
    to first order)."""
    base: dict[str, float] = {}

    def estimate(name: str, bits: int, at_lowest: float) -> float:
        if name not in base:
            base[name] = max(sq_error(name, lowest), 1e-30)
        return at_lowest * sq_error(name, bits) / base[name]

    return estimate


def load_or_measure(
    path: Path,
    key: dict,
    names: Sequence[str],
    choices: Sequence[int],
    apply: Callable[[Sequence[int]], None],
    score: Callable[[], float],
    reuse: str | None = None,
    show_progress: bool = True,
    units: Sequence[Sequence[int]] | None = None,
    estimate: Callable[[str, int, float], float] | None = None,
    score_from: Callable[[int], float] | None = None,
    blocks: Sequence[int] | None = None,
) -> dict[str, dict[int, float]]:
    """Read the per-layer table from `reuse` or `path` when its key matches; else measure and save.

    With `estimate`, only the lowest bit-width is measured (AMQ's pass, a third of the
    evaluations) and every other column is `estimate(layer, bits, measured lowest value)`."""
    for candidate in [Path(reuse)] if reuse else [path]:
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            if data.get("key") == key and list(data.get("per_bits", {})) == list(names):
                log.info("sensitivity reused from %s", candidate)
                if candidate != path:
                    path.write_text(candidate.read_text())
                return {n: {int(b): float(v) for b, v in d.items()} for n, d in data["per_bits"].items()}
            log.warning("sensitivity in %s was measured under other settings; measuring again", candidate)
    lowest = min(choices)
    per_bits = measure_sensitivity(names, [lowest] if estimate else choices, apply, score, show_progress, units, score_from, blocks)
    estimated = [b for b in choices if b != lowest] if estimate else []
    if estimate is not None:
        for n in names:
            for b in estimated:
                per_bits[n][b] = estimate(n, b, per_bits[n][lowest])
    tmp = path.with_suffix(".tmp")
    doc = {"key": key, "sensitivity": lowest_column(per_bits), "per_bits": per_bits, "estimated_bits": estimated}
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return per_bits


def prune(
    sensitivity: dict[str, float],
    names: Sequence[str],
    threshold: float,
    choices: Sequence[int],
    mode: str = "highest",
    allowed: Callable[[dict[int, tuple[int, ...]]], bool] = lambda restricted: True,
) -> dict[int, tuple[int, ...]]:
    """Layers whose sensitivity exceeds `threshold` x the median get a narrower choice set:
    the highest bit-width alone (`mode="highest"`, AMQ) or every choice but the lowest
    (`mode="no_lowest"`).

    Most sensitive first, and only while `allowed(restricted)` holds: pruning must never make a
    requested budget unreachable (the caller checks the smallest plan against the budgets).
    """
    if threshold <= 0 or len(choices) < 2:
        return {}
    narrowed = (choices[-1],) if mode == "highest" else tuple(choices[1:])
    med = statistics.median(sensitivity.values())
    over = sorted((i for i, n in enumerate(names) if sensitivity[n] > threshold * med), key=lambda i: -sensitivity[names[i]])
    restricted: dict[int, tuple[int, ...]] = {}
    for i in over:
        trial = {**restricted, i: narrowed}
        if not allowed(trial):
            log.warning("pruning stopped after %d of %d layers to keep every budget reachable", len(restricted), len(over))
            break
        restricted = trial
    return restricted
