"""y = x @ W^T for a bit-plane packed W (see packing.py), in Triton.

Four paths; `matmul` picks by M (and bits, dtype):
- M == 1, `_gemv_kernel`: bandwidth-bound, no tensor cores. K is split over SPLIT_K programs
  so that a 4096-wide layer still fills the GPU at batch 1. The words of a
  (BLOCK_K // per_word, BLOCK_N) tile are never expanded into a code tile: each word is
  unpacked in place, a pair of adjacent codes per shift-and-mask (they sit 16 bits apart),
  and multiplied with the matching pair of inputs. On CUDA the whole word is one inline-PTX
  block working on fp16 pairs (`_pair_dot_ptx`; bf16 inputs are converted to fp16 pairs first);
  a split whose inputs reach 4096 (where fp16 word sums could overflow) scales them by a power
  of two (GUARD). Under the interpreter the pairs become exact fp32 values through a bf16
  exponent trick. The group's scale and zero factor out,
  x . ((q - z) s) = s (x . q - z sum(x)), so they are applied once per word, not per code.
- M up to DEQUANT_MIN_M - 1, `_packed_matmul_kernel`: weight tiles are dequantized and fed to
  `tl.dot` (tensor cores); split K, 16-row tiles up to M = 16, 64 x 128 tiles above. Up to
  M = 16 the tile is built pair by pair (PAIRS: one lop3 + sub + fma in 16-bit pairs per two
  codes, inline PTX) and is the MMA's left operand (SWAP: y^T = W x^T, so the weights fill the
  64-row side of Hopper's warpgroup MMA and the few x rows its narrow side).
- opt-in (config ROWS4), M in 2..4, `_gemv4_kernel`: the M = 1 loop (no guard), each word
  unpacked once for 4 rows (the default before PAIRS + SWAP tiles beat it).
- prefill (M >= DEQUANT_MIN_M): the layer is dequantized once into a 16-bit buffer
  (`_dequant_kernel`) and cuBLAS multiplies (the dequantization is amortized over the rows).

K splits meet in `_epilogue`: by default through relaxed atomics into a zeroed output (16-bit
atomics on Hopper, else an fp32 buffer); config `SERIAL: 1` instead sums fp32 partials in split
order in the last-arriving program (deterministic, more accurate in bf16; 3-15% slower on H100 at
M = 1, kernels_gemv_sweep.md, kernels_reduce_sweep.md).
"""

from __future__ import annotations

import os
import struct

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


def _f16x2(v: float) -> int:
    """The fp16 bits of v in both halves of a b32."""
    h = int.from_bytes(struct.pack("<e", v), "little")
    return h | h << 16


