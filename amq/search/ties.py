"""Tied groups: layers a fused kernel reads together must share one bit-width.

`search.tie: [qkv, gate_up]` ties q/k/v projections and gate/up projections within each
block. A custom group names its layers' last name parts joined by `+` (`q_proj+k_proj`).
"""

from __future__ import annotations

from collections.abc import Sequence

from amq.config import AMQConfigError

TIE_PRESETS = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "gate_up": ("gate_proj", "up_proj"),
}


def tie_parts(spec: str) -> tuple[str, ...]:
    parts = TIE_PRESETS.get(spec) or tuple(p for p in spec.split("+") if p)
    if len(parts) < 2:
        raise AMQConfigError(f"search.tie: {spec!r} is not one of {sorted(TIE_PRESETS)} nor a group like q_proj+k_proj")
    return parts


def tie_groups(names: Sequence[str], specs: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Index groups of `names` tied by `specs`, one group per parent module that has every part."""
    groups: list[tuple[int, ...]] = []
    taken: set[int] = set()
    for spec in specs:
        parts = tie_parts(spec)
        by_parent: dict[str, dict[str, int]] = {}
        for i, n in enumerate(names):
            parent, _, leaf = n.rpartition(".")
            if leaf in parts:
                by_parent.setdefault(parent, {})[leaf] = i
        found = [tuple(d[p] for p in parts) for d in by_parent.values() if len(d) == len(parts)]
        if not found:
            raise AMQConfigError(f"search.tie: no module holds all of {', '.join(parts)}")
        for g in found:
            if taken & set(g):
                raise AMQConfigError(f"search.tie: {spec!r} overlaps another tied group")
            taken |= set(g)
            groups.append(tuple(sorted(g)))
    return tuple(sorted(groups))
