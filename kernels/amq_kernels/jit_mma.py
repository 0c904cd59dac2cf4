"""Device code of the register-fed tensor-core strategy (mma.py says the layout and the plan)."""

from __future__ import annotations

import triton
import triton.language as tl

from amq_kernels.jit import _epilogue


@triton.jit
def _pair(w0, w1, s2, nzs2, sc, nzs, j: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, DT: tl.constexpr, PTX: tl.constexpr,
          PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, INT_ZERO: tl.constexpr):  # fmt: skip
    """Pair j of each word as two weights (q - z) s in DT, joined (low half, high half); INT_ZERO:
    as q - z (an exact small integer; the caller scales the step's result), s2 = z in both halves.
    The word is shifted only every CHUNK pairs: pair j is masked where it sits, r bits up, and
    OR-ed with the 16-bit exponent that makes its value 2^(MANT - r) + q exactly (fp16: 10
    mantissa bits, bf16: 7; the code's top bit must stay below them), so one sub gives q."""
    MANT: tl.constexpr = 7 if tl.bfloat16 == DT else 10
    CHUNK: tl.constexpr = (MANT - W0 - W1) // W0 + 1  # pairs per shift of the word
    R: tl.constexpr = (j % CHUNK) * W0  # where the pair sits after the shift
    a = w0 >> ((j // CHUNK) * CHUNK * W0)
    if W1 > 0:  # the pair's high bit (bit j, 16 + j of w1) to bits R + W0, 16 + R + W0
        UP: tl.constexpr = R + W0 - j
        if UP >= 0:
            b = w1 << UP
        else:
            b = w1 >> (-UP)
    else:
        b = a
    if PTX:  # lop3, [lop3], sub, [fma] (mma.placed_pair_ptx)
        BIAS: tl.constexpr = (134 - R) << 7 if tl.bfloat16 == DT else (25 - R) << 10
        mask = tl.full(a.shape, ((1 << W0) - 1) * 65537 << R, tl.int32)
        magic = tl.full(a.shape, BIAS * 65537, tl.int32)
        if INT_ZERO:  # sub 2^e + z instead of 2^e (the same for every pair at this R: computed once)
            if tl.bfloat16 == DT:
                c = tl.inline_asm_elementwise("add.bf16x2 $0, $1, $2;", "=r,r,r", [magic, s2], dtype=tl.int32, is_pure=True, pack=1)
            else:
                c = tl.inline_asm_elementwise("add.f16x2 $0, $1, $2;", "=r,r,r", [magic, s2], dtype=tl.int32, is_pure=True, pack=1)
            tail = [magic, c]
        else:
            tail = [magic, s2, nzs2]
        if W1 > 0:  # the high-bit plane's one bit (W1 = 1) above the pair's low bits
            himask = tl.full(a.shape, ((1 << W1) - 1) * 65537 << (R + W0), tl.int32)
            args = [a, mask, b, himask] + tail  # noqa: RUF005 (no starred lists in triton.jit)
        else:
            args = [a, mask] + tail  # noqa: RUF005
        if tl.bfloat16 == DT:
            lo, hi = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=1)
        else:
            lo, hi = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=(tl.float16, tl.float16), is_pure=True, pack=1)
    else:
        m0: tl.constexpr = (1 << W0) - 1
        lo = (a >> R) & m0
        hi = (a >> (16 + R)) & m0
        if W1 > 0:
            lo = lo | ((b >> R) & (m0 + 1))
            hi = hi | ((b >> (16 + R)) & (m0 + 1))
        if INT_ZERO:  # nzs = z
            lo = (lo.to(tl.float32) - nzs).to(DT)
            hi = (hi.to(tl.float32) - nzs).to(DT)
        else:
            lo = (lo.to(tl.float32) * sc + nzs).to(DT)
            hi = (hi.to(tl.float32) * sc + nzs).to(DT)
    return tl.join(lo, hi)


