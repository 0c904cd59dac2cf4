"""Memory cost model: exact bytes of each layer at each bit-width, as the packed format stores them.

Packed format (see kernels/README.md): the b-bit codes of an (out, in) weight are stored as
bit planes along the input dimension, so they take exactly out * in * b / 8 bytes (in % 32 == 0);
every group of `group_size` inputs of every output row has a 16-bit scale and a 16-bit zero.
Everything else in the model (embeddings, norms, lm_head, biases) stays in 16-bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from amq.config import AMQConfigError
from amq.models import LayerInfo

SCALE_ZERO_BYTES = 4  # one fp16 scale + one fp16 zero per group
PACK_ALIGN = 32  # input width must be a multiple of 32 for the bit-plane packing


def layer_bytes(out_features: int, in_features: int, bits: int, group_size: int) -> int:
    """Bytes of one packed layer: codes plus per-group scale and zero."""
    codes = out_features * in_features * bits // 8
    groups = out_features * math.ceil(in_features / group_size)
    return codes + groups * SCALE_ZERO_BYTES


@dataclass(frozen=True)
class CostModel:
    """Bytes of every searchable layer at every choice, plus the fixed 16-bit rest of the model."""

    layers: tuple[LayerInfo, ...]
    choices: tuple[int, ...]
    group_size: int
    other_bytes: int  # 16-bit parameters outside the searchable linears

    @property
    def numel(self) -> np.ndarray:
        return np.array([layer.numel for layer in self.layers], dtype=np.int64)

    def plan_bytes(self, bits: Sequence[int]) -> int:
        """Bytes of the searchable layers under a plan."""
        return int(
            sum(layer_bytes(lay.out_features, lay.in_features, b, self.group_size) for lay, b in zip(self.layers, bits, strict=True))
        )

    def table(self) -> np.ndarray:
        """(layers, choices) bytes of every layer at every choice."""
        return np.array([[layer_bytes(lay.out_features, lay.in_features, b, self.group_size) for b in self.choices] for lay in self.layers])

    def avg_bits(self, bits: Sequence[int]) -> float:
        """Average bits per quantized weight (codes only; scales/zeros are a constant overhead)."""
        n = self.numel
        return float(np.dot(n, np.asarray(bits)) / n.sum())

    def model_gb(self, bits: Sequence[int]) -> float:
        """Whole model in GB (1e9 bytes): packed layers plus the 16-bit rest."""
        return (self.plan_bytes(bits) + self.other_bytes) / 1e9

    def budget_to_bytes(self, value: float, unit: str) -> int:
        """Largest plan bytes a budget allows (bits: average code bits; gb: the whole model)."""
        if unit == "gb":
            return int(value * 1e9) - self.other_bytes
        n = self.numel
        overhead = sum(math.ceil(lay.in_features / self.group_size) * lay.out_features for lay in self.layers) * SCALE_ZERO_BYTES
        return math.floor(value * n.sum() / 8 + 1e-6) + overhead

    def check_budget(self, value: float, unit: str, lowest: Sequence[int] | None = None) -> None:
        """Refuse a budget outside what plans can reach, naming the achievable range."""
        lo_bits = lowest if lowest is not None else [self.choices[0]] * len(self.layers)
        hi_bits = [self.choices[-1]] * len(self.layers)
        if unit == "gb":
            lo, hi = self.model_gb(lo_bits), self.model_gb(hi_bits)
            ok = lo - 1e-9 <= value <= hi + 1e-9
            rng = f"{lo:.4f}-{hi:.4f} GB"
        else:
            lo, hi = self.avg_bits(lo_bits), self.avg_bits(hi_bits)
            ok = lo - 1e-9 <= value <= hi + 1e-9
            rng = f"{lo:.3f}-{hi:.3f} average bits"
        if not ok:
            raise AMQConfigError(f"budget {value:g} {unit} is outside the achievable range {rng}")


def build_cost_model(layers: Sequence[LayerInfo], choices: Sequence[int], group_size: int, total_param_count: int) -> CostModel:
    """Check shapes against the packing rules and build the cost model."""
    for lay in layers:
        if lay.in_features % group_size:
            raise AMQConfigError(f"bits.group_size={group_size} does not divide the input width {lay.in_features} of {lay.name}")
        if lay.in_features % PACK_ALIGN:
            raise AMQConfigError(f"{lay.name}: input width {lay.in_features} is not a multiple of {PACK_ALIGN}")
    searchable = sum(lay.numel for lay in layers)
    other = (total_param_count - searchable) * 2
    return CostModel(tuple(layers), tuple(choices), group_size, other)
