"""The search space: a bit-width per searchable layer; pruning narrows some layers' choices;
tied layers (read together by a fused kernel: q/k/v, gate/up) share one bit-width."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

Plan = tuple[int, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Layer names in model order, the choice set, and the layers pruning restricted.

    `restricted[i]` is layer i's own choice set: `(highest,)` fixes it (AMQ's pruning),
    `choices[1:]` only takes away the lowest bit-width. `ties` are groups of layer indices
    that take one bit-width together; the group's first layer stands for it (it is the
    search variable) and its choice set is what every member allows.
    """

    names: tuple[str, ...]
    choices: tuple[int, ...]
    restricted: dict[int, tuple[int, ...]] = field(default_factory=dict)
    ties: tuple[tuple[int, ...], ...] = ()

    @cached_property
    def _group(self) -> dict[int, tuple[int, ...]]:
        return {i: g for g in self.ties for i in g}

    def members(self, i: int) -> tuple[int, ...]:
        """The layers that share layer i's bit-width (i alone when untied)."""
        return self._group.get(i, (i,))

    @cached_property
    def _options(self) -> tuple[tuple[int, ...], ...]:
        out = []
        for i in range(len(self.names)):
            allowed = set(self.choices)
            for j in self.members(i):
                allowed &= set(self.restricted.get(j, self.choices))
            out.append(tuple(b for b in self.choices if b in allowed) or (self.choices[-1],))
        return tuple(out)

    def options(self, i: int) -> tuple[int, ...]:
        return self._options[i]

    @cached_property
    def units(self) -> list[tuple[int, ...]]:
        """Every layer once, tied layers as one group: what sensitivity measures."""
        return [self.members(i) for i in range(len(self.names)) if self.members(i)[0] == i]

    @cached_property
    def free(self) -> list[int]:
        """Representatives (first layer of each group) with more than one choice: the search's variables."""
        return [g[0] for g in self.units if len(self.options(g[0])) > 1]

    def log10_size(self, pruned: bool = True) -> float:
        if not pruned:
            return len(self.names) * math.log10(len(self.choices))
        return sum(math.log10(len(self.options(g[0]))) for g in self.units)

    def with_bits(self, plan: Sequence[int], i: int, bits: int) -> Plan:
        """`plan` with layer i (and every layer tied to it) at `bits`."""
        out = list(plan)
        for j in self.members(i):
            out[j] = int(bits)
        return tuple(out)

    def make(self, free_bits: Sequence[int]) -> Plan:
        """A full plan from bits of the free layers (single-choice layers filled in)."""
        plan = [self.options(i)[0] for i in range(len(self.names))]
        for i, b in zip(self.free, free_bits, strict=True):
            for j in self.members(i):
                plan[j] = int(b)
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

    def decode(self, x: np.ndarray) -> list[Plan]:
        """The plans that `encode` turned into `x`."""
        lo, hi = self.choices[0], self.choices[-1]
        bits = np.rint(np.asarray(x, dtype=np.float64) * max(1, hi - lo) + lo).astype(int)
        return [self.make(row) for row in bits]
