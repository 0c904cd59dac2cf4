"""The search space: a bit-width per searchable layer; pruning narrows some layers' choices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Plan = tuple[int, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Layer names in model order, the choice set, and the layers pruning restricted.

    `restricted[i]` is layer i's own choice set: `(highest,)` fixes it (AMQ's pruning),
    `choices[1:]` only takes away the lowest bit-width.
    """

    names: tuple[str, ...]
    choices: tuple[int, ...]
    restricted: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def options(self, i: int) -> tuple[int, ...]:
        return self.restricted.get(i, self.choices)

    @property
    def free(self) -> list[int]:
        """Layers with more than one choice: the search's variables."""
        return [i for i in range(len(self.names)) if len(self.options(i)) > 1]

    def log10_size(self, pruned: bool = True) -> float:
        if not pruned:
            return len(self.names) * math.log10(len(self.choices))
        return sum(math.log10(len(self.options(i))) for i in range(len(self.names)))

    def make(self, free_bits: Sequence[int]) -> Plan:
        """A full plan from bits of the free layers (single-choice layers filled in)."""
        plan = [self.options(i)[0] for i in range(len(self.names))]
        for i, b in zip(self.free, free_bits, strict=True):
            plan[i] = int(b)
        return tuple(plan)

    def uniform(self, bits: int) -> Plan:
        """Every layer at `bits`, or the nearest bit-width its own choice set allows."""
        return tuple(min(self.options(i), key=lambda b: (abs(b - bits), -b)) for i in range(len(self.names)))

    def random_plans(self, n: int, rng: np.random.Generator) -> list[Plan]:
        """Plans spread over the memory range: each draws its own mix of the choices."""
        plans = []
        for _ in range(n):
            probs = dict(zip(self.choices, rng.dirichlet(np.full(len(self.choices), 0.7)), strict=True))
            bits = []
            for i in self.free:
                opts = self.options(i)
                p = np.array([probs[b] for b in opts]) + 1e-12
                bits.append(int(rng.choice(opts, p=p / p.sum())))
            plans.append(self.make(bits))
        return plans

    def encode(self, plans: Sequence[Plan]) -> np.ndarray:
        """Predictor features: the free layers' bits scaled to [0, 1]."""
        lo, hi = self.choices[0], self.choices[-1]
        arr = np.asarray(plans, dtype=np.float32)[:, self.free]
        return (arr - lo) / max(1, hi - lo)