def _pair_dot_ptx(w0: int, w1: int, rows: int = 1, few_shifts: bool = False) -> tuple[str, str]:
    """Inline PTX for one word (plus its high-bit word at 3 bits) against `rows` input rows: per
    row, the sum over the word's codes of q * x / 16, in fp16 pairs, returned as fp32.

    Operands: $0 .. $(rows - 1) the fp32 results, then the plane-0 word, [the plane-1 word shifted
    so that its pair j sits at bits j and 16 + j], then the input pairs (x[2j], x[2j + 1]) as b32,
    row by row. Per pair of codes, once for all rows: shift, mask and OR the fp16 exponent of 1024
    in (one lop3: 1024 + q in each half), one fma to (q / 16) exactly; then per row one fma into
    that row's fp16 pair accumulator. Dividing by 16 keeps the word's sum of up to 16 products of
    codes < 16 inside fp16's range for |x| < 4096; the caller multiplies the scale by 16.
    few_shifts: a pair is masked where it sits (1024 + q * 2^r, r < 10 - bits) and the fma scales
    by 2^-(r + 4) instead; the word is shifted only when the next pair would reach the exponent
    bits (once per word at 2 and 4 bits instead of 7 and 3 times). Returns the PTX and its
    operand constraints."""
    half = 32 // w0 // 2
    pair_mask = ((1 << w0) - 1) * 0x00010001
    word = f"${rows}"
    first_x = rows + (2 if w1 else 1)
    accs = [f"a{r}" for r in range(rows)]
    body, offsets, base, src = [], [], 0, word
    for j in range(half):
        r = j * w0 - base if few_shifts else 0  # where the pair sits in the (shifted) word
        if few_shifts and r + w0 + w1 > 10:  # it would reach fp16's exponent: shift the word here
            base, r = j * w0, 0
        if few_shifts and j * w0 != 0 and r == 0:
            body.append(f"shr.u32 s, {word}, {base};")
            src = "s"
        elif not few_shifts and j:
            body.append(f"shr.u32 s, {word}, {w0 * j};")
            src = "s"
        offsets.append(r)
        body.append(f"lop3.b32 t, {src}, {pair_mask << r:#010x}, 0x64006400, 0xEA;")  # (src & mask) | 1024
        if w1:
            hi_mask = ((1 << w1) - 1) * 0x00010001 << (w0 + r)
            shift = j * w1 - w0 - r
            hi = f"${rows + 1}"
            body.append(f"shr.u32 u, {hi}, {shift};" if shift > 0 else f"shl.b32 u, {hi}, {-shift};" if shift < 0 else f"mov.b32 u, {hi};")
            body.append(f"lop3.b32 t, u, {hi_mask:#010x}, t, 0xEA;")  # | the high bits
        body.append(f"fma.rn.f16x2 t, t, k{r}, c{r};")  # (1024 + q 2^r) 2^-(r + 4) - 2^(6 - r) = q / 16
        body += [f"fma.rn.f16x2 {a}, t, ${first_x + i * half + j}, {a};" for i, a in enumerate(accs)]
    consts = sorted(set(offsets))
    lines = [
        "{",
        f".reg .b32 s, t, u, {', '.join(accs)}, {', '.join(f'k{r}, c{r}' for r in consts)};",
        ".reg .b16 a_lo, a_hi;",
        ".reg .f32 f_lo, f_hi;",
        *[f"mov.b32 {a}, 0;" for a in accs],
        *[f"mov.b32 k{r}, {_f16x2(2.0 ** -(r + 4)):#010x};\nmov.b32 c{r}, {_f16x2(-(2.0 ** (6 - r))):#010x};" for r in consts],
        *body,
    ]
    for i, a in enumerate(accs):
        lines += [f"mov.b32 {{a_lo, a_hi}}, {a};", "cvt.f32.f16 f_lo, a_lo;", "cvt.f32.f16 f_hi, a_hi;", f"add.f32 ${i}, f_lo, f_hi;"]
    lines.append("}")
    constraints = ",".join(["=f"] * rows + ["r"] * (2 if w1 else 1) + ["r"] * (rows * half))
    return "\n".join(lines), constraints


def _pair_dequant_ptx(w0: int, w1: int, bf16: bool = False) -> tuple[str, str]:
    """Inline PTX for the tensor-core tiles (PAIRS): one code pair of a word, already shifted to
    the bottom (plus its high bits at 3 bits, shifted to sit above the low ones), to two 16-bit
    weights (q - z) s: one lop3 (mask + the exponent of 1024 in fp16, of 128 in bf16), one sub to
    q (exact), one fma with the column's s and -z s (one rounding). Operands: $0, $1 the weights
    (k, k + 1), then the word, [the high-bit word], s in both halves, -z s in both halves.
    Returns (PTX, constraints)."""
    magic, kind = (0x43004300, "bf16x2") if bf16 else (0x64006400, "f16x2")
    lines = ["{", ".reg .b32 t, c;", f"mov.b32 c, {magic:#010x};", f"lop3.b32 t, $2, {((1 << w0) - 1) * 0x00010001:#010x}, c, 0xEA;"]
    if w1:
        lines.append(f"lop3.b32 t, $3, {((1 << w1) - 1) * 0x00010001 << w0:#010x}, t, 0xEA;")
    first = 4 if w1 else 3
    lines += [
        f"sub.{kind} t, t, c;",
        f"fma.rn.{kind} t, t, ${first}, ${first + 1};",
        "mov.b32 {$0, $1}, t;",
        "}",
    ]  # (x2 ops: no immediates)
    return "\n".join(lines), ",".join(["=h", "=h"] + ["r"] * (first - 2 + 2))


