"""The Triton device code behind matmul.py: one kernel per path (`gemv_kernel` and
`gemv_group_kernel` at M = 1, `gemv4_kernel` for ROWS4, `packed_matmul_kernel` for the
tensor-core tiles, `dequant_kernel` for prefill) and the jit helpers they share. matmul.py's
docstring says which path runs when; packing.py the layout they read."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _codes(p_ptr, k0, offs_n, mask_n, N, W: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_K, BLOCK_N) int32 codes of one bit plane of width W, words loaded once."""
    PER: tl.constexpr = 32 // W
    rows = k0 // PER + tl.arange(0, BLOCK_K // PER)
    words = tl.load(p_ptr + rows[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
    i = tl.arange(0, PER)
    shifts = (i % 2) * 16 + (i // 2) * W  # the paired layout (packing.py)
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
def _k_range(K, BLOCK_K: tl.constexpr, SPLIT_K, pid_k):
    """[k_start, k_end) of K split pid_k: whole BLOCK_K steps (each inside one group); the
    last split may be shorter."""
    per_split = tl.cdiv(K // BLOCK_K, SPLIT_K)
    k_start = pid_k * per_split * BLOCK_K
    return k_start, tl.minimum(k_start + per_split * BLOCK_K, K)


@triton.jit
def _epilogue(y, y_ptr, ws_ptr, lock_ptr, offs_m, offs_n, M, N, stride_ym, tile, pid_k, SPLIT_K, REDUCE: tl.constexpr):
    """Write a program's (rows, BLOCK_N) fp32 result `y` for its K split. REDUCE:
    - "store": one split, stored.
    - "atomic": added into a zeroed output by relaxed 16-bit atomics (fire-and-forget `red`;
      the kernel's end orders them for the next kernel; 1.02-1.15x faster than Triton's
      default acq_rel `atom`, kernels_reduce_sweep.md).
    - "serial": the partial goes to a workspace (SPLIT_K, M, N); the split that arrives last at
      this output tile (a per-tile counter) adds the partials up in split order and writes the
      output, then resets the counter: no memset, same result every run."""
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    out = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
    if REDUCE == "serial":
        part = ws_ptr + offs_m[:, None] * N + offs_n[None, :]
        tl.store(part + pid_k * M * N, y, mask=mask)
        tl.debug_barrier()  # every thread's partial is written before the counter moves
        ticket = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if ticket == SPLIT_K - 1:
            total = tl.zeros_like(y)
            for i in range(0, SPLIT_K):
                total += tl.load(part + i * M * N, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(out, total.to(y_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(lock_ptr + tile, 0)  # ready for the next call
    elif REDUCE == "atomic":
        tl.atomic_add(out, y.to(y_ptr.dtype.element_ty), mask=mask, sem="relaxed")
    else:
        tl.store(out, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dq_pair(w0, w1, s2, nzs2, s, z, j: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, DT: tl.constexpr,
             PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr):  # fmt: skip
    """Code pair j of each word as weights (q - z) s in DT: (rows, BLOCK_N, 2), k then k + 1."""
    if PTX:
        if W1 > 0:
            args = [w0 >> (j * W0), (w1 >> (j * W1)) << W0, s2, nzs2]
        else:
            args = [w0 >> (j * W0), s2, nzs2]
        if tl.bfloat16 == DT:
            lo, hi = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=1)
        else:
            lo, hi = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=(tl.float16, tl.float16), is_pure=True, pack=1)
    else:  # exact 128 + q in fp32 (_pair_f32), then the scale and zero
        a, b = _pair_f32(w0, w1, j, W0, W1)
        lo = ((a - (z + 128.0)[None, :]) * s[None, :]).to(DT)
        hi = ((b - (z + 128.0)[None, :]) * s[None, :]).to(DT)
    return tl.join(lo, hi)


@triton.jit
def _pair_tile(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, offs_n, mask_n, N, GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
               BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, DT: tl.constexpr,
               PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr):  # fmt: skip
    """The (BLOCK_K, BLOCK_N) weight tile of one K step in DT, built pair by pair from the words
    (as the decode kernels read them) instead of code by code: in PTX each pair of codes is
    one lop3, one sub and one fp16x2 fma. The pairs of word row r hold k = r PER + 2 j + h;
    joined as (r, n, h, j0, j1[, j2]) and permuted to k order."""
    PER: tl.constexpr = 32 // W0
    HALF: tl.constexpr = PER // 2
    R: tl.constexpr = BLOCK_K // PER
    w0, w1, s, z = _step_words(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, tl.arange(0, R), offs_n, mask_n, N, GROUP, W0, W1)
    if PTX:  # the column's s and -z s as fp16, in both halves of a b32
        sb = s.to(DT).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        zb = (-(z * s)).to(DT).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        s2 = tl.broadcast_to((sb | (sb << 16))[None, :], (R, BLOCK_N))
        nzs2 = tl.broadcast_to((zb | (zb << 16))[None, :], (R, BLOCK_N))
    else:  # unused
        s2 = w0
        nzs2 = w0
    p0 = _dq_pair(w0, w1, s2, nzs2, s, z, 0, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
    p1 = _dq_pair(w0, w1, s2, nzs2, s, z, 1, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
    p2 = _dq_pair(w0, w1, s2, nzs2, s, z, 2, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
    p3 = _dq_pair(w0, w1, s2, nzs2, s, z, 3, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
    if HALF == 4:
        t = tl.join(tl.join(p0, p1), tl.join(p2, p3))  # (R, BLOCK_N, 2, 2, 2): r, n, h, j0, j1
        w = tl.reshape(tl.permute(t, (0, 4, 3, 2, 1)), (BLOCK_K, BLOCK_N))
    else:
        p4 = _dq_pair(w0, w1, s2, nzs2, s, z, 4, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
        p5 = _dq_pair(w0, w1, s2, nzs2, s, z, 5, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
        p6 = _dq_pair(w0, w1, s2, nzs2, s, z, 6, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
        p7 = _dq_pair(w0, w1, s2, nzs2, s, z, 7, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS)
        t = tl.join(tl.join(tl.join(p0, p1), tl.join(p2, p3)), tl.join(tl.join(p4, p5), tl.join(p6, p7)))
        w = tl.reshape(tl.permute(t, (0, 5, 4, 3, 2, 1)), (BLOCK_K, BLOCK_N))
    return w


@triton.jit
def packed_matmul_kernel(
    x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr,
    M, N, K, stride_xm, stride_ym,
    GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K,
    REDUCE: tl.constexpr, PAIRS: tl.constexpr, PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr,
    SWAP: tl.constexpr,
):  # fmt: skip
    # --- tile map: (n tile, m tile, k split) ---------------------------------------
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    k_start, k_end = _k_range(K, BLOCK_K, SPLIT_K, pid_k)

    # --- K loop: tensor cores want one 16-bit tile, so each code tile is dequantized
    # (measured faster here than factoring the scale out) ---------------------------------
    # SWAP: y^T = W x^T, the weights as the dot's left operand (the wide side, rows of
    # 64+ for Hopper's warpgroup MMA, which can read it from registers) and the few rows of
    # x as its narrow right side
    if SWAP:
        acc_t = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
        if PAIRS:  # the tile assembled from dequantized code pairs (fp16 PTX on CUDA)
            w = _pair_tile(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, offs_n, mask_n, N, GROUP, W0, W1, BLOCK_K, BLOCK_N,
                           tl.float32 if DOT_FP32 else x.dtype, PTX, PTX_SRC, PTX_ARGS)  # fmt: skip
        else:
            q = _codes_f32(p0_ptr, p1_ptr, k0, offs_n, mask_n, N, W0, W1, BLOCK_K, BLOCK_N)
            g = k0 // GROUP
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            w = (q * s[None, :] - (z * s)[None, :]).to(tl.float32 if DOT_FP32 else x.dtype)
        if DOT_FP32:
            x = x.to(tl.float32)
        if SWAP:
            acc_t = tl.dot(tl.trans(w), tl.trans(x), acc_t)
        else:
            acc = tl.dot(x, w, acc)
    if SWAP:
        acc = tl.trans(acc_t)

    # --- epilogue: a direct store, or the K splits' partials summed (_epilogue) ----------
    _epilogue(acc, y_ptr, ws_ptr, lock_ptr, offs_m, offs_n, M, N, stride_ym,
              pid_m * tl.num_programs(0) + pid_n, pid_k, SPLIT_K, REDUCE)  # fmt: skip


@triton.jit
def _plane_words(p0_ptr, p1_ptr, k0, rows, offs_n, mask_n, N, W0: tl.constexpr, W1: tl.constexpr):
    """Word rows `rows` of the K step at k0: the plane-0 words (rows, BLOCK_N) and the plane-1 words
    shifted so that word row r's share sits at the bottom (or w0 again without a plane 1)."""
    PER: tl.constexpr = 32 // W0
    RATIO: tl.constexpr = W0 // W1 if W1 > 0 else 1  # plane-0 rows per plane-1 row
    w0 = tl.load(p0_ptr + (k0 // PER + rows)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
    if W1 > 0:  # plane-1 row r // RATIO holds row r's high bits in its (r % RATIO)-th share
        w1 = tl.load(p1_ptr + (k0 // PER // RATIO + rows // RATIO)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        w1 = w1 >> ((rows % RATIO) * (PER // 2) * W1)[:, None]
    else:
        w1 = w0
    return w0, w1


@triton.jit
def _step_words(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, rows, offs_n, mask_n, N, GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr):
    """One K step of the decode kernels: `_plane_words` and the group's scale and zero in fp32."""
    w0, w1 = _plane_words(p0_ptr, p1_ptr, k0, rows, offs_n, mask_n, N, W0, W1)
    g = k0 // GROUP
    s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    return w0, w1, s, z


@triton.jit
def _pair_f32(w0, w1, j: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr):
    """Code pair j of each word as exact fp32 values 128 + q (bias removed by the caller via
    sum(x)): OR-ing bf16's exponent of 128 into both halves, each half read as a bf16."""
    t = (w0 >> (j * W0)) & (((1 << W0) - 1) * 65537)
    if W1 > 0:
        t = t | (((w1 >> (j * W1)) & (((1 << W1) - 1) * 65537)) << W0)
    t = t | 0x43004300
    return (t << 16).to(tl.float32, bitcast=True), (t & -65536).to(tl.float32, bitcast=True)  # q[2j], q[2j + 1]


@triton.jit
def _f16_pair(v, BF16: tl.constexpr, SCALED: tl.constexpr, xscale):
    """A b32 pair of inputs as fp16x2: fp16 pairs pass through, bf16 pairs are converted (exact
    in fp16's normal range: bf16 has 8 significant bits, fp16 11); SCALED: times `xscale`
    (a power of two) on the way."""
    if BF16 or SCALED:
        if BF16:
            lo = (v << 16).to(tl.float32, bitcast=True)
            hi = (v & -65536).to(tl.float32, bitcast=True)
        else:
            lo = v.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            hi = (v >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        if SCALED:
            lo = lo * xscale
            hi = hi * xscale
        lo16 = lo.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        hi16 = hi.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32)
        v = lo16 | (hi16 << 16)
    return v


@triton.jit
def _xpairs(xp, HALF: tl.constexpr, BF16: tl.constexpr = False, SCALED: tl.constexpr = False, xscale=1.0):
    """One input row's HALF pairs (b32, as fp16x2) starting at `xp`, as column vectors (8 slots)."""
    x0 = _f16_pair(tl.load(xp), BF16, SCALED, xscale)[:, None]
    x1 = _f16_pair(tl.load(xp + 1), BF16, SCALED, xscale)[:, None]
    x2 = _f16_pair(tl.load(xp + 2), BF16, SCALED, xscale)[:, None]
    x3 = _f16_pair(tl.load(xp + 3), BF16, SCALED, xscale)[:, None]
    if HALF == 8:
        x4 = _f16_pair(tl.load(xp + 4), BF16, SCALED, xscale)[:, None]
        x5 = _f16_pair(tl.load(xp + 5), BF16, SCALED, xscale)[:, None]
        x6 = _f16_pair(tl.load(xp + 6), BF16, SCALED, xscale)[:, None]
        x7 = _f16_pair(tl.load(xp + 7), BF16, SCALED, xscale)[:, None]
    else:
        x4, x5, x6, x7 = x0, x1, x2, x3
    return x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _step_ptx(x_ptr, w0, w1, s, z, xsum, pair0, HALF: tl.constexpr, W1: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr,
              SCALED: tl.constexpr, xscale):  # fmt: skip
    """One K step in fp16 pairs (inline PTX; bf16 inputs converted first, SCALED ones times
    `xscale`): the step's contribution s sum(q x) per word row, and its zero term s z sum(x)."""
    BF16: tl.constexpr = x_ptr.dtype.element_ty == tl.bfloat16
    xp = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + pair0
    x0, x1, x2, x3, x4, x5, x6, x7 = _xpairs(xp, HALF, BF16, SCALED, xscale)
    if HALF == 4:
        d = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, [w0, x0, x1, x2, x3], dtype=tl.float32, is_pure=True, pack=1)
    else:
        if W1 > 0:
            args = [w0, w1, x0, x1, x2, x3, x4, x5, x6, x7]
        else:
            args = [w0, x0, x1, x2, x3, x4, x5, x6, x7]
        d = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=tl.float32, is_pure=True, pack=1)
    return d * (16.0 / xscale * s)[None, :], s * z * xsum


@triton.jit
def _step_f32(x_ptr, w0, w1, s, z, xsum, pair0, R: tl.constexpr, BLOCK_N: tl.constexpr, HALF: tl.constexpr,
              W0: tl.constexpr, W1: tl.constexpr):  # fmt: skip
    """One K step in exact fp32 (OR-ing bf16's exponent of 128 into both halves gives 128 + q;
    the bias goes with the zero term)."""
    d = tl.zeros((R, BLOCK_N), dtype=tl.float32)
    for j in tl.static_range(HALF):
        lo, hi = _pair_f32(w0, w1, j, W0, W1)
        xa = tl.load(x_ptr + 2 * (pair0 + j)).to(tl.float32)
        xb = tl.load(x_ptr + 2 * (pair0 + j) + 1).to(tl.float32)
        d += xa[:, None] * lo + xb[:, None] * hi
    return d * s[None, :], s * (z + 128.0) * xsum


@triton.jit
def _sub_pair(v, BF16: tl.constexpr, e):
    """An input pair (b32) times 2^e as fp16x2 (e in -14..15 for fp16 inputs: one exact fp16x2 multiply by a
    power of two; bf16 inputs through fp32)."""
    if BF16:  # both halves to fp32 (a shift, a mask), times 2^e, packed to fp16x2 by one cvt
        scale = tl.exp2(e.to(tl.float32))
        lo = (v << 16).to(tl.float32, bitcast=True) * scale
        hi = (v & -65536).to(tl.float32, bitcast=True) * scale
        out = tl.inline_asm_elementwise("cvt.rn.f16x2.f32 $0, $2, $1;", "=r,f,f", [lo, hi], dtype=tl.int32, is_pure=True, pack=1)
    else:
        half = (e + 15) << 10  # the fp16 bits of 2^e
        out = tl.inline_asm_elementwise(
            "mul.rn.f16x2 $0, $1, $2;", "=r,r,r", [v, half | (half << 16)], dtype=tl.int32, is_pure=True, pack=1
        )
    return out


@triton.jit
def _x4(xp, XVEC: tl.constexpr):
    """4 consecutive input pairs (b32) from `xp` (int32 pointers): one 16-byte load each (XVEC, the
    address 16-byte aligned) or 4 loads."""
    if XVEC:
        a, b, c, d = tl.inline_asm_elementwise(
            "ld.global.nc.v4.b32 {$0, $1, $2, $3}, [$4];", "=r,=r,=r,=r,l", [xp.to(tl.int64)],
            dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1,
        )  # fmt: skip
    else:
        a, b, c, d = tl.load(xp), tl.load(xp + 1), tl.load(xp + 2), tl.load(xp + 3)
    return a, b, c, d


@triton.jit
def _sub_xpairs(x_ptr, pair0, f, HALF: tl.constexpr, OFFS: tl.constexpr, XVEC: tl.constexpr):
    """The 8 input-pair slots (column vectors) of rows whose first input pair is `pair0`: pair j times
    2^(f - r_j), r_j = (OFFS >> 4 j) & 15 (as pair_dot_sub_ptx takes them; slots past HALF repeat)."""
    BF16: tl.constexpr = x_ptr.dtype.element_ty == tl.bfloat16
    xp = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + pair0
    v0, v1, v2, v3 = _x4(xp, XVEC)
    x0 = _sub_pair(v0, BF16, f - ((OFFS >> 0) & 15))[:, None]
    x1 = _sub_pair(v1, BF16, f - ((OFFS >> 4) & 15))[:, None]
    x2 = _sub_pair(v2, BF16, f - ((OFFS >> 8) & 15))[:, None]
    x3 = _sub_pair(v3, BF16, f - ((OFFS >> 12) & 15))[:, None]
    if HALF == 8:
        v4, v5, v6, v7 = _x4(xp + 4, XVEC)
        x4 = _sub_pair(v4, BF16, f - ((OFFS >> 16) & 15))[:, None]
        x5 = _sub_pair(v5, BF16, f - ((OFFS >> 20) & 15))[:, None]
        x6 = _sub_pair(v6, BF16, f - ((OFFS >> 24) & 15))[:, None]
        x7 = _sub_pair(v7, BF16, f - ((OFFS >> 28) & 15))[:, None]
    else:
        x4, x5, x6, x7 = x0, x1, x2, x3
    return x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _sub_word(x_ptr, p0_ptr, p1_ptr, k0, rows, offs_n, mask_n, N, f,
              W0: tl.constexpr, W1: tl.constexpr, OFFS: tl.constexpr, XVEC: tl.constexpr):  # fmt: skip
    """pair_dot_sub_ptx's SUB_SLOTS operands for word rows `rows` of one K step: `_plane_words` and the rows'
    `_sub_xpairs`."""
    PER: tl.constexpr = 32 // W0
    w0, w1 = _plane_words(p0_ptr, p1_ptr, k0, rows, offs_n, mask_n, N, W0, W1)
    x0, x1, x2, x3, x4, x5, x6, x7 = _sub_xpairs(x_ptr, (k0 + rows * PER) // 2, f, PER // 2, OFFS, XVEC)
    return w0, w1, x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _sub_step(x_ptr, p0_ptr, p1_ptr, k0, offs_n, mask_n, N, f, W0: tl.constexpr, W1: tl.constexpr, BLOCK_K: tl.constexpr,
              PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, OFFS: tl.constexpr, WORDS: tl.constexpr, XVEC: tl.constexpr):  # fmt: skip
    """One K step by pair_dot_sub_ptx, WORDS words of a column to a PTX block (one widening to fp32 for
    them): sum(q x) 2^(f - 24) per column (BLOCK_N,)."""
    RW: tl.constexpr = BLOCK_K // (32 // W0) // WORDS  # word rows a block input
    rows = tl.arange(0, RW)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = _sub_word(x_ptr, p0_ptr, p1_ptr, k0, rows, offs_n, mask_n, N, f, W0, W1, OFFS, XVEC)
    if WORDS == 1:
        args = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9]
    else:
        b0, b1, b2, b3, b4, b5, b6, b7, b8, b9 = _sub_word(x_ptr, p0_ptr, p1_ptr, k0, RW + rows, offs_n, mask_n, N, f, W0, W1, OFFS, XVEC)
        if WORDS == 2:
            args = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9]
        else:
            c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = _sub_word(
                x_ptr, p0_ptr, p1_ptr, k0, 2 * RW + rows, offs_n, mask_n, N, f, W0, W1, OFFS, XVEC
            )
            e0, e1, e2, e3, e4, e5, e6, e7, e8, e9 = _sub_word(
                x_ptr, p0_ptr, p1_ptr, k0, 3 * RW + rows, offs_n, mask_n, N, f, W0, W1, OFFS, XVEC
            )
            args = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9,
                    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, e0, e1, e2, e3, e4, e5, e6, e7, e8, e9]  # fmt: skip
    d = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=tl.float32, is_pure=True, pack=1)
    return tl.sum(d, axis=0)


@triton.jit
def _gemv_loop_sub(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, N, offs_n, mask_n, k_start, k_end,
                   GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, OFFS: tl.constexpr, WORDS: tl.constexpr, XVEC: tl.constexpr):  # fmt: skip
    """A split's K loop by pair_dot_sub_ptx: (sum of s x . q, sum of s z sum(x)) per column. Each step
    scales its inputs by 2^F, F from the step's own max |x| (read with its sum, so no pass over the inputs
    before the loop): max |x| 2^F < 2^15, F <= 15. bf16 steps past 2^20 (2^(F - r) below fp16's normal
    range) take the exact fp32 step."""
    PER: tl.constexpr = 32 // W0
    R: tl.constexpr = BLOCK_K // PER
    BF16: tl.constexpr = x_ptr.dtype.element_ty == tl.bfloat16
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    acc_z = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        xv = tl.load(x_ptr + k0 + tl.arange(0, BLOCK_K)).to(tl.float32)
        xsum = tl.sum(xv)
        xmax = tl.max(tl.abs(xv))
        g = k0 // GROUP
        s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        if BF16 and xmax >= 1048576.0:
            w0, w1 = _plane_words(p0_ptr, p1_ptr, k0, tl.arange(0, R), offs_n, mask_n, N, W0, W1)
            da, dz = _step_f32(x_ptr, w0, w1, s, z, xsum, (k0 + tl.arange(0, R) * PER) // 2, R, BLOCK_N, PER // 2, W0, W1)
            acc += tl.sum(da, axis=0)
            acc_z += dz
        else:
            f = tl.minimum(15.0, 14.0 - tl.floor(tl.log2(xmax))).to(tl.int32)
            d = _sub_step(x_ptr, p0_ptr, p1_ptr, k0, offs_n, mask_n, N, f, W0, W1, BLOCK_K, PTX_SRC, PTX_ARGS, OFFS, WORDS, XVEC)
            acc += d * (tl.exp2((24 - f).to(tl.float32)) * s)
            acc_z += s * z * xsum
    return acc, acc_z


@triton.jit
def _gemv_loop(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, N, offs_n, mask_n, k_start, k_end,
               GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               USE_PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, SCALED: tl.constexpr, xscale):  # fmt: skip
    """A split's K loop: (per word row sum of s x . q [+ bias], sum over groups of the zero
    term), in fp16-pair PTX (inputs times `xscale` if SCALED) or exact fp32."""
    PER: tl.constexpr = 32 // W0  # codes per plane-0 word
    HALF: tl.constexpr = PER // 2  # code pairs per word
    R: tl.constexpr = BLOCK_K // PER  # plane-0 word rows per step
    rows = tl.arange(0, R)
    acc = tl.zeros((R, BLOCK_N), dtype=tl.float32)  # per word row; summed once at the end
    acc_z = tl.zeros((BLOCK_N,), dtype=tl.float32)  # sum over groups of s * z' * sum(x)
    for k0 in range(k_start, k_end, BLOCK_K):
        w0, w1, s, z = _step_words(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, rows, offs_n, mask_n, N, GROUP, W0, W1)
        xsum = tl.sum(tl.load(x_ptr + k0 + tl.arange(0, BLOCK_K)).to(tl.float32))
        pair0 = (k0 + rows * PER) // 2  # index of each row's first input pair
        if USE_PTX:
            da, dz = _step_ptx(x_ptr, w0, w1, s, z, xsum, pair0, HALF, W1, PTX_SRC, PTX_ARGS, SCALED, xscale)
        else:
            da, dz = _step_f32(x_ptr, w0, w1, s, z, xsum, pair0, R, BLOCK_N, HALF, W0, W1)
        acc += da
        acc_z += dz
    return acc, acc_z


@triton.jit
def gemv_kernel(
    x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, N, K, SPLIT_K,
    GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
    PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, GUARD: tl.constexpr,
    SUB: tl.constexpr = False, OFFS: tl.constexpr = 0, WORDS: tl.constexpr = 1, XVEC: tl.constexpr = False,
):  # fmt: skip
    """y (N,) = W x for one input row. Program (n tile, k split); BLOCK_K <= GROUP.
    PTX: 16-bit inputs, bits 2/3/4, with (PTX_SRC, PTX_ARGS) = pair_dot_ptx(W0, W1);
    GUARD: a split whose inputs reach 4096 in magnitude scales them down by a power of two
    (the fp16 word sums would overflow) and the result back up.
    SUB: (PTX_SRC, PTX_ARGS) = pair_dot_sub_ptx(W0, W1, WORDS) instead, OFFS the pairs' bit positions
    (packed_offsets): 2 instructions a pair of codes, no overflow to guard; XVEC: the inputs read 16
    bytes at a time (x 16-byte aligned)."""
    _gemv_tile(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, N, K, SPLIT_K, tl.program_id(0), tl.program_id(1),
               GROUP, W0, W1, BLOCK_N, BLOCK_K, REDUCE, PTX, PTX_SRC, PTX_ARGS, GUARD, SUB, OFFS, WORDS, XVEC)  # fmt: skip


@triton.jit
def gemv_group_kernel(
    x_ptr, a0_ptr, a1_ptr, sa_ptr, za_ptr, b0_ptr, b1_ptr, sb_ptr, zb_ptr, c0_ptr, c1_ptr, sc_ptr, zc_ptr, y_ptr,
    NA, NB, NC, K, SPLIT_K,
    GROUP: tl.constexpr, WA0: tl.constexpr, WA1: tl.constexpr, WB0: tl.constexpr, WB1: tl.constexpr,
    WC0: tl.constexpr, WC1: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
    PTX: tl.constexpr, SRC_A: tl.constexpr, ARGS_A: tl.constexpr, SRC_B: tl.constexpr, ARGS_B: tl.constexpr,
    SRC_C: tl.constexpr, ARGS_C: tl.constexpr, GUARD: tl.constexpr,
    SUB: tl.constexpr = False, XVEC: tl.constexpr = False, OFFS_A: tl.constexpr = 0, OFFS_B: tl.constexpr = 0,
    OFFS_C: tl.constexpr = 0, WORDS_A: tl.constexpr = 1, WORDS_B: tl.constexpr = 1, WORDS_C: tl.constexpr = 1,
):  # fmt: skip
    """Two or three layers that read the same input row (q/k/v, gate/up), each at its own
    bit-width, in one launch: the n tiles of A, then B, then C (WC0 = 0: none); y is
    [y_A, y_B, y_C] back to back. One launch instead of three saves the fixed per-launch cost.
    SUB (gemv_kernel's SUBNORMAL loop): SRC_* = pair_dot_sub_ptx(W*0, W*1, WORDS_*), OFFS_* its pair positions."""
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    tiles_a = tl.cdiv(NA, BLOCK_N)
    tiles_b = tl.cdiv(NB, BLOCK_N)
    if pid < tiles_a:
        _gemv_tile(x_ptr, a0_ptr, a1_ptr, sa_ptr, za_ptr, y_ptr, y_ptr, y_ptr, NA, K, SPLIT_K, pid, pid_k,
                   GROUP, WA0, WA1, BLOCK_N, BLOCK_K, REDUCE, PTX, SRC_A, ARGS_A, GUARD, SUB, OFFS_A, WORDS_A, XVEC)  # fmt: skip
    elif pid < tiles_a + tiles_b:
        _gemv_tile(x_ptr, b0_ptr, b1_ptr, sb_ptr, zb_ptr, y_ptr + NA, y_ptr, y_ptr, NB, K, SPLIT_K,
                   pid - tiles_a, pid_k, GROUP, WB0, WB1, BLOCK_N, BLOCK_K, REDUCE, PTX, SRC_B, ARGS_B, GUARD,
                   SUB, OFFS_B, WORDS_B, XVEC)  # fmt: skip
    elif WC0 > 0:
        _gemv_tile(x_ptr, c0_ptr, c1_ptr, sc_ptr, zc_ptr, y_ptr + NA + NB, y_ptr, y_ptr, NC, K,
                   SPLIT_K, pid - tiles_a - tiles_b, pid_k, GROUP, WC0, WC1, BLOCK_N, BLOCK_K, REDUCE, PTX, SRC_C, ARGS_C, GUARD,
                   SUB, OFFS_C, WORDS_C, XVEC)  # fmt: skip


@triton.jit
def _split_max(x_ptr, k_start, k_end, BLOCK_K: tl.constexpr):
    """max |x| over a split's inputs (a few hundred bytes, in L2)."""
    xm = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        xm = tl.maximum(xm, tl.abs(tl.load(x_ptr + k0 + tl.arange(0, BLOCK_K)).to(tl.float32)))
    return tl.max(xm)


@triton.jit
def _gemv_tile(
    x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, N, K, SPLIT_K, pid_n, pid_k,
    GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
    PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, GUARD: tl.constexpr,
    SUB: tl.constexpr = False, OFFS: tl.constexpr = 0, WORDS: tl.constexpr = 1, XVEC: tl.constexpr = False,
):  # fmt: skip
    """One (n tile, k split) program of `gemv_kernel`."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    k_start, k_end = _k_range(K, BLOCK_K, SPLIT_K, pid_k)
    if PTX and SUB:  # pair_dot_sub_ptx: each step's inputs scaled by 2^F (max |x| 2^F < 2^15), nothing overflows
        acc, acc_z = _gemv_loop_sub(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, N, offs_n, mask_n, k_start, k_end,
                                    GROUP, W0, W1, BLOCK_N, BLOCK_K, PTX_SRC, PTX_ARGS, OFFS, WORDS, XVEC)  # fmt: skip
        y = acc - acc_z
    else:
        if PTX:
            if GUARD:  # fp16 word sums stay finite for |x| < 4096: a split with larger inputs is scaled down by a power of two
                xmax = _split_max(x_ptr, k_start, k_end, BLOCK_K)
                if xmax < 4096.0:  # the common case: the plain loop
                    acc, acc_z = _gemv_loop(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, N, offs_n, mask_n, k_start, k_end,
                                            GROUP, W0, W1, BLOCK_N, BLOCK_K, True, PTX_SRC, PTX_ARGS, False, 1.0)  # fmt: skip
                else:
                    xscale = tl.exp2(tl.floor(tl.log2(2048.0 / xmax)))
                    acc, acc_z = _gemv_loop(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, N, offs_n, mask_n, k_start, k_end,
                                            GROUP, W0, W1, BLOCK_N, BLOCK_K, True, PTX_SRC, PTX_ARGS, True, xscale)  # fmt: skip
            else:
                acc, acc_z = _gemv_loop(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, N, offs_n, mask_n, k_start, k_end,
                                        GROUP, W0, W1, BLOCK_N, BLOCK_K, True, PTX_SRC, PTX_ARGS, False, 1.0)  # fmt: skip
        else:
            acc, acc_z = _gemv_loop(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, N, offs_n, mask_n, k_start, k_end,
                                    GROUP, W0, W1, BLOCK_N, BLOCK_K, False, PTX_SRC, PTX_ARGS, False, 1.0)  # fmt: skip
        y = tl.sum(acc, axis=0) - acc_z
    _epilogue(y[None, :], y_ptr, ws_ptr, lock_ptr, tl.arange(0, 1), offs_n, 1, N, N, pid_n, pid_k, SPLIT_K, REDUCE)


@triton.jit
def gemv4_kernel(
    x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, M, N, K, stride_xm, stride_ym, SPLIT_K,
    GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
    PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr,
):  # fmt: skip
    """`gemv_kernel` for 4 input rows at once: each word is unpacked once and multiplied with
    the 4 rows (rows past M are zeros, not stored). Program (n tile, 4-row tile, k split).
    PTX: PTX_SRC = pair_dot_ptx(W0, W1, 4)."""
    PER: tl.constexpr = 32 // W0
    HALF: tl.constexpr = PER // 2
    R: tl.constexpr = BLOCK_K // PER
    BF16: tl.constexpr = x_ptr.dtype.element_ty == tl.bfloat16
    pid_n = tl.program_id(0)
    m0 = tl.program_id(1) * 4
    pid_k = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    rows = tl.arange(0, R)
    k_start, k_end = _k_range(K, BLOCK_K, SPLIT_K, pid_k)
    # rows past M read row m0 again (finite values) and are never stored
    xr0 = x_ptr + m0 * stride_xm
    xr1 = x_ptr + tl.minimum(m0 + 1, M - 1) * stride_xm
    xr2 = x_ptr + tl.minimum(m0 + 2, M - 1) * stride_xm
    xr3 = x_ptr + tl.minimum(m0 + 3, M - 1) * stride_xm

    acc0 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
    acc1 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
    acc3 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
    z0 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    z1 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    z2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    z3 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        w0, w1, s, z = _step_words(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, rows, offs_n, mask_n, N, GROUP, W0, W1)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        xs0 = tl.sum(tl.load(xr0 + offs_k).to(tl.float32))
        xs1 = tl.sum(tl.load(xr1 + offs_k).to(tl.float32))
        xs2 = tl.sum(tl.load(xr2 + offs_k).to(tl.float32))
        xs3 = tl.sum(tl.load(xr3 + offs_k).to(tl.float32))
        pair0 = (k0 + rows * PER) // 2
        if PTX:
            a0, a1, a2, a3, a4, a5, a6, a7 = _xpairs(xr0.to(tl.pointer_type(tl.int32), bitcast=True) + pair0, HALF, BF16)
            b0, b1, b2, b3, b4, b5, b6, b7 = _xpairs(xr1.to(tl.pointer_type(tl.int32), bitcast=True) + pair0, HALF, BF16)
            c0, c1, c2, c3, c4, c5, c6, c7 = _xpairs(xr2.to(tl.pointer_type(tl.int32), bitcast=True) + pair0, HALF, BF16)
            e0, e1, e2, e3, e4, e5, e6, e7 = _xpairs(xr3.to(tl.pointer_type(tl.int32), bitcast=True) + pair0, HALF, BF16)
            if HALF == 4:
                args = [w0, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, e0, e1, e2, e3]
            elif W1 > 0:
                args = [w0, w1, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7,
                        c0, c1, c2, c3, c4, c5, c6, c7, e0, e1, e2, e3, e4, e5, e6, e7]  # fmt: skip
            else:
                args = [w0, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7,
                        c0, c1, c2, c3, c4, c5, c6, c7, e0, e1, e2, e3, e4, e5, e6, e7]  # fmt: skip
            d0, d1, d2, d3 = tl.inline_asm_elementwise(
                PTX_SRC, PTX_ARGS, args, dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1
            )
            s16 = (16.0 * s)[None, :]
            bias = z
        else:  # exact fp32 pairs, as in gemv_kernel
            d0 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
            d1 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
            d2 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
            d3 = tl.zeros((R, BLOCK_N), dtype=tl.float32)
            for j in tl.static_range(HALF):
                lo, hi = _pair_f32(w0, w1, j, W0, W1)
                i = 2 * (pair0 + j)
                d0 += tl.load(xr0 + i).to(tl.float32)[:, None] * lo + tl.load(xr0 + i + 1).to(tl.float32)[:, None] * hi
                d1 += tl.load(xr1 + i).to(tl.float32)[:, None] * lo + tl.load(xr1 + i + 1).to(tl.float32)[:, None] * hi
                d2 += tl.load(xr2 + i).to(tl.float32)[:, None] * lo + tl.load(xr2 + i + 1).to(tl.float32)[:, None] * hi
                d3 += tl.load(xr3 + i).to(tl.float32)[:, None] * lo + tl.load(xr3 + i + 1).to(tl.float32)[:, None] * hi
            s16 = s[None, :]
            bias = z + 128.0
        acc0 += d0 * s16
        acc1 += d1 * s16
        acc2 += d2 * s16
        acc3 += d3 * s16
        z0 += s * bias * xs0
        z1 += s * bias * xs1
        z2 += s * bias * xs2
        z3 += s * bias * xs3
    # the 4 rows as one (4, BLOCK_N) tile: join(join(y0, y2), join(y1, y3))[n, i, j] = y_(2i + j)
    y = tl.join(
        tl.join(tl.sum(acc0, axis=0) - z0, tl.sum(acc2, axis=0) - z2), tl.join(tl.sum(acc1, axis=0) - z1, tl.sum(acc3, axis=0) - z3)
    )
    y = tl.trans(tl.reshape(y, (BLOCK_N, 4)))
    _epilogue(y, y_ptr, ws_ptr, lock_ptr, m0 + tl.arange(0, 4), offs_n, M, N, stride_ym,
              tl.program_id(1) * tl.num_programs(0) + pid_n, pid_k, SPLIT_K, REDUCE)  # fmt: skip


@triton.jit
def dequant_kernel(p0_ptr, p1_ptr, s_ptr, z_ptr, w_ptr, N,
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
