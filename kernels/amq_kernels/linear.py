"""QuantLinear: an nn.Linear replacement holding one bit-plane packed weight."""

from __future__ import annotations

import torch
from torch import nn

from amq_kernels.matmul import matmul, reference_matmul
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
        self.register_buffer("scales", packed.scales)
        self.register_buffer("zeros", packed.zeros)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @property
    def packed(self) -> PackedWeight:
        planes = [getattr(self, f"plane{i}") for i in range(self.n_planes)]
        return PackedWeight(planes, self.scales, self.zeros, self.bits, self.group_size, self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planes = [getattr(self, f"plane{i}") for i in range(self.n_planes)]
        if torch.compiler.is_compiling():
            y = packed_linear(x, planes, self.scales, self.zeros, self.bits, self.group_size)
        else:  # eager: no custom-op dispatch on the decode path
            y = _packed_forward(x, planes, self.scales, self.zeros, self.bits, self.group_size)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, group_size={self.group_size}"
