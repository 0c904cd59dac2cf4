"""The register-fed tensor-core strategy (issue 20): weights reach the MMA without shared memory.

Layout ("mma", derived from the bit planes at load time; same bytes): the codes of each 64-row x
128-column block (64 outputs n, one group of 128 inputs k) are reordered so that each of the 128
threads of a 4-warp program loads, with plain vector loads, exactly the code pairs that its part of
Hopper's warpgroup MMA (and mma.sync m16n8k16) takes from registers for the weights as the left
operand: lane l of warp w holds rows 16 w + l // 4 (+ 8) and columns 16 t + 2 (l % 4) (+ 8)
(+ 1) of every 16-column slice t. A thread's 32 pairs p = kbit + 2 slice + 16 rbit (row + 8 rbit,
column 16 slice + 8 kbit + 2 (l % 4)) sit in its words in order, HALF = 16 / w pairs a word of
width w, the pair's two codes 16 bits apart as in the bit planes. Block (tile, step) is one
contiguous run of 128 x V words, thread-major, so a program streams its K split as one
contiguous range.

Kernel (jit_mma.py): per 128-input step, each pair of codes is masked where it sits and OR-ed with
the 16-bit exponent that makes it 2^e + q exactly (one shift a word, not a pair), one sub gives q,
one fma (q - z) s; with integer zeros the sub takes 2^e + z and the scale goes on the step's fp32
result instead. The tile is the MMA's left operand (y^T = W x^T: 64 rows of W, x in tiles of
16 / 32 / 64 rows), fp32 accumulators, K split over programs. From DEQUANT_MIN_M rows the layer is
dequantized from this layout (`mma_dequantize`) and cuBLAS multiplies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amq_kernels.packing import PackedWeight, pack_planes, plane_widths, unpack_codes

TILE_N = 64  # rows of W per program: 4 warps x 16 (the warpgroup MMA's m64)
STEP_K = 128  # inputs per step: one group


def _pair_positions(width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a plane of `width` bits: (row, col, shift) of every code slot of a block's words,
    each (4 warps, 32 lanes, V words, HALF pairs, 2 halves); row < 64, col < 128."""
    half = 16 // width
    v = 32 // half
    warp = torch.arange(4).view(4, 1, 1, 1, 1)
    lane = torch.arange(32).view(1, 32, 1, 1, 1)
    word = torch.arange(v).view(1, 1, v, 1, 1)
    j = torch.arange(half).view(1, 1, 1, half, 1)
    h = torch.arange(2).view(1, 1, 1, 1, 2)
    p = j + half * word  # the thread's pair index
    kbit, slice_, rbit = p & 1, (p >> 1) & 7, p >> 4
    row = 16 * warp + 8 * rbit + lane // 4
    col = 16 * slice_ + 8 * kbit + 2 * (lane % 4) + h
    shift = 16 * h + width * j
    shape = (4, 32, v, half, 2)
    return row.expand(shape), col.expand(shape), shift.expand(shape)


@dataclass
class MmaWeight:
    """A layer in the mma layout: its bit planes reordered (`pack_mma`), and per (tile, step) each
    row's fp16 scale and zero as one int32 (s low half, z high), in slot 16 w + 2 (l // 4) + rbit
    (a thread's two rows side by side). The same bytes as the PackedWeight, which `unpack_mma`
    gives back exactly. int_zero: every zero is an integer (GPTQ, AWQ, RTN make them so): the
    kernel then takes q - z per pair exactly and scales each step's fp32 result (one op a pair
    fewer)."""

    planes: list[torch.Tensor]  # int32 (N / 64, K / 128, 128 x V) each
    sz: torch.Tensor  # int32 (N / 64, K / 128, 64)
    bits: int
    out_features: int
    in_features: int
    int_zero: bool

    def nbytes(self) -> int:
        return sum(p.numel() * 4 for p in self.planes) + self.sz.numel() * 4


