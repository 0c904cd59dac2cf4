"""QuantLinear: an nn.Linear replacement holding one bit-plane packed weight."""

from __future__ import annotations

import torch
from torch import nn

from amq_kernels.matmul import matmul, matmul_group, reference_matmul
from amq_kernels.mma import MmaWeight, mma_matmul, mma_ok, pack_mma, unpack_mma
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


def _mma_forward(x: torch.Tensor, planes: list[torch.Tensor], sz: torch.Tensor, bits: int, out_features: int, int_zero: bool):
    weight = MmaWeight(list(planes), sz, bits, out_features, x.shape[-1], int_zero)
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return mma_matmul(x.reshape(-1, x.shape[-1]), weight).reshape(*x.shape[:-1], out_features)
    return reference_matmul(x, unpack_mma(weight))


@torch.library.custom_op("amq_kernels::mma_linear", mutates_args=())
def mma_linear(x: torch.Tensor, planes: list[torch.Tensor], sz: torch.Tensor, bits: int, out_features: int, int_zero: bool) -> torch.Tensor:
    return _mma_forward(x, planes, sz, bits, out_features, int_zero)


@mma_linear.register_fake
def _(x, planes, sz, bits, out_features, int_zero):
    return x.new_empty(*x.shape[:-1], out_features)


def mma_supported(device: torch.device) -> bool:
    """The mma layout's kernel runs here: a Hopper (sm_90) or newer GPU with Triton."""
    from amq_kernels.matmul import triton

    return triton is not None and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def use_mma_layout(model: nn.Module) -> int:
    """Reorder, in place, every QuantLinear of `model` that the mma layout covers (2-4 bits,
    group 128, N % 64 == 0, K % 128 == 0) into it: the same bytes, read by the register-fed
    tensor-core kernel (amq_kernels/mma.py) at every batch size. Layers of a shared-input
    group are unlinked (the grouped launch reads the bit planes). Returns how many changed."""
    changed = 0
    for mod in model.modules():
        if isinstance(mod, QuantLinear) and mod.layout == "planes" and mma_ok(mod.packed) and mma_supported(mod.scales.device):
            mod.to_mma()
            changed += 1
    for mod in model.modules():
        if isinstance(mod, QuantLinear) and mod.group is not None and any(q.layout == "mma" for q in mod.group.members):
            for q in mod.group.members:
                q.group, q.slot = None, 0
    return changed


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
        self.layout = "planes"  # or "mma" (use_mma_layout): the buffers mma0.., sz replace plane0.., scales, zeros
        self.int_zero = False

    def planes(self) -> list[torch.Tensor]:
        prefix = "mma" if self.layout == "mma" else "plane"
        return [getattr(self, f"{prefix}{i}") for i in range(self.n_planes)]

    @property
    def packed(self) -> PackedWeight:
        if self.layout == "mma":
            return unpack_mma(MmaWeight(self.planes(), self.sz, self.bits, self.out_features, self.in_features, self.int_zero))
        return PackedWeight(self.planes(), self.scales, self.zeros, self.bits, self.group_size, self.out_features, self.in_features)

    def to_mma(self) -> None:
        """This layer's weight into the mma layout (see `use_mma_layout`), in place."""
        mw = pack_mma(self.packed)
        for i in range(self.n_planes):
            delattr(self, f"plane{i}")
            self.register_buffer(f"mma{i}", mw.planes[i])
        del self.scales, self.zeros
        self.sz: torch.Tensor
        self.register_buffer("sz", mw.sz)
        self.layout, self.int_zero = "mma", mw.int_zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "mma":
            args = (x, self.planes(), self.sz, self.bits, self.out_features, self.int_zero)
            y = mma_linear(*args) if torch.compiler.is_compiling() else _mma_forward(*args)
            return y + self.bias if self.bias is not None else y
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
        layout = ", layout=mma" if self.layout == "mma" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, group_size={self.group_size}{layout}"
