"""y = x @ W^T for a bit-plane packed W (see packing.py), in Triton.

One fused kernel with two tilings, and a dequantize kernel; `matmul` picks by M:
- decode (M <= 16): K is split over SPLIT_K programs that accumulate with atomics (16-bit
  atomics into the output on Hopper, else an fp32 buffer), so a 4096-wide layer still fills
  the GPU at batch 1; M == 1 reduces with a broadcast multiply-sum (no tensor cores,
  bandwidth-bound), M in 2..16 pads to a 16-row dot;
- mid-size M: code tiles feed `tl.dot` (tensor cores) and are stored directly;
- prefill (M >= DEQUANT_MIN_M): the layer is dequantized once into a 16-bit buffer and cuBLAS
  multiplies (the dequantization is amortized over the rows).

At M == 1 the group's scale and zero factor out, x . ((q - z) s) = s (x . q - z sum(x)), so
the inner loop multiplies raw codes and applies the scale and zero once per tile.

In the K loop a program loads each int32 word of each bit plane once, as a
(BLOCK_K // per_word, BLOCK_N) tile (adjacent n adjacent in memory), expands it to
(BLOCK_K, BLOCK_N) codes by shifting a broadcast copy and reshaping.
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
    def _codes_f32(p0_ptr, p1_ptr, k0, offs_n, mask_n, N,
                   W0: tl.constexpr, W1: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
        """(BLOCK_K, BLOCK_N) codes as exact fp32 values, for inputs k0 .. k0 + BLOCK_K."""
        q = _codes(p0_ptr, k0, offs_n, mask_n, N, W0, BLOCK_K, BLOCK_N)
        if W1 > 0:
            q = q | (_codes(p1_ptr, k0, offs_n, mask_n, N, W1, BLOCK_K, BLOCK_N) << W0)
        # int -> float without the slow converter: 2^23 + q has q as its low mantissa bits
        return (q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0

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

        # --- K loop. M == 1: inside a group x . ((q - z) s) = s (x . q - z sum(x)), so the codes
        # are multiplied as they are and the group's scale and zero applied once per tile -----
        if VECTOR:
            acc_v = tl.zeros((BLOCK_N,), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            q = _codes_f32(p0_ptr, p1_ptr, k0, offs_n, mask_n, N, W0, W1, BLOCK_K, BLOCK_N)
            g = k0 // GROUP
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            offs_k = k0 + tl.arange(0, BLOCK_K)
            if VECTOR:
                x = tl.load(x_ptr + offs_k).to(tl.float32)
                d = tl.sum(x[:, None] * q, axis=0)
                acc_v += s * (d - z * tl.sum(x))
            else:  # tensor cores want one 16-bit tile: dequantize it (measured faster here than factoring)
                w = q * s[None, :] - (z * s)[None, :]
                x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
                if DOT_FP32:
                    acc = tl.dot(x.to(tl.float32), w, acc)
                else:
                    acc = tl.dot(x, w.to(x.dtype), acc)

        # --- epilogue: direct store, or atomics across K splits (into the output itself on
        # GPUs with 16-bit atomics, else into an fp32 buffer) --------------------------------
        if VECTOR:
            y = y_ptr + offs_n
            if not ATOMIC:
                tl.store(y, acc_v.to(y_ptr.dtype.element_ty), mask=mask_n)
            else:
                tl.atomic_add(y, acc_v.to(y_ptr.dtype.element_ty), mask=mask_n)
        else:
            y = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
            mask = mask_m[:, None] & mask_n[None, :]
            if not ATOMIC:
                tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=mask)
            else:
                tl.atomic_add(y, acc.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _dequant_kernel(p0_ptr, p1_ptr, s_ptr, z_ptr, w_ptr, N,
                        GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
                        BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
        """W (K, N) in the activations' dtype: the prefill path multiplies it with cuBLAS."""
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        k0 = tl.program_id(1) * BLOCK_K
        q = _codes_f32(p0_ptr, p1_ptr, k0, offs_n, mask_n, N, W0, W1, BLOCK_K, BLOCK_N)
        g = k0 // GROUP
        s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        w = (q - z[None, :]) * s[None, :]
        offs_k = k0 + tl.arange(0, BLOCK_K)
        tl.store(w_ptr + offs_k[:, None] * N + offs_n[None, :], w.to(w_ptr.dtype.element_ty), mask=mask_n[None, :])


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


# From this many rows on, dequantizing the layer once and calling cuBLAS beats dequantizing a
# tile per output tile inside the fused kernel (benchmarks/kernels.md)
DEQUANT_MIN_M = 64


def _atomic_16bit(device: torch.device) -> bool:
    """fp16/bf16 atomics straight into the output (Hopper and newer): no fp32 buffer, no cast."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def _tiling(m: int, n: int, k: int, bits: int, group: int, device: torch.device) -> dict[str, int]:
    """A small fixed config list, picked by shape (swept on H100: benchmarks/kernels.md)."""
    block_k = min(group, 128)
    if m <= 16:
        block_n = 256 if m == 1 else 64
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


def dequantize_triton(packed: PackedWeight, dtype: torch.dtype) -> torch.Tensor:
    """W^T (K, N) in `dtype`, dequantized on the GPU by one kernel."""
    widths = plane_widths(packed.bits)
    k, n = packed.in_features, packed.out_features
    w = torch.empty(k, n, device=packed.scales.device, dtype=dtype)
    block_k = min(packed.group_size, 64)
    grid = (triton.cdiv(n, 128), k // block_k)
    p1 = packed.planes[1] if len(widths) > 1 else packed.planes[0]
    _dequant_kernel[grid](
        packed.planes[0], p1, packed.scales, packed.zeros, w, n,
        GROUP=packed.group_size, W0=widths[0], W1=widths[1] if len(widths) > 1 else 0, BLOCK_K=block_k, BLOCK_N=128,
    )  # fmt: skip
    return w


def matmul(x: torch.Tensor, packed: PackedWeight, config: dict[str, int] | None = None) -> torch.Tensor:
    """x (..., K) fp16/bf16 -> (..., N), with W from `packed`; picks the decode or fused tiling,
    or for M >= DEQUANT_MIN_M dequantizes once and uses cuBLAS (`config` overrides the choice,
    for tuning sweeps; `{"DEQUANT": 1}` forces the last)."""
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
    if (config or {}).get("DEQUANT") or (config is None and m >= DEQUANT_MIN_M):
        return (x2 @ dequantize_triton(packed, x.dtype)).reshape(*lead, n)
    cfg = config or _tiling(m, n, k, packed.bits, packed.group_size, x.device)
    if packed.group_size % cfg["BLOCK_K"] or cfg["BLOCK_K"] % 32:
        raise ValueError(f"group size {packed.group_size} must be a multiple of 32 and of {cfg['BLOCK_K']}")
    split = cfg["SPLIT_K"]
    if split > 1:
        y = torch.zeros(m, n, device=x.device, dtype=x.dtype if _atomic_16bit(x.device) else torch.float32)
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
