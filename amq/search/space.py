"""The search space: a bit-width per searchable layer, with pruned layers fixed to the highest."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Plan = tuple[int, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Layer names in model order, the choice set, and the layers fixed by pruning."""

    names: tuple[str, ...]
    choices: tuple[int, ...]
    fixed: dict[int, int] = field(default_factory=dict)  # layer index -> bits

    @property
    def free(self) -> list[int]:
        return [i for i in range(len(self.names)) if i not in self.fixed]

    def log10_size(self, pruned: bool = True) -> float:
        n = len(self.free) if pruned else len(self.names)
        return n * math.log10(len(self.choices))

    def make(self, free_bits: Sequence[int]) -> Plan:
        """A full plan from bits of the free layers (fixed layers filled in)."""
        plan = [0] * len(self.names)
        for i, b in self.fixed.items():
            plan[i] = b
        for i, b in zip(self.free, free_bits, strict=True):
            plan[i] = int(b)
        return tuple(plan)

    def uniform(self, bits: int) -> Plan:
        """All free layers at `bits` (pruned layers stay fixed)."""
        return self.make([bits] * len(self.free))

    def random_plans(self, n: int, rng: np.random.Generator) -> list[Plan]:
        """Plans spread over the memory range: each draws its own mix of the choices."""
        plans = []
        k = len(self.choices)
        for _ in range(n):
            probs = rng.dirichlet(np.full(k, 0.7))
            plans.append(self.make(rng.choice(self.choices, size=len(self.free), p=probs).tolist()))
        return plans

    def encode(self, plans: Sequence[Plan]) -> np.ndarray:
        """Predictor features: the free layers' bits scaled to [0, 1]."""
        lo, hi = self.choices[0], self.choices[-1]
        arr = np.asarray(plans, dtype=np.float32)[:, self.free]
        return (arr - lo) / max(1, hi - lo)
