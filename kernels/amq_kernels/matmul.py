"""y = x @ W^T for a bit-plane packed W (see packing.py), in Triton.

Two kernels share one tile routine, and `matmul` picks between them by M:
- decode (M <= 16): K is split over SPLIT_K programs that accumulate into an fp32 output with
  atomics, so a 4096-wide layer still fills the GPU at batch 1; M == 1 reduces with a
  broadcast multiply-sum (no tensor cores, bandwidth-bound), M in 2..16 pads to a 16-row dot;
- prefill (M > 16): dequantized tiles feed `tl.dot` (tensor cores) and are stored directly.

In the K loop a program loads each int32 word of each bit plane once, as a
(BLOCK_K // per_word, BLOCK_N) tile (adjacent n adjacent in memory), expands it to
(BLOCK_K, BLOCK_N) codes by shifting a broadcast copy and reshaping, and dequantizes with the
group's scale and zero rows: w = q * s - z * s.
"""

from __future__ import annotations

import os

import torch

from amq_kernels.packing import PackedWeight, plane_widths

# Triton's CPU interpreter (TRITON_INTERPRET=1) computes bf16 tl.dot wrongly (numpy has no
# bf16): there, and only there, the bf16 dot runs in fp32.
_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the CPU fallback below needs no triton
    triton = None


if triton is not None:

    @triton.jit
    def _codes(p_ptr, k0, offs_n, mask_n, N, W: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
        """(BLOCK_K, BLOCK_N) int32 codes of one bit plane of width W, words loaded once."""
        PER: tl.constexpr = 32 // W
        rows = k0 // PER + tl.arange(0, BLOCK_K // PER)
        words = tl.load(p_ptr + rows[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        shifts = tl.arange(0, PER) * W
        q = (words[:, None, :] >> shifts[None, :, None]) & ((1 << W) - 1)  # (BLOCK_K // PER, PER, BLOCK_N)
        return tl.reshape(q, BLOCK_K, BLOCK_N)

    @triton.jit
    def _dequant_tile(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, offs_n, mask_n, N,
                      GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
                      BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
        """(BLOCK_K, BLOCK_N) fp32 weights for inputs k0 .. k0 + BLOCK_K (one group)."""
        q = _codes(p0_ptr, k0, offs_n, mask_n, N, W0, BLOCK_K, BLOCK_N)
        if W1 > 0:
            q = q | (_codes(p1_ptr, k0, offs_n, mask_n, N, W1, BLOCK_K, BLOCK_N) << W0)
        g = k0 // GROUP
        s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        zs = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32) * s
        # int -> float without the slow converter: 2^23 + q has q as its low mantissa bits
        qf = (q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
        return qf * s[None, :] - zs[None, :]

    @triton.jit
    def _packed_matmul_kernel(
        x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr,
        M, N, K, stride_xm, stride_ym,
        GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, DOT_FP32: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K, ATOMIC: tl.constexpr,
        VECTOR: tl.constexpr,
    ):  # fmt: skip
        # --- tile map: (n tile, m tile, k split) ---------------------------------------
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_k = tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < M
        mask_n = offs_n < N
        # K splits along whole BLOCK_K steps (each inside one group); the last may be shorter
        steps = K // BLOCK_K
        per_split = tl.cdiv(steps, SPLIT_K)
        k_start = pid_k * per_split * BLOCK_K
        k_end = tl.minimum(k_start + per_split * BLOCK_K, K)

        # --- K loop: dequantize a tile, multiply-accumulate ---------------------------------
        if VECTOR:
            acc_v = tl.zeros((BLOCK_N,), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            w = _dequant_tile(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, offs_n, mask_n, N, GROUP, W0, W1, BLOCK_K, BLOCK_N)
            offs_k = k0 + tl.arange(0, BLOCK_K)
            if VECTOR:
                x = tl.load(x_ptr + offs_k).to(tl.float32)
                acc_v += tl.sum(x[:, None] * w, axis=0)
            else:
                x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
                if DOT_FP32:
                    acc = tl.dot(x.to(tl.float32), w, acc)
                else:
                    acc = tl.dot(x, w.to(x.dtype), acc)

        # --- epilogue: direct store, or fp32 atomics across K splits ------------------------
        if VECTOR:
            y = y_ptr + offs_n
            if not ATOMIC:
                tl.store(y, acc_v.to(y_ptr.dtype.element_ty), mask=mask_n)
            else:
                tl.atomic_add(y, acc_v, mask=mask_n)
        else:
            y = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
            mask = mask_m[:, None] & mask_n[None, :]
            if not ATOMIC:
                tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=mask)
            else:
                tl.atomic_add(y, acc, mask=mask)


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


def _tiling(m: int, n: int, k: int, bits: int, group: int, device: torch.device) -> dict[str, int]:
    """A small fixed config list, picked by shape (swept on H100: benchmarks/kernels.md)."""
    block_k = min(group, 128)
    if m <= 16:
        block_n = 64
        tiles = -(-n // block_n)
        steps = k // block_k
        # enough programs for ~4 waves of the SMs
        split = max(1, min(steps, -(-4 * _sm_count(device) // tiles)))
        return {"BLOCK_M": 1 if m == 1 else 16, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": split, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64 if group % 64 == 0 else group, "SPLIT_K": 1, "num_warps": 8, "num_stages": 3}


def reference_matmul(x: torch.Tensor, packed: PackedWeight) -> torch.Tensor:
    """CPU/GPU fallback: dequantize and multiply (what QuantLinear uses without Triton)."""
    from amq_kernels.packing import dequantize

    return torch.nn.functional.linear(x, dequantize(packed, x.dtype))


def matmul(x: torch.Tensor, packed: PackedWeight, config: dict[str, int] | None = None) -> torch.Tensor:
    """x (..., K) fp16/bf16 -> (..., N), with W from `packed`; picks the decode or prefill tiling
    (`config` overrides it, for tuning sweeps)."""
    if triton is None:
        return reference_matmul(x, packed)
    if x.shape[-1] != packed.in_features:
        raise ValueError(f"x has {x.shape[-1]} features, the layer takes {packed.in_features}")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"activations must be fp16 or bf16, got {x.dtype}")
    widths = plane_widths(packed.bits)
    if len(widths) > 2 or widths[0] > 4:
        raise ValueError(f"the kernel takes 1-4 bit weights, got {packed.bits}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, packed.in_features).contiguous()
    m, k, n = x2.shape[0], packed.in_features, packed.out_features
    cfg = config or _tiling(m, n, k, packed.bits, packed.group_size, x.device)
    if packed.group_size % cfg["BLOCK_K"] or cfg["BLOCK_K"] % 32:
        raise ValueError(f"group size {packed.group_size} must be a multiple of 32 and of {cfg['BLOCK_K']}")
    split = cfg["SPLIT_K"]
    if split > 1:
        y = torch.zeros(m, n, device=x.device, dtype=torch.float32)
    else:
        y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(m, cfg["BLOCK_M"]), split)
    p1 = packed.planes[1] if len(widths) > 1 else packed.planes[0]
    _packed_matmul_kernel[grid](
        x2, packed.planes[0], p1, packed.scales, packed.zeros, y,
        m, n, k, x2.stride(0), y.stride(0), ATOMIC=split > 1,
        GROUP=packed.group_size, W0=widths[0], W1=widths[1] if len(widths) > 1 else 0,
        DOT_FP32=_INTERPRETING and x.dtype == torch.bfloat16, VECTOR=cfg["BLOCK_M"] == 1, **cfg,
    )  # fmt: skip
    return y.to(x.dtype).reshape(*lead, n)
