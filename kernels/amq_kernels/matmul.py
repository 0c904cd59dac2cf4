"""y = x @ W^T for a bit-plane packed W (see packing.py), in Triton.

One kernel serves both paths; `matmul` picks the tiling:
- decode (M <= 16): BLOCK_M = 1 rows are reduced with a broadcast multiply-sum (no tensor
  cores, bandwidth-bound) and K is split over SPLIT_K programs that accumulate with fp32
  atomics, so a 4096-wide layer still fills the GPU at batch 1;
- prefill (large M): tiles dequantized to registers feed `tl.dot` (tensor cores).

Inside the K loop a program loads, for its BLOCK_N outputs and BLOCK_K inputs, the int32 words
of each bit plane (adjacent n adjacent in memory), shifts and masks the codes out, and
dequantizes with one scale/zero row per group (BLOCK_K divides the group size).
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
    def _packed_matmul_kernel(
        x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr,
        M, N, K,
        stride_xm, stride_ym,
        GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, DOT_FP32: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    ):  # fmt: skip
        # --- tile map: (m tile, n tile, k split) ---------------------------------------
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_k = tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < M
        mask_n = offs_n < N
        k_per_split = K // SPLIT_K
        k_start = pid_k * k_per_split

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        PER0: tl.constexpr = 32 // W0
        for k0 in range(k_start, k_start + k_per_split, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            # --- codes from the bit planes: (BLOCK_K, BLOCK_N) ------------------------
            w0 = tl.load(p0_ptr + (offs_k // PER0)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
            q = (w0 >> ((offs_k % PER0) * W0)[:, None]) & ((1 << W0) - 1)
            if W1 > 0:
                PER1: tl.constexpr = 32 // W1
                w1 = tl.load(p1_ptr + (offs_k // PER1)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
                q = q | (((w1 >> ((offs_k % PER1) * W1)[:, None]) & ((1 << W1) - 1)) << W0)
            # --- dequantize with this group's scale and zero ---------------------------
            g = k0 // GROUP
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            w = (q.to(tl.float32) - z[None, :]) * s[None, :]
            # --- multiply-accumulate -------------------------------------------------
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
            if BLOCK_M == 1:
                acc += tl.sum(x.to(tl.float32)[:, :, None] * w[None, :, :], axis=1)
            elif DOT_FP32:
                acc = tl.dot(x.to(tl.float32), w, acc)
            else:
                acc = tl.dot(x, w.to(x.dtype), acc)
        # --- epilogue ------------------------------------------------------------------
        y = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
        mask = mask_m[:, None] & mask_n[None, :]
        if SPLIT_K == 1:
            tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=mask)
        else:
            tl.atomic_add(y, acc, mask=mask)


def _tiling(m: int, k: int, group: int, device: torch.device) -> dict[str, int]:
    """Small fixed config list: decode splits K; prefill uses tensor-core tiles."""
    if m <= 16:
        split = 1
        if device.type == "cuda":
            split = max(1, min(k // max(group, 256), 8))
            while (k // split) % group:
                split -= 1
        return {"BLOCK_M": 1, "BLOCK_N": 128, "BLOCK_K": min(group, 64), "SPLIT_K": split}
    return {"BLOCK_M": 64 if m <= 128 else 128, "BLOCK_N": 128, "BLOCK_K": min(group, 64), "SPLIT_K": 1}


def reference_matmul(x: torch.Tensor, packed: PackedWeight) -> torch.Tensor:
    """CPU/GPU fallback: dequantize and multiply (what QuantLinear uses without Triton)."""
    from amq_kernels.packing import dequantize

    return torch.nn.functional.linear(x, dequantize(packed, x.dtype))


def matmul(x: torch.Tensor, packed: PackedWeight) -> torch.Tensor:
    """x (..., K) fp16/bf16 -> (..., N), with W from `packed`; picks the decode or prefill tiling."""
    if triton is None:
        return reference_matmul(x, packed)
    if x.shape[-1] != packed.in_features:
        raise ValueError(f"x has {x.shape[-1]} features, the layer takes {packed.in_features}")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"activations must be fp16 or bf16, got {x.dtype}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, packed.in_features).contiguous()
    m, k, n = x2.shape[0], packed.in_features, packed.out_features
    widths = plane_widths(packed.bits)
    if len(widths) > 2:
        raise ValueError(f"{packed.bits}-bit weights have {len(widths)} planes; the kernel takes 2, 3 and 4 bits (and 1)")
    cfg = _tiling(m, k, packed.group_size, x.device)
    if packed.group_size % cfg["BLOCK_K"]:
        raise ValueError(f"group size {packed.group_size} must be a multiple of {cfg['BLOCK_K']}")
    split = cfg["SPLIT_K"]
    y = torch.zeros(m, n, device=x.device, dtype=torch.float32) if split > 1 else torch.empty(m, n, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(m, cfg["BLOCK_M"]), split)
    p1 = packed.planes[1] if len(widths) > 1 else packed.planes[0]
    _packed_matmul_kernel[grid](
        x2, packed.planes[0], p1, packed.scales, packed.zeros, y,
        m, n, k, x2.stride(0), y.stride(0),
        GROUP=packed.group_size, W0=widths[0], W1=widths[1] if len(widths) > 1 else 0,
        DOT_FP32=_INTERPRETING and x.dtype == torch.bfloat16, num_warps=4, **cfg,
    )  # fmt: skip
    return y.to(x.dtype).reshape(*lead, n)
