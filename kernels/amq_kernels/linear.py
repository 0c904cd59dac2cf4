"""QuantLinear: an nn.Linear replacement holding one bit-plane packed weight."""

from __future__ import annotations

import torch
from torch import nn

from amq_kernels.matmul import matmul, reference_matmul
from amq_kernels.packing import PackedWeight


class QuantLinear(nn.Module):
    """y = x @ W^T + b with W packed at `bits`; Triton on CUDA, dequantize + matmul elsewhere."""

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
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            y = matmul(x, self.packed)
        else:
            y = reference_matmul(x, self.packed)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, group_size={self.group_size}"
