"""Bit-plane packing of group-wise quantized weights, in plain torch (the kernels' oracle).

A weight of shape (N out, K in) with b-bit codes q (0 <= q < 2^b) is stored as bit planes
along K: b is split into power-of-two widths, larger first (4 -> [4], 3 -> [2, 1], 2 -> [2],
1 -> [1]). Plane p of width w holds bits [o, o + w) of every code (o = sum of earlier widths),
P = 32 // w codes per int32 word, K-major, a plane being an int32 tensor of shape (K // P, N)
with consecutive n adjacent in memory (coalesced loads for a tile of outputs).

Inside a word, code i (k = P * row + i) sits at bit (i % 2) * 16 + (i // 2) * w: even codes
fill the low half-word, odd codes the high one, so adjacent codes 2j and 2j + 1 lie exactly
16 bits apart. One shift and one mask then put a pair of codes into the two halves of a
32-bit register (a pair of 16-bit floats after OR-ing an exponent in), which is how the
kernels unpack two codes per instruction. (Layout 1, plain order i * w, is what version-1
exports hold; `pack` and `unpack_codes` still read and write it for converting them.)

The codes take exactly N * K * b / 8 bytes. Scales and zeros are fp16 tensors of shape
(K // group_size, N). Dequantized weight: W[n, k] = (q[n, k] - zero[k // g, n]) * scale[k // g, n].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

WORD_BITS = 32
LAYOUT = 2  # pairs of adjacent codes 16 bits apart (see above); 1 = plain order, read for old files


def code_offsets(width: int, layout: int = LAYOUT) -> torch.Tensor:
    """Bit offset of each of the 32 // width codes inside a word (int64, for shifting)."""
    i = torch.arange(WORD_BITS // width, dtype=torch.int64)
    if layout == 1:
        return i * width
    if layout != 2:
        raise ValueError(f"unknown packing layout {layout}")
    return (i % 2) * 16 + (i // 2) * width


def plane_widths(bits: int) -> list[int]:
    """Power-of-two widths of the bit planes, larger first: 3 -> [2, 1]."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    return [w for w in (8, 4, 2, 1) if bits & w]


@dataclass
class PackedWeight:
    """A packed (N, K) weight: bit planes, fp16 scales and zeros, and its shape."""

    planes: list[torch.Tensor]  # int32, (K * w // 32, N) each
    scales: torch.Tensor  # (K // group_size, N)
    zeros: torch.Tensor  # (K // group_size, N)
    bits: int
    group_size: int
    out_features: int
    in_features: int

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.planes) + 2 * self.scales.numel() + 2 * self.zeros.numel()

    def to(self, device: torch.device | str) -> PackedWeight:
        return PackedWeight(
            [p.to(device) for p in self.planes],
            self.scales.to(device),
            self.zeros.to(device),
            self.bits,
            self.group_size,
            self.out_features,
            self.in_features,
        )


def empty_packed(out_features: int, in_features: int, bits: int, group_size: int, device: torch.device | str = "cpu") -> PackedWeight:
    """A zero-filled PackedWeight of the right shapes: the target a checkpoint loads into."""
    planes = [torch.zeros(in_features * w // WORD_BITS, out_features, dtype=torch.int32, device=device) for w in plane_widths(bits)]
    groups = (in_features // group_size, out_features)
    z = torch.zeros(groups, dtype=torch.float16, device=device)
    return PackedWeight(planes, z, z.clone(), bits, group_size, out_features, in_features)


def pack_planes(codes: torch.Tensor, bits: int, layout: int = LAYOUT) -> list[torch.Tensor]:
    """The int32 bit planes of codes (N, K) uint8."""
    n, k = codes.shape
    if k % WORD_BITS:
        raise ValueError(f"input width {k} must be a multiple of {WORD_BITS}")
    q = codes.to(torch.int64).t().contiguous()  # (K, N)
    planes = []
    offset = 0
    for w in plane_widths(bits):
        per_word = WORD_BITS // w
        part = (q >> offset) & ((1 << w) - 1)  # (K, N)
        part = part.view(k // per_word, per_word, n)
        shifts = code_offsets(w, layout).to(codes.device).view(1, per_word, 1)
        word = (part << shifts).sum(1)  # (K // per_word, N), < 2^32
        planes.append(torch.where(word >= 2**31, word - 2**32, word).to(torch.int32))
        offset += w
    return planes


def pack(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, group_size: int) -> PackedWeight:
    """Pack codes (N, K) uint8 with per-group scale/zero (N, K // group_size)."""
    n, k = codes.shape
    if k % group_size:
        raise ValueError(f"group size {group_size} does not divide input width {k}")
    planes = pack_planes(codes, bits)
    return PackedWeight(planes, scale.t().contiguous().half(), zero.t().contiguous().half(), bits, group_size, n, k)


def unpack_codes(packed: PackedWeight, layout: int = LAYOUT) -> torch.Tensor:
    """Codes (N, K) uint8 back from the planes."""
    k, n = packed.in_features, packed.out_features
    q = torch.zeros(k, n, dtype=torch.int64, device=packed.scales.device)
    offset = 0
    for w, plane in zip(plane_widths(packed.bits), packed.planes, strict=True):
        per_word = WORD_BITS // w
        word = plane.to(torch.int64) & 0xFFFFFFFF  # (K // per_word, N)
        shifts = code_offsets(w, layout).to(word.device).view(1, per_word, 1)
        part = (word.unsqueeze(1) >> shifts) & ((1 << w) - 1)  # (K // per_word, per_word, N)
        q |= part.reshape(k, n) << offset
        offset += w
    return q.t().to(torch.uint8)


def dequantize(packed: PackedWeight, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """The (N, K) weight the kernels multiply by, computed in float32 then cast."""
    q = unpack_codes(packed).t().float()  # (K, N)
    g = packed.group_size
    s = packed.scales.float().repeat_interleave(g, 0)
    z = packed.zeros.float().repeat_interleave(g, 0)
    return ((q - z) * s).t().to(dtype)