SLOT = torch.arange(64)
ROW_OF_SLOT = 16 * (SLOT // 16) + (SLOT % 16) // 2 + 8 * (SLOT % 2)  # slot 16 w + 2 lq + rbit -> row 16 w + lq + 8 rbit


def pack_mma(packed: PackedWeight) -> MmaWeight:
    """`packed` in the mma layout (the same bytes, reordered)."""
    n, k = packed.out_features, packed.in_features
    if not mma_ok(packed):
        raise ValueError(
            f"the mma layout takes 2-4 bits, N % {TILE_N} == 0, K % {STEP_K} == 0 and group {STEP_K}; "
            f"got {packed.bits} bits, {n} x {k}, group {packed.group_size}"
        )
    q = unpack_codes(packed).to(torch.int64)  # (N, K)
    blocks = q.view(n // TILE_N, TILE_N, k // STEP_K, STEP_K).permute(0, 2, 1, 3)  # (tiles, steps, 64, 128)
    planes, offset = [], 0
    for w in plane_widths(packed.bits):
        row, col, shift = (t.to(q.device) for t in _pair_positions(w))
        part = (blocks >> offset) & ((1 << w) - 1)
        codes = part[:, :, row, col]  # (tiles, steps, 4, 32, V, HALF, 2)
        words = (codes << shift).sum((-1, -2))  # (tiles, steps, 4, 32, V)
        words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
        planes.append(words.reshape(n // TILE_N, k // STEP_K, -1).contiguous())
        offset += w
    pair = torch.stack([packed.scales.half(), packed.zeros.half()], -1).view(torch.int32).squeeze(-1)  # (groups, N)
    sz = pair.t().reshape(n // TILE_N, TILE_N, k // STEP_K)[:, ROW_OF_SLOT.to(q.device)].permute(0, 2, 1).contiguous()
    z = packed.zeros.float()
    int_zero = bool((z == z.round()).all()) and bool((z.abs() < 128).all())  # 2^e + z exact in 16 bits
    return MmaWeight(planes, sz, packed.bits, n, k, int_zero)


def unpack_mma(weight: MmaWeight) -> PackedWeight:
    """The PackedWeight `pack_mma` was made from, exactly."""
    n, k = weight.out_features, weight.in_features
    dev = weight.sz.device
    codes = torch.zeros(n // TILE_N, k // STEP_K, TILE_N, STEP_K, dtype=torch.int64, device=dev)
    offset = 0
    for w, plane in zip(plane_widths(weight.bits), weight.planes, strict=True):
        row, col, shift = (t.to(dev) for t in _pair_positions(w))
        words = (plane.to(torch.int64) & 0xFFFFFFFF).view(n // TILE_N, k // STEP_K, 4, 32, -1, 1, 1)
        part = ((words >> shift) & ((1 << w) - 1)) << offset  # (tiles, steps, 4, 32, V, HALF, 2)
        codes[:, :, row, col] |= part
        offset += w
    codes = codes.permute(0, 2, 1, 3).reshape(n, k).to(torch.uint8)
    pair = torch.empty(n // TILE_N, TILE_N, k // STEP_K, dtype=torch.int32, device=dev)
    pair[:, ROW_OF_SLOT.to(dev)] = weight.sz.permute(0, 2, 1)
    sz = pair.reshape(n, k // STEP_K).t().contiguous().view(torch.float16).view(k // STEP_K, n, 2)
    return PackedWeight(pack_planes(codes, weight.bits), sz[..., 0].contiguous(), sz[..., 1].contiguous(), weight.bits, STEP_K, n, k)


def mma_ok(packed: PackedWeight) -> bool:
    """Shapes and bit-widths the mma layout covers."""
    return (
        packed.out_features % TILE_N == 0 and packed.in_features % STEP_K == 0 and packed.group_size == STEP_K and packed.bits in (2, 3, 4)
    )


def placed_pair_ptx(high_bits: bool, bf16: bool, int_zero: bool = False) -> tuple[str, str]:
    """One code pair masked where it sits in its word to two 16-bit weights (q - z) s, exactly
    as `dequantize` rounds them: lop3 (mask, OR the exponent that makes the pair 2^e + q),
    [lop3: the high-bit plane's bits], sub of 2^e (q exact), fma with s and -z s. int_zero: the
    sub takes 2^e + z instead (q - z exact, a small integer) and there is no fma: the caller scales
    the step's fp32 result. Operands: $0, $1 the weights; word, mask, [high word, high mask],
    magic (2^e in both halves), then s, -z s (16-bit pairs) or, int_zero, 2^e + z."""
    kind = "bf16x2" if bf16 else "f16x2"
    magic = 4 if high_bits else 2
    lines = ["{", ".reg .b32 t;", f"lop3.b32 t, $2, $3, ${magic + 2}, 0xEA;"]
    if high_bits:
        lines.append("lop3.b32 t, $4, $5, t, 0xEA;")
    if int_zero:
        lines.append(f"sub.{kind} t, t, ${magic + 3};")
    else:
        lines += [f"sub.{kind} t, t, ${magic + 2};", f"fma.rn.{kind} t, t, ${magic + 3}, ${magic + 4};"]
    lines += ["mov.b32 {$0, $1}, t;", "}"]
    return "\n".join(lines), ",".join(["=h", "=h"] + ["r"] * (magic + (2 if int_zero else 3)))


def mma_dequantize(weight: MmaWeight, dtype: torch.dtype) -> torch.Tensor:
    """W (N, K) in `dtype` from the mma layout, one kernel (the prefill path's first half)."""
    from amq_kernels.jit_mma import mma_dequant_kernel
    from amq_kernels.matmul import _INTERPRETING, FUSE

    n, k = weight.out_features, weight.in_features
    widths = plane_widths(weight.bits)
    w0, w1 = widths[0], widths[1] if len(widths) > 1 else 0
    w = torch.empty(n, k, device=weight.sz.device, dtype=dtype)
    ptx = w.is_cuda and not _INTERPRETING
    src, args = placed_pair_ptx(w1 > 0, dtype == torch.bfloat16) if ptx else ("", "")
    mma_dequant_kernel[(n // TILE_N, k // STEP_K)](
        weight.planes[0], weight.planes[1] if w1 else weight.planes[0], weight.sz, w, k,
        W0=w0, W1=w1, PTX=ptx, PTX_SRC=src, PTX_ARGS=args, num_warps=4, **FUSE,
    )  # fmt: skip
    return w


def _next_pow2(m: int) -> int:
    return 1 << max(0, m - 1).bit_length()


def mma_matmul(
    x: torch.Tensor,
    weight: MmaWeight,
    split_k: int | None = None,
    out: torch.Tensor | None = None,
    num_stages: int = 1,
    waves: int = 4,
    unroll: int | None = None,
    fused: bool | None = None,
) -> torch.Tensor:
    """x (M, K) fp16/bf16 @ W^T for W in the mma layout (`out`: (M, N), written in place). K split
    over programs to fill the GPU (about `waves` programs per SM); `unroll` steps a loop iteration.
    From DEQUANT_MIN_M rows on (`fused=None`), the layer is dequantized once and cuBLAS multiplies."""
    from amq_kernels.jit_mma import mma_matmul_kernel
    from amq_kernels.matmul import _INTERPRETING, DEQUANT_MIN_M, FUSE, _outputs, _reduction, _sm_count

    interpreting = _INTERPRETING
    x = x.contiguous()
    m, k = x.shape
    n = weight.out_features
    if k != weight.in_features or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"mma_matmul takes fp16/bf16 rows of {weight.in_features} inputs, got {tuple(x.shape)} {x.dtype}")
    if not (fused if fused is not None else m < DEQUANT_MIN_M):
        w = mma_dequantize(weight, x.dtype)
        return torch.mm(x, w.t(), out=out) if out is not None else x @ w.t()
    block_m = min(64, max(16, _next_pow2(m)))
    widths = plane_widths(weight.bits)
    w0, w1 = widths[0], widths[1] if len(widths) > 1 else 0
    steps, tiles = k // STEP_K, n // TILE_N
    unroll = unroll or (2 if steps % 2 == 0 else 1)
    if steps % unroll:
        raise ValueError(f"unroll {unroll} does not divide the {steps} steps")
    m_tiles = -(-m // block_m)
    if split_k is None:
        split_k = max(1, -(-waves * _sm_count(x.device) // (tiles * m_tiles)))
    per = -(-(steps // unroll) // max(1, min(split_k, steps // unroll))) * unroll
    split = -(-steps // per)
    reduce = _reduction({}, split)
    y, ws, lock = _outputs(x, n, split, reduce, tiles, out)
    ptx = x.is_cuda and not interpreting
    int_zero = weight.int_zero
    src, args = placed_pair_ptx(w1 > 0, x.dtype == torch.bfloat16, int_zero) if ptx else ("", "")
    p1 = weight.planes[1] if w1 else weight.planes[0]
    mma_matmul_kernel[(tiles, split, m_tiles)](
        x, weight.planes[0], p1, weight.sz, y, ws, lock, m, n, k, x.stride(0), y.stride(0), split,
        W0=w0, W1=w1, BLOCK_M=block_m, REDUCE=reduce, UNROLL=unroll, PTX=ptx, PTX_SRC=src,
        PTX_ARGS=args, DOT_FP32=interpreting and x.dtype == torch.bfloat16, INT_ZERO=int_zero, num_warps=4, num_stages=num_stages,
        **FUSE,
    )  # fmt: skip
    if out is not None and y is not out:
        y = out.copy_(y)
    return y.to(x.dtype)
