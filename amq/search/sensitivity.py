"""Per-layer sensitivity (that layer alone at the lowest bit-width) and search-space pruning."""

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
    names: Sequence[str], lowest: int, apply: Callable[[Sequence[int]], None], score: Callable[[], float], show_progress: bool = True
) -> dict[str, float]:
    """Divergence with one layer at `lowest` bits and every other layer at full precision."""
    out: dict[str, float] = {}
    for i, name in enumerate(tqdm(names, desc="sensitivity", unit="layer", disable=not show_progress)):
        plan = [FULL] * len(names)
        plan[i] = lowest
        apply(plan)
        out[name] = score()
    apply([FULL] * len(names))
    return out


def load_or_measure(
    path: Path,
    key: dict,
    names: Sequence[str],
    lowest: int,
    apply: Callable[[Sequence[int]], None],
    score: Callable[[], float],
    reuse: str | None = None,
) -> dict[str, float]:
    """Read sensitivities from `reuse` or `path` when their key matches; else measure and save."""
    for candidate in [Path(reuse)] if reuse else [path]:
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            if data.get("key") == key and list(data["sensitivity"]) == list(names):
                log.info("sensitivity reused from %s", candidate)
                if candidate != path:
                    path.write_text(candidate.read_text())
                return {k: float(v) for k, v in data["sensitivity"].items()}
            log.warning("sensitivity in %s was measured under other settings; measuring again", candidate)
    sens = measure_sensitivity(names, lowest, apply, score)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "sensitivity": sens}, indent=2))
    tmp.replace(path)
    return sens


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
