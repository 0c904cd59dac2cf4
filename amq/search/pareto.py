"""Pareto fronts and 2-D hypervolume for (memory, divergence), both minimized."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def front_indices(memory: Sequence[float], loss: Sequence[float]) -> list[int]:
    """Indices of non-dominated points, sorted by memory ascending."""
    order = np.lexsort((np.asarray(loss), np.asarray(memory)))
    best = np.inf
    out = []
    for i in order:
        if loss[i] < best:
            out.append(int(i))
            best = loss[i]
    return out


def hypervolume(memory: Sequence[float], loss: Sequence[float], ref: tuple[float, float]) -> float:
    """Area dominated by the points and bounded by the reference point (larger is better)."""
    idx = [i for i in front_indices(memory, loss) if memory[i] < ref[0] and loss[i] < ref[1]]
    area = 0.0
    for k, i in enumerate(idx):
        right = memory[idx[k + 1]] if k + 1 < len(idx) else ref[0]
        area += (right - memory[i]) * (ref[1] - loss[i])
    return float(area)


def front_records(records: Sequence[Any]) -> list[Any]:
    """The non-dominated ones of records with `.bytes` and `.divergence`, by memory ascending."""
    idx = front_indices([r.bytes for r in records], [r.divergence for r in records])
    return [records[i] for i in idx]