@triton.jit
def _weight_tile(w0, w1, s2, nzs2, sc, nzs, W0: tl.constexpr, W1: tl.constexpr, DT: tl.constexpr, PTX: tl.constexpr,
                 PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, INT_ZERO: tl.constexpr):  # fmt: skip
    """The (64, 128) weight tile of one step from the threads' words (4, 32, V): pair p = j + HALF v of
    lane l of warp w is row 16 w + 8 rbit + l // 4, column 16 slice + 8 kbit + 2 (l % 4) + h with
    p = kbit + 2 slice + 16 rbit. Only joins, reshapes and a permute: no data moves between threads."""
    HALF: tl.constexpr = 16 // W0
    c0 = _pair(w0, w1, s2, nzs2, sc, nzs, 0, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
    c1 = _pair(w0, w1, s2, nzs2, sc, nzs, 1, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
    c2 = _pair(w0, w1, s2, nzs2, sc, nzs, 2, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
    c3 = _pair(w0, w1, s2, nzs2, sc, nzs, 3, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
    if HALF == 4:  # (4, 32, 8 words, h, j0, j1): p bits j0 j1 v0 v1 v2 = kbit s0 s1 s2 rbit
        t = tl.join(tl.join(c0, c1), tl.join(c2, c3))
        t = tl.reshape(t, (4, 8, 4, 2, 2, 2, 2, 2, 2))  # warp, lq, lr, v2, v1, v0, h, j0, j1
        t = tl.permute(t, (0, 3, 1, 4, 5, 8, 7, 2, 6))  # warp, rbit, lq | s2, s1, s0, kbit, lr, h
    else:  # (4, 32, 4 words, h, j0, j1, j2): p bits j0 j1 j2 v0 v1 = kbit s0 s1 s2 rbit
        c4 = _pair(w0, w1, s2, nzs2, sc, nzs, 4, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
        c5 = _pair(w0, w1, s2, nzs2, sc, nzs, 5, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
        c6 = _pair(w0, w1, s2, nzs2, sc, nzs, 6, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
        c7 = _pair(w0, w1, s2, nzs2, sc, nzs, 7, W0, W1, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
        t = tl.join(tl.join(tl.join(c0, c1), tl.join(c2, c3)), tl.join(tl.join(c4, c5), tl.join(c6, c7)))
        t = tl.reshape(t, (4, 8, 4, 2, 2, 2, 2, 2, 2))  # warp, lq, lr, v1, v0, h, j0, j1, j2
        t = tl.permute(t, (0, 3, 1, 4, 8, 7, 6, 2, 5))  # warp, rbit, lq | s2, s1, s0, kbit, lr, h
    return tl.reshape(t, (64, 128))


@triton.jit
def _per_word(v2, V: tl.constexpr):
    """A (4, 32, 2) per-(thread, rbit) value spread over the thread's V words (rbit = the top bit of v)."""
    return tl.reshape(tl.broadcast_to(v2[:, :, :, None], (4, 32, 2, V // 2)), (4, 32, V))


@triton.jit
def _bits16(v, DT: tl.constexpr):
    """fp32 values rounded to DT, their 16 bits in both halves of a b32."""
    b = v.to(DT).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return b * 65537


@triton.jit
def _tile(block, p0_ptr, p1_ptr, sz_ptr, offs_w0, offs_w1, offs_sz, W0: tl.constexpr, W1: tl.constexpr, V0: tl.constexpr,
          DT: tl.constexpr, PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, INT_ZERO: tl.constexpr):  # fmt: skip
    """Block (tile, step)'s (64, 128) weight tile in DT, in the MMA's register layout: (q - z) s, or
    with INT_ZERO q - z (exact; the caller applies s)."""
    w0 = tl.load(p0_ptr + block * (128 * V0) + offs_w0)
    if W1 > 0:  # the high-bit word of pair p = j + 8 v is p // 16 = v // 2, at bit p % 16 = j + 8 (v % 2)
        w1 = tl.load(p1_ptr + block * 256 + offs_w1)
        w1 = tl.reshape(tl.join(w1, w1 >> 8), (4, 32, 4))
    else:
        w1 = w0
    sz = tl.load(sz_ptr + block * 64 + offs_sz)  # (4, 32, 2): the (s, z) fp16 pairs of the thread's two rows
    sc = (sz & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    zp = (sz >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    if INT_ZERO:
        nzs = zp  # the pair takes z
        s2 = _bits16(zp, DT) if PTX else sz
    else:
        nzs = -(zp * sc)
        s2 = _bits16(sc, DT) if PTX else sz
    nzs2 = _bits16(nzs, DT) if PTX else sz
    return _weight_tile(w0, w1, _per_word(s2, V0), _per_word(nzs2, V0), _per_word(sc, V0), _per_word(nzs, V0), W0, W1, DT, PTX,
                        PTX_SRC, PTX_ARGS, INT_ZERO)  # fmt: skip


@triton.jit
def _offsets(V0: tl.constexpr):
    """A thread's word offsets in a block (plane 0, the 1-bit plane), its (s, z) slots, and the slot of each of the 64 rows."""
    thread = tl.arange(0, 4)[:, None, None] * 32 + tl.arange(0, 32)[None, :, None]
    offs_w0 = thread * V0 + tl.arange(0, V0)[None, None, :]  # (4, 32, V0)
    offs_w1 = thread * 2 + tl.arange(0, 2)[None, None, :]  # (4, 32, 2): the 1-bit plane
    # the (s, z) slots of the thread's rows 16 w + l // 4 + 8 rbit: 16 w + 2 (l // 4) + rbit
    offs_sz = tl.arange(0, 4)[:, None, None] * 16 + (tl.arange(0, 32) // 4)[None, :, None] * 2 + tl.arange(0, 2)[None, None, :]
    r = tl.arange(0, 64)
    slot_of_row = (r // 16) * 16 + (r % 8) * 2 + (r % 16) // 8  # row 16 w + lq + 8 rbit -> slot 16 w + 2 lq + rbit
    return offs_w0, offs_w1, offs_sz, slot_of_row


@triton.jit
def _step(acc, s, pid_n, steps, x_ptr, p0_ptr, p1_ptr, sz_ptr, offs_m, mask_m, stride_xm, offs_w0, offs_w1, offs_sz, slot_of_row,
          W0: tl.constexpr, W1: tl.constexpr, V0: tl.constexpr, DT: tl.constexpr,
          PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, INT_ZERO: tl.constexpr):  # fmt: skip
    """One 128-input step (one group) of a program: acc += W_tile x^T, the tile (q - z) s in DT;
    INT_ZERO: acc += s (q - z) x^T, the tile q - z (exact) and s applied to the fp32 result."""
    block = pid_n * steps + s
    w = _tile(block, p0_ptr, p1_ptr, sz_ptr, offs_w0, offs_w1, offs_sz, W0, W1, V0, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)
    offs_k = s * 128 + tl.arange(0, 128)
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)  # (BLOCK_M, 128)
    if INT_ZERO:  # a fresh fp32 result for the step, scaled per row (s read again, in the result's layout)
        d = tl.dot(w, tl.trans(x.to(DT)))
        s_rows = (tl.load(sz_ptr + block * 64 + slot_of_row) & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        return acc + d * s_rows[:, None]
    return tl.dot(w, tl.trans(x.to(DT)), acc)  # (64, BLOCK_M)


@triton.jit
def mma_dequant_kernel(p0_ptr, p1_ptr, sz_ptr, w_ptr, K, W0: tl.constexpr, W1: tl.constexpr, PTX: tl.constexpr, PTX_SRC: tl.constexpr,
                       PTX_ARGS: tl.constexpr):  # fmt: skip
    """W (N, K) in w's dtype from the mma layout, one block per program (prefill: cuBLAS multiplies it)."""
    V0: tl.constexpr = 32 // (16 // W0)
    DT: tl.constexpr = w_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    s = tl.program_id(1)
    offs_w0, offs_w1, offs_sz, _ = _offsets(V0)
    w = _tile(pid_n * (K // 128) + s, p0_ptr, p1_ptr, sz_ptr, offs_w0, offs_w1, offs_sz, W0, W1, V0, DT, PTX, PTX_SRC, PTX_ARGS, False)
    rows = pid_n * 64 + tl.arange(0, 64)
    cols = s * 128 + tl.arange(0, 128)
    tl.store(w_ptr + rows[:, None] * K + cols[None, :], w)


@triton.jit
def mma_matmul_kernel(
    x_ptr, p0_ptr, p1_ptr, sz_ptr, y_ptr, ws_ptr, lock_ptr,
    M, N, K, stride_xm, stride_ym, SPLIT_K,
    W0: tl.constexpr, W1: tl.constexpr, BLOCK_M: tl.constexpr, REDUCE: tl.constexpr, UNROLL: tl.constexpr,
    PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, DOT_FP32: tl.constexpr, INT_ZERO: tl.constexpr,
):  # fmt: skip
    """y = x W^T, W in the mma layout. Program (n tile of 64, k split, BLOCK_M rows of x);
    UNROLL steps per loop iteration (every split's step count is a multiple of it)."""
    HALF: tl.constexpr = 16 // W0
    V0: tl.constexpr = 32 // HALF  # plane-0 words per thread per step
    DT: tl.constexpr = tl.float32 if DOT_FP32 else x_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    steps = K // 128
    per_split = tl.cdiv(steps // UNROLL, SPLIT_K) * UNROLL
    s_start = pid_k * per_split
    s_end = tl.minimum(s_start + per_split, steps)
    offs_n = pid_n * 64 + tl.arange(0, 64)
    offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    offs_w0, offs_w1, offs_sz, slot_of_row = _offsets(V0)
    acc = tl.zeros((64, BLOCK_M), dtype=tl.float32)
    for s in range(s_start, s_end, UNROLL):
        for u in tl.static_range(UNROLL):
            acc = _step(acc, s + u, pid_n, steps, x_ptr, p0_ptr, p1_ptr, sz_ptr, offs_m, mask_m, stride_xm, offs_w0, offs_w1, offs_sz,
                        slot_of_row, W0, W1, V0, DT, PTX, PTX_SRC, PTX_ARGS, INT_ZERO)  # fmt: skip
    _epilogue(tl.trans(acc), y_ptr, ws_ptr, lock_ptr, offs_m, offs_n, M, N, stride_ym, pid_n, pid_k, SPLIT_K, REDUCE)
