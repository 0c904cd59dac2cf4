"""Inline PTX for the CUDA paths of matmul.py, generated per bit-width as text that the Triton
kernels splice in with `tl.inline_asm_elementwise` (host side only: no triton needed here)."""

from __future__ import annotations

import struct


def f16x2(v: float) -> int:
    """The fp16 bits of v in both halves of a b32."""
    h = int.from_bytes(struct.pack("<e", v), "little")
    return h | h << 16


def pair_dot_ptx(w0: int, w1: int, rows: int = 1, few_shifts: bool = False) -> tuple[str, str]:
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
    word = f"${rows}"
    first_x = rows + (2 if w1 else 1)
    accs = [f"a{r}" for r in range(rows)]
    body, offsets = [], []
    for j, (unpack, r) in enumerate(_pair_unpack(w0, w1, word, f"${rows + 1}", few_shifts, "0x64006400")):  # (src & mask) | 1024
        offsets.append(r)
        body += unpack
        body.append(f"fma.rn.f16x2 t, t, k{r}, c{r};")  # (1024 + q 2^r) 2^-(r + 4) - 2^(6 - r) = q / 16
        body += [f"fma.rn.f16x2 {a}, t, ${first_x + i * half + j}, {a};" for i, a in enumerate(accs)]
    consts = sorted(set(offsets))
    lines = [
        "{",
        f".reg .b32 s, t, u, {', '.join(accs)}, {', '.join(f'k{r}, c{r}' for r in consts)};",
        ".reg .b16 a_lo, a_hi;",
        ".reg .f32 f_lo, f_hi;",
        *[f"mov.b32 {a}, 0;" for a in accs],
        *[f"mov.b32 k{r}, {f16x2(2.0 ** -(r + 4)):#010x};\nmov.b32 c{r}, {f16x2(-(2.0 ** (6 - r))):#010x};" for r in consts],
        *body,
    ]
    for i, a in enumerate(accs):
        lines += _widen(a, f"${i}")
    lines.append("}")
    constraints = ",".join(["=f"] * rows + ["r"] * (2 if w1 else 1) + ["r"] * (rows * half))
    return "\n".join(lines), constraints


def _widen(acc: str, out: str) -> list[str]:
    """The two fp16 halves of `acc` summed into the fp32 `out` (registers a_lo, a_hi, f_lo, f_hi)."""
    return [f"mov.b32 {{a_lo, a_hi}}, {acc};", "cvt.f32.f16 f_lo, a_lo;", "cvt.f32.f16 f_hi, a_hi;", f"add.f32 {out}, f_lo, f_hi;"]


def pair_positions(w0: int, w1: int, few_shifts: bool) -> list[tuple[int, int]]:
    """Per code pair j of a plane-0 word of width w0 (high bits of width w1 merged above it): how far the
    word is shifted right before the pair is masked, and the bit r where the pair then sits. Shifted down
    to bit 0 each time, or (few_shifts) masked where it sits while its code, q 2^r, stays below fp16's
    exponent bits (r + w0 + w1 <= 10), the word shifted only when the next pair would reach them."""
    out, base = [], 0
    for j in range(32 // w0 // 2):
        if not few_shifts:
            out.append((j * w0, 0))
            continue
        if j * w0 - base + w0 + w1 > 10:
            base = j * w0
        out.append((base, j * w0 - base))
    return out


def _pair_unpack(w0: int, w1: int, word: str, hi: str, few_shifts: bool, exponent: str) -> list[tuple[list[str], int]]:
    """Per code pair: the instructions that leave it in `t` as two 16-bit halves, (q 2^r) | exponent (OR-ed
    in by the same lop3), and r (pair_positions). Registers s, t, u."""
    pair_mask = ((1 << w0) - 1) * 0x00010001
    out, cur, src = [], 0, word
    for j, (shift, r) in enumerate(pair_positions(w0, w1, few_shifts)):
        lines = []
        if shift != cur:
            lines.append(f"shr.u32 s, {word}, {shift};")
            cur, src = shift, "s"
        lines.append(f"lop3.b32 t, {src}, {pair_mask << r:#010x}, {exponent}, 0xEA;")  # (src & mask) | exponent
        if w1:
            hi_mask = ((1 << w1) - 1) * 0x00010001 << (w0 + r)
            hs = j * w1 - w0 - r
            lines.append(f"shr.u32 u, {hi}, {hs};" if hs > 0 else f"shl.b32 u, {hi}, {-hs};" if hs < 0 else f"mov.b32 u, {hi};")
            lines.append(f"lop3.b32 t, u, {hi_mask:#010x}, t, 0xEA;")  # | the high bits
        out.append((lines, r))
    return out


SUB_SLOTS = 10  # pair_dot_sub_ptx's operands a word: plane-0 word, plane-1 word, 8 input pairs


def pair_dot_sub_ptx(w0: int, w1: int, words: int = 1) -> tuple[str, str]:
    """Inline PTX for `words` words (each plus its high-bit word at 3 bits) of one column against one input
    row, with 2 instructions a pair of codes instead of pair_dot_ptx's 3: a pair is masked where it sits
    (no exponent OR-ed in), so each 16-bit half is the fp16 *subnormal* q 2^r 2^-24, exact, and one fp16x2
    fma multiplies it into the block's one accumulator with the input pair, which the caller passes already
    times 2^(F - r) (r per pair: pair_positions(w0, w1, True)): each product is q x 2^(F - 24). The caller
    picks F so that max |x| 2^F < 2^15: a product is below 2^-5, the sum of 4 words' below 1, nothing
    overflows; it multiplies the result by 2^(24 - F). More words a block: one widening to fp32 for all.
    Operands: $0 the fp32 result, then SUB_SLOTS b32 a word: its plane-0 word, its plane-1 word as
    pair_dot_ptx takes it (any value without one), 8 input-pair slots (the first 32 / w0 / 2 read).
    Returns the PTX and its operand constraints."""
    body = []
    for i in range(words):
        base = 1 + i * SUB_SLOTS
        for j, (unpack, _) in enumerate(_pair_unpack(w0, w1, f"${base}", f"${base + 1}", True, "0")):
            body += unpack
            body.append(f"fma.rn.f16x2 a, t, ${base + 2 + j}, a;")
    lines = ["{", ".reg .b32 s, t, u, a;", ".reg .b16 a_lo, a_hi;", ".reg .f32 f_lo, f_hi;", "mov.b32 a, 0;", *body]
    lines += [*_widen("a", "$0"), "}"]
    return "\n".join(lines), ",".join(["=f"] + ["r"] * (words * SUB_SLOTS))


def packed_offsets(w0: int, w1: int) -> int:
    """pair_dot_sub_ptx's pair positions r_j, 4 bits each (pair j at bits 4j), as gemv_kernel's OFFS takes them."""
    return sum(r << 4 * j for j, (_, r) in enumerate(pair_positions(w0, w1, True)))


def pair_dequant_ptx(w0: int, w1: int, bf16: bool = False) -> tuple[str, str]:
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