if triton is not None:

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
    def _packed_matmul_kernel(
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
    def _step_words(p0_ptr, p1_ptr, s_ptr, z_ptr, k0, rows, offs_n, mask_n, N, GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr):
        """One K step of the decode kernels: the plane-0 words (rows, BLOCK_N), the plane-1 words
        shifted so that word row r's share sits at the bottom (or w0 again without a plane 1),
        and the group's scale and zero in fp32."""
        PER: tl.constexpr = 32 // W0
        RATIO: tl.constexpr = W0 // W1 if W1 > 0 else 1  # plane-0 rows per plane-1 row
        w0 = tl.load(p0_ptr + (k0 // PER + rows)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        if W1 > 0:  # plane-1 row r // RATIO holds row r's high bits in its (r % RATIO)-th share
            w1 = tl.load(p1_ptr + (k0 // PER // RATIO + rows // RATIO)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
            w1 = w1 >> ((rows % RATIO) * (PER // 2) * W1)[:, None]
        else:
            w1 = w0
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
        x0, x1, x2, x3, x4, x5, x6, x7 = _xpairs(x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + pair0, HALF, BF16, SCALED, xscale)
        if HALF == 4:
            d = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, [w0, x0, x1, x2, x3], dtype=tl.float32, is_pure=True, pack=1)
        else:
            if W1 > 0:
                args = [w0, w1, x0, x1, x2, x3, x4, x5, x6, x7]
            else:
                args = [w0, x0, x1, x2, x3, x4, x5, x6, x7]
            d = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=tl.float32, is_pure=True, pack=1)
        return d * (16.0 / xscale * s)[None, :], s * z * xsum  # d = sum(q x xscale) / 16 per word

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
    def _gemv_kernel(
        x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, N, K, SPLIT_K,
        GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
        PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, GUARD: tl.constexpr,
    ):  # fmt: skip
        """y (N,) = W x for one input row. Program (n tile, k split); BLOCK_K <= GROUP.
        PTX: 16-bit inputs, bits 2/3/4, with (PTX_SRC, PTX_ARGS) = _pair_dot_ptx(W0, W1);
        GUARD: a split whose inputs reach 4096 in magnitude scales them down by a power of two
        (the fp16 word sums would overflow) and the result back up."""
        _gemv_tile(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, N, K, SPLIT_K, tl.program_id(0), tl.program_id(1),
                   GROUP, W0, W1, BLOCK_N, BLOCK_K, REDUCE, PTX, PTX_SRC, PTX_ARGS, GUARD)  # fmt: skip

    @triton.jit
    def _gemv_group_kernel(
        x_ptr, a0_ptr, a1_ptr, sa_ptr, za_ptr, b0_ptr, b1_ptr, sb_ptr, zb_ptr, c0_ptr, c1_ptr, sc_ptr, zc_ptr, y_ptr,
        NA, NB, NC, K, SPLIT_K,
        GROUP: tl.constexpr, WA0: tl.constexpr, WA1: tl.constexpr, WB0: tl.constexpr, WB1: tl.constexpr,
        WC0: tl.constexpr, WC1: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
        PTX: tl.constexpr, SRC_A: tl.constexpr, ARGS_A: tl.constexpr, SRC_B: tl.constexpr, ARGS_B: tl.constexpr,
        SRC_C: tl.constexpr, ARGS_C: tl.constexpr, GUARD: tl.constexpr,
    ):  # fmt: skip
        """Two or three layers that read the same input row (q/k/v, gate/up), each at its own
        bit-width, in one launch: the n tiles of A, then B, then C (WC0 = 0: none); y is
        [y_A, y_B, y_C] back to back. One launch instead of three saves the fixed per-launch cost."""
        pid = tl.program_id(0)
        pid_k = tl.program_id(1)
        tiles_a = tl.cdiv(NA, BLOCK_N)
        tiles_b = tl.cdiv(NB, BLOCK_N)
        if pid < tiles_a:
            _gemv_tile(x_ptr, a0_ptr, a1_ptr, sa_ptr, za_ptr, y_ptr, y_ptr, y_ptr, NA, K, SPLIT_K, pid, pid_k,
                       GROUP, WA0, WA1, BLOCK_N, BLOCK_K, REDUCE, PTX, SRC_A, ARGS_A, GUARD)  # fmt: skip
        elif pid < tiles_a + tiles_b:
            _gemv_tile(x_ptr, b0_ptr, b1_ptr, sb_ptr, zb_ptr, y_ptr + NA, y_ptr, y_ptr, NB, K, SPLIT_K,
                       pid - tiles_a, pid_k, GROUP, WB0, WB1, BLOCK_N, BLOCK_K, REDUCE, PTX, SRC_B, ARGS_B, GUARD)  # fmt: skip
        elif WC0 > 0:
            _gemv_tile(x_ptr, c0_ptr, c1_ptr, sc_ptr, zc_ptr, y_ptr + NA + NB, y_ptr, y_ptr, NC, K,
                       SPLIT_K, pid - tiles_a - tiles_b, pid_k, GROUP, WC0, WC1, BLOCK_N, BLOCK_K, REDUCE, PTX, SRC_C, ARGS_C, GUARD)  # fmt: skip

    @triton.jit
    def _gemv_tile(
        x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, N, K, SPLIT_K, pid_n, pid_k,
        GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
        PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr, GUARD: tl.constexpr,
    ):  # fmt: skip
        """One (n tile, k split) program of `_gemv_kernel`."""
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        k_start, k_end = _k_range(K, BLOCK_K, SPLIT_K, pid_k)
        if PTX:
            if GUARD:  # fp16 word sums stay finite for |x| < 4096: a split with larger inputs is scaled down by a power of two
                xm = tl.zeros((BLOCK_K,), dtype=tl.float32)
                for k0 in range(k_start, k_end, BLOCK_K):  # the split's inputs (a few hundred bytes, in L2)
                    xm = tl.maximum(xm, tl.abs(tl.load(x_ptr + k0 + tl.arange(0, BLOCK_K)).to(tl.float32)))
                xmax = tl.max(xm)
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
    def _gemv4_kernel(
        x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, lock_ptr, M, N, K, stride_xm, stride_ym, SPLIT_K,
        GROUP: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE: tl.constexpr,
        PTX: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr,
    ):  # fmt: skip
        """`_gemv_kernel` for 4 input rows at once: each word is unpacked once and multiplied with
        the 4 rows (rows past M are zeros, not stored). Program (n tile, 4-row tile, k split).
        PTX: PTX_SRC = _pair_dot_ptx(W0, W1, 4)."""
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
            else:  # exact fp32 pairs, as in _gemv_kernel
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


# From this many rows on, dequantizing the layer once and calling cuBLAS: at M = 64 the fused
# kernel with split K is 1.6-3.0x faster than that, at M = 256 0.87-1.09x of it
# (kernels_mid_m_sweep.md)
DEQUANT_MIN_M = 128


def _atomic_16bit(device: torch.device) -> bool:
    """fp16/bf16 atomics straight into the output (Hopper and newer): no fp32 buffer, no cast."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def _few_shifts(bits: int) -> bool:
    """The decode PTX with one word shift (FEW_SHIFTS) at M = 1, alone or grouped: 1.04-1.15x at
    2/3 bits, 0.95-1.03x at 4 (kernels_ptx_sweep.md)."""
    return bits <= 3


def _tiling(m: int, n: int, k: int, bits: int, group: int, device: torch.device) -> dict[str, int]:
    """A small fixed config list, picked by shape (swept on H100: kernels_gemv_sweep.md for M = 1,
    kernels_pairs_sweep.md for M = 2..16 and the PAIRS choice at 17..127, kernels_mid_m_sweep.md
    for those tiles); fp16 and bf16 measured alike."""
    block_k = min(group, 128)
    steps = k // block_k
    if m == 1:  # 2 warps and 8 waves of programs at 2 bits, 2 warps / 4 waves at 3, 4 / 4 at 4 (kernels_gemv_sweep.md)
        waves, warps = (8, 2) if bits <= 2 else (4, 2) if bits == 3 else (4, 4)
        split = max(1, min(steps, -(-waves * _sm_count(device) // -(-n // 256))))
        return {
            "BLOCK_N": 256,
            "BLOCK_K": block_k,
            "SPLIT_K": split,
            "num_warps": warps,
            "num_stages": 3,
            "FEW_SHIFTS": int(_few_shifts(bits)),
        }
    if m <= 16:
        # the weight tile built pair by pair in PTX (PAIRS) as the MMA's left operand (SWAP): 1.25-1.61x
        # over code-by-code tiles at M = 4..16 and faster than ROWS4 at M = 4 (kernels_pairs_sweep.md)
        block_n = 64
        tiles = -(-n // block_n)
        # ~8 waves of programs, but at least 4 K steps a split (the best of the sweep's grid in each 7B case)
        split = max(1, min(steps // 4, -(-8 * _sm_count(device) // tiles)))
        return {
            "BLOCK_M": 16,
            "BLOCK_N": block_n,
            "BLOCK_K": block_k,
            "SPLIT_K": split,
            "num_warps": 4,
            "num_stages": 3,
            "PAIRS": 1,
            "SWAP": 1,
        }
    block_k = 64 if group % 64 == 0 else group
    if m < DEQUANT_MIN_M:  # 64 x 128 tiles, 4 warps (best at M = 64 in 9 of 9 cases), ~4 waves (7 of 9): kernels_mid_m_sweep.md
        tiles = -(-n // 128) * -(-m // 64)
        split = max(1, min(k // block_k, -(-4 * _sm_count(device) // tiles)))
        pairs = int(bits == 3)  # PAIRS at 3 bits: 1.06-1.21x; 0.7-1.0x at 2/4 (kernels_pairs_sweep.md)
        return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": block_k, "SPLIT_K": split, "num_warps": 4, "num_stages": 3, "PAIRS": pairs}
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": block_k, "SPLIT_K": 1, "num_warps": 8, "num_stages": 3}


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


def _ptx_ok(x: torch.Tensor, widths: list[int]) -> bool:
    """The decode kernels' fp16-pair PTX path: CUDA, 2/3/4 bits (not under the interpreter), x
    4-byte aligned (it is read as 32-bit pairs; a view can start at an odd element); bf16 inputs
    are converted to fp16 pairs in the kernel."""
    aligned = x.data_ptr() % 4 == 0
    return not _INTERPRETING and x.is_cuda and widths in ([4], [2], [2, 1]) and aligned


def _pairs_ptx_ok(x: torch.Tensor, widths: list[int]) -> bool:
    """The tiles' pair dequantization in PTX (PAIRS): CUDA, 2/3/4 bits, fp16 or bf16 (the bf16x2
    sub needs sm_90), not under the interpreter."""
    bf16_ok = x.dtype == torch.float16 or (x.is_cuda and torch.cuda.get_device_capability(x.device) >= (9, 0))
    return not _INTERPRETING and x.is_cuda and widths in ([4], [2], [2, 1]) and bf16_ok


_LOCKS: dict[torch.device, torch.Tensor] = {}


def _tile_locks(device: torch.device, tiles: int) -> torch.Tensor:
    """Per-tile arrival counters of the serial split-K reduction (`SERIAL`); every call leaves
    them at zero. One set per device: calls on concurrent streams must not share it."""
    if device not in _LOCKS or _LOCKS[device].numel() < tiles:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("call matmul once outside CUDA-graph capture first (allocates the split-K counters)")
        _LOCKS[device] = torch.zeros(max(tiles, 1 << 12), device=device, dtype=torch.int32)
    return _LOCKS[device]


def _split(k: int, block_k: int, split: int, group: int) -> int:
    """The K split actually launched: whole BLOCK_K steps, none empty."""
    if group % block_k or block_k % 32:
        raise ValueError(f"group size {group} must be a multiple of 32 and of BLOCK_K = {block_k}")
    steps = k // block_k
    return -(-steps // -(-steps // max(1, min(split, steps))))


def _reduction(cfg: dict[str, int], split: int) -> str:
    """How the K splits meet (`_epilogue`'s REDUCE), from a config's opt-in keys (popped)."""
    serial = bool(cfg.pop("SERIAL", 0))
    return "store" if split == 1 else "serial" if serial else "atomic"


def _outputs(x2: torch.Tensor, n: int, split: int, reduce: str, tiles: int, out: torch.Tensor | None):
    """(y, workspace, counters) for a launch whose `split` K splits meet by `reduce`: y is `out` (or new),
    zeroed only when the splits meet through atomics in it; the serial reduction's fp32 workspace."""
    m = x2.shape[0]
    atomic = reduce == "atomic"
    if atomic and not _atomic_16bit(x2.device):  # no 16-bit atomics: sum in fp32, cast after
        y = torch.zeros(m, n, device=x2.device, dtype=torch.float32)
    elif out is not None:
        y = out.zero_() if atomic else out
    else:
        y = (torch.zeros if atomic else torch.empty)(m, n, device=x2.device, dtype=x2.dtype)
    ws, lock = y, y
    if reduce == "serial":
        ws = torch.empty(split, m, n, device=x2.device, dtype=torch.float32)
        lock = _tile_locks(x2.device, tiles)
    return y, ws, lock


def _gemv(x2: torch.Tensor, packed: PackedWeight, widths: list[int], cfg: dict[str, int], out) -> torch.Tensor:
    """1 input row (`_gemv_kernel`, grid (n tiles, k splits)) or up to 16 in 4-row programs
    (`_gemv4_kernel`, grid (n tiles, 4-row tiles, k splits)); words unpacked in place."""
    m, k, n = x2.shape[0], packed.in_features, packed.out_features
    cfg = dict(cfg)
    block_n, block_k = cfg.pop("BLOCK_N"), cfg.pop("BLOCK_K")
    split = _split(k, block_k, cfg.pop("SPLIT_K"), packed.group_size)
    use_ptx = bool(cfg.pop("PTX", 1)) and _ptx_ok(x2, widths)
    few_shifts = bool(cfg.pop("FEW_SHIFTS", 0))
    guard = bool(cfg.pop("GUARD", 1))  # M = 1: splits with |x| >= 4096 scaled down (ROWS4 has no guard)
    rows = 1 if m == 1 else 4
    for key in ("BLOCK_M", "ROWS4", "PAIRS", "SWAP"):
        cfg.pop(key, None)
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, rows), split)
    reduce = _reduction(cfg, split)
    y, ws, lock = _outputs(x2, n, split, reduce, grid[0] * grid[1], out)
    w0, w1 = widths[0], widths[1] if len(widths) > 1 else 0
    src, args = _pair_dot_ptx(w0, w1, rows, few_shifts) if use_ptx else ("", "")
    p1 = packed.planes[1] if w1 else packed.planes[0]
    consts = dict(GROUP=packed.group_size, W0=w0, W1=w1, BLOCK_N=block_n, BLOCK_K=block_k, REDUCE=reduce,
                  PTX=use_ptx, PTX_SRC=src, PTX_ARGS=args, **cfg)  # fmt: skip
    if m == 1:
        _gemv_kernel[grid[::2]](x2, packed.planes[0], p1, packed.scales, packed.zeros, y, ws, lock, n, k, split, GUARD=guard, **consts)
    else:
        _gemv4_kernel[grid](
            x2, packed.planes[0], p1, packed.scales, packed.zeros, y, ws, lock, m, n, k, x2.stride(0), y.stride(0), split, **consts
        )
    return y


def matmul_group(x: torch.Tensor, packed: list[PackedWeight], num_warps: int = 4, out: torch.Tensor | None = None) -> torch.Tensor:
    """[x @ W_1^T, x @ W_2^T, ...] concatenated along the last dim, for 2 or 3 layers that read
    the same x (q/k/v, gate/up), each at its own bit-width. One input row (decode): one launch
    for all of them (`_gemv_group_kernel`; 4 warps: kernels_group.md); more rows: one `matmul` per layer.
    `out` (1, sum N) at one row, as for `matmul`."""
    if not 2 <= len(packed) <= 3:
        raise ValueError(f"matmul_group takes 2 or 3 layers, got {len(packed)}")
    k, group = packed[0].in_features, packed[0].group_size
    if any(p.in_features != k or p.group_size != group for p in packed):
        raise ValueError("matmul_group: the layers must share in_features and group_size")
    if x.shape[-1] != k or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be (..., {k}) fp16/bf16, got {tuple(x.shape)} {x.dtype}")
    lead, ns = x.shape[:-1], [p.out_features for p in packed]
    x2 = x.reshape(-1, k)
    if triton is None or x2.shape[0] != 1:
        return torch.cat([matmul(x2, p) for p in packed], dim=-1).reshape(*lead, sum(ns))
    widths = [plane_widths(p.bits) for p in packed]
    if any(len(w) > 2 or w[0] > 4 for w in widths):
        raise ValueError(f"the kernel takes 1-4 bit weights, got {[p.bits for p in packed]}")
    x2 = x2.contiguous()
    block_n, block_k = 256, min(group, 128)
    tiles = sum(-(-n // block_n) for n in ns)
    split = _split(k, block_k, max(1, -(-4 * _sm_count(x.device) // tiles)), group)  # ~4 waves, as for one layer
    if out is not None and (out.shape != (1, sum(ns)) or out.dtype != x.dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous (1, {sum(ns)}) {x.dtype} tensor")
    reduce = _reduction({}, split)
    y, _, _ = _outputs(x2, sum(ns), split, reduce, tiles, out)
    use_ptx = all(_ptx_ok(x2, w) for w in widths)
    segs = [(w[0], w[1] if len(w) > 1 else 0) for w in widths]
    args, consts = [], {}
    for name, p, (w0, w1) in zip("ABC", [*packed, packed[0]], [*segs, (0, 0)], strict=False):  # C = A, unused, for 2
        args += [p.planes[0], p.planes[1] if w1 else p.planes[0], p.scales, p.zeros]
        src, cons = _pair_dot_ptx(w0, w1, few_shifts=_few_shifts(p.bits)) if use_ptx and w0 else ("", "")
        consts.update({f"W{name}0": w0, f"W{name}1": w1, f"SRC_{name}": src, f"ARGS_{name}": cons})
    _gemv_group_kernel[(tiles, split)](
        x2, *args, y, *ns, *([0] if len(ns) == 2 else []), k, split,
        GROUP=group, BLOCK_N=block_n, BLOCK_K=block_k, REDUCE=reduce, PTX=use_ptx, GUARD=True,
        num_warps=num_warps, num_stages=3, **consts,
    )  # fmt: skip
    if out is not None and y is not out:  # the fp32 atomics buffer
        y = out.copy_(y)
    return y.to(x.dtype).reshape(*lead, sum(ns))


# The keys a `matmul` config may hold (sweeps and tests pass their own; `_tiling` makes the defaults)
_CONFIG_KEYS = {
    "BLOCK_M",
    "BLOCK_N",
    "BLOCK_K",
    "SPLIT_K",
    "num_warps",
    "num_stages",
    "SERIAL",
    "PTX",
    "FEW_SHIFTS",
    "ROWS4",
    "DEQUANT",
    "PAIRS",
    "SWAP",
    "GUARD",
}


def _check_config(config: dict[str, int], m: int) -> None:
    """A clear error for a config with a misspelt or missing key, instead of one from inside Triton."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown matmul config keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
    if config.get("DEQUANT"):
        return
    need = {"BLOCK_N", "BLOCK_K", "SPLIT_K"} | ({"BLOCK_M"} if m > 1 and not config.get("ROWS4") else set())
    if need - set(config):
        raise ValueError(f"matmul config lacks {sorted(need - set(config))} (M = {m}); got {config}")


def matmul(x: torch.Tensor, packed: PackedWeight, config: dict[str, int] | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) fp16/bf16 -> (..., N), with W from `packed`; picks the decode or fused tiling,
    or for M >= DEQUANT_MIN_M dequantizes once and uses cuBLAS (`config` overrides the choice,
    for tuning sweeps; `{"DEQUANT": 1}` forces the last). `out` (M, N) contiguous, x's dtype:
    written in place (every element is written; it is zeroed first only on the atomics path)."""
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
    if out is not None and (out.shape != (m, n) or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device):
        raise ValueError(f"out must be a contiguous ({m}, {n}) {x.dtype} tensor on {x.device}, got {tuple(out.shape)} {out.dtype}")
    if config is not None:
        _check_config(config, m)
    if (config or {}).get("DEQUANT") or (config is None and m >= DEQUANT_MIN_M):
        w = dequantize_triton(packed, x.dtype)
        return (torch.mm(x2, w, out=out) if out is not None else x2 @ w).reshape(*lead, n)
    cfg = config or _tiling(m, n, k, packed.bits, packed.group_size, x.device)
    if m == 1 or cfg.get("ROWS4"):
        y = _gemv(x2, packed, widths, cfg, out)
    else:
        cfg = dict(cfg)
        cfg.pop("FEW_SHIFTS", None)  # a decode-kernel option
        split = _split(k, cfg["BLOCK_K"], cfg.pop("SPLIT_K"), packed.group_size)
        grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(m, cfg["BLOCK_M"]), split)
        reduce = _reduction(cfg, split)
        y, ws, lock = _outputs(x2, n, split, reduce, grid[0] * grid[1], out)
        p1 = packed.planes[1] if len(widths) > 1 else packed.planes[0]
        pairs = bool(cfg.pop("PAIRS", 0)) and widths in ([4], [2], [2, 1])  # opt-in: tiles built pair by pair
        use_ptx = pairs and _pairs_ptx_ok(x2, widths)
        src, args = _pair_dequant_ptx(widths[0], widths[1] if len(widths) > 1 else 0, x.dtype == torch.bfloat16) if use_ptx else ("", "")
        cfg.update(PAIRS=pairs, PTX=use_ptx, PTX_SRC=src, PTX_ARGS=args, SWAP=bool(cfg.pop("SWAP", 0)))
        _packed_matmul_kernel[grid](
            x2, packed.planes[0], p1, packed.scales, packed.zeros, y, ws, lock,
            m, n, k, x2.stride(0), y.stride(0), SPLIT_K=split, REDUCE=reduce,
            GROUP=packed.group_size, W0=widths[0], W1=widths[1] if len(widths) > 1 else 0,
            DOT_FP32=_INTERPRETING and x.dtype == torch.bfloat16, **cfg,
        )  # fmt: skip
    if out is not None and y is not out:  # the fp32 atomics buffer
        y = out.copy_(y)
    return y.to(x.dtype).reshape(*lead, n)
