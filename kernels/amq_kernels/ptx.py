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
        *[f"mov.b32 k{r}, {f16x2(2.0 ** -(r + 4)):#010x};\nmov.b32 c{r}, {f16x2(-(2.0 ** (6 - r))):#010x};" for r in consts],
        *body,
    ]
    for i, a in enumerate(accs):
        lines += [f"mov.b32 {{a_lo, a_hi}}, {a};", "cvt.f32.f16 f_lo, a_lo;", "cvt.f32.f16 f_hi, a_hi;", f"add.f32 ${i}, f_lo, f_hi;"]
    lines.append("}")
    constraints = ",".join(["=f"] * rows + ["r"] * (2 if w1 else 1) + ["r"] * (rows * half))
    return "\n".join(lines), constraints


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
