"""QuantLinear: an nn.Linear replacement holding one bit-plane packed weight."""

from __future__ import annotations

import torch
from torch import nn

from amq_kernels.matmul import matmul, matmul_group, reference_matmul
from amq_kernels.packing import PackedWeight


def _packed_forward(x: torch.Tensor, planes: list[torch.Tensor], scales: torch.Tensor, zeros: torch.Tensor, bits: int, group_size: int):
    packed = PackedWeight(list(planes), scales, zeros, bits, group_size, scales.shape[1], scales.shape[0] * group_size)
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return matmul(x, packed)
    return reference_matmul(x, packed)


# The same matmul as one opaque op for torch.compile: the compiler fuses what surrounds it and
# CUDA graphs capture it, instead of tracing into the launcher (pointer checks, config dicts).
@torch.library.custom_op("amq_kernels::packed_linear", mutates_args=())
def packed_linear(
    x: torch.Tensor, planes: list[torch.Tensor], scales: torch.Tensor, zeros: torch.Tensor, bits: int, group_size: int
) -> torch.Tensor:
    return _packed_forward(x, planes, scales, zeros, bits, group_size)  # a fresh tensor: never aliases an input


@packed_linear.register_fake
def _(x, planes, scales, zeros, bits, group_size):
    return x.new_empty(*x.shape[:-1], scales.shape[1])


def _group_forward(
    x: torch.Tensor, planes: list[torch.Tensor], n_planes: list[int], scales: list[torch.Tensor], zeros: list[torch.Tensor],
    bits: list[int], group_size: int,
) -> torch.Tensor:  # fmt: skip
    it = iter(planes)
    packed = [
        PackedWeight([next(it) for _ in range(n)], s, z, b, group_size, s.shape[1], s.shape[0] * group_size)
        for n, s, z, b in zip(n_planes, scales, zeros, bits, strict=True)
    ]
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return matmul_group(x, packed)
    return torch.cat([reference_matmul(x, p) for p in packed], dim=-1)


@torch.library.custom_op("amq_kernels::packed_linear_group", mutates_args=())
def packed_linear_group(
    x: torch.Tensor, planes: list[torch.Tensor], n_planes: list[int], scales: list[torch.Tensor], zeros: list[torch.Tensor],
    bits: list[int], group_size: int,
) -> torch.Tensor:  # fmt: skip
    return _group_forward(x, planes, n_planes, scales, zeros, bits, group_size)


@packed_linear_group.register_fake
def _(x, planes, n_planes, scales, zeros, bits, group_size):
    return x.new_empty(*x.shape[:-1], sum(s.shape[1] for s in scales))


class SharedInputGroup:
    """QuantLinears that read the same input (q/k/v, gate/up). At one input row (decode) the
    first member's call computes every member's output in one launch (`matmul_group`); the
    others return theirs when called with that same tensor. Any other call pattern falls back
    to one matmul per layer, so the model stays correct whatever its forward does."""

    def __init__(self, members: list[QuantLinear]) -> None:
        self.members = members
        self.pending: tuple[torch.Tensor, list[torch.Tensor | None]] | None = None  # (x, outputs of members 1..)

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.members
        args = (
            x, [b for q in m for b in q.planes()], [q.n_planes for q in m], [q.scales for q in m], [q.zeros for q in m],
            [q.bits for q in m], m[0].group_size,
        )  # fmt: skip
        y = packed_linear_group(*args) if torch.compiler.is_compiling() else _group_forward(*args)
        return list(y.split([q.out_features for q in m], dim=-1))


def group_shared_inputs(model: nn.Module, groups: list[list[str]]) -> int:
    """Link each group of QuantLinears (module names, the first one called first) so that decode
    computes the group in one launch. Groups that are not all QuantLinears of one in_features and
    group size, or of more than 3 layers, are left as they are. Returns how many were linked."""
    linked = 0
    for names in groups:
        found = [model.get_submodule(n) for n in names]
        mods = [q for q in found if isinstance(q, QuantLinear)]
        if not 2 <= len(mods) <= 3 or len(mods) != len(found):
            continue
        if len({(q.in_features, q.group_size) for q in mods}) != 1 or any(q.bits > 4 for q in mods):
            continue
        group = SharedInputGroup(mods)
        for slot, q in enumerate(mods):
            q.group, q.slot = group, slot
        linked += 1
    return linked


class QuantLinear(nn.Module):
    """y = x @ W^T + b with W packed at `bits`; Triton on CUDA, dequantize + matmul elsewhere.
    Under torch.compile it is the custom op `amq_kernels::packed_linear`."""

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = packed.in_features, packed.out_features
        self.bits, self.group_size = packed.bits, packed.group_size
        self.n_planes = len(packed.planes)
        for i, plane in enumerate(packed.planes):
            self.register_buffer(f"plane{i}", plane)
        self.scales: torch.Tensor
        self.zeros: torch.Tensor
        self.register_buffer("scales", packed.scales)
        self.register_buffer("zeros", packed.zeros)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.group: SharedInputGroup | None = None  # set by group_shared_inputs
        self.slot = 0

    def planes(self) -> list[torch.Tensor]:
        return [getattr(self, f"plane{i}") for i in range(self.n_planes)]

    @property
    def packed(self) -> PackedWeight:
        return PackedWeight(self.planes(), self.scales, self.zeros, self.bits, self.group_size, self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._from_group(x) if self.group is not None and x.shape[:-1].numel() == 1 else None
        if y is not None:
            return y + self.bias if self.bias is not None else y
        planes = self.planes()
        if torch.compiler.is_compiling():
            y = packed_linear(x, planes, self.scales, self.zeros, self.bits, self.group_size)
        else:  # eager: no custom-op dispatch on the decode path
            y = _packed_forward(x, planes, self.scales, self.zeros, self.bits, self.group_size)
        return y + self.bias if self.bias is not None else y

    def _from_group(self, x: torch.Tensor) -> torch.Tensor | None:
        """This layer's output from its group's one launch, or None (then it computes its own)."""
        group = self.group
        assert group is not None
        if self.slot == 0:
            first, *rest = group.outputs(x)
            others: list[torch.Tensor | None] = list(rest)
            group.pending = (x, others)
            return first
        if group.pending is None or group.pending[0] is not x or group.pending[1][self.slot - 1] is None:
            return None
        outs = group.pending[1]
        y = outs[self.slot - 1]
        left = [None if i == self.slot - 1 else v for i, v in enumerate(outs)]  # no item assignment: torch.compile
        group.pending = None if all(v is None for v in left) else (x, left)  # may hand back tuples for lists
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, group_size={self.group_size}"
