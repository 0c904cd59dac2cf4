"""The kernels' inline PTX (fp16 pairs: the decode kernels' dot, the tiles' dequantization), run
by a small emulator of the instructions it uses on packed words from `pack_planes`: the
interpreter cannot run inline PTX, so this is what ties the PTX to the packing layout on a
machine without a GPU."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from amq_kernels.packing import pack_planes
from amq_kernels.ptx import pair_dequant_ptx, pair_dot_ptx


def _f16x2(v: int) -> tuple[np.float16, np.float16]:
    return np.uint16(v & 0xFFFF).view(np.float16), np.uint16(v >> 16).view(np.float16)


def _pack16(lo: np.float16, hi: np.float16) -> int:
    return int(np.float16(lo).view(np.uint16)) | int(np.float16(hi).view(np.uint16)) << 16


def _bf16(v: int) -> float:
    return float(torch.tensor([v & 0xFFFF], dtype=torch.int32).to(torch.int16).view(torch.bfloat16)[0])


def _bf16x2(v: int) -> tuple[float, float]:
    return _bf16(v), _bf16(v >> 16)


def _pack_bf16(lo: float, hi: float) -> int:
    bits = torch.tensor([lo, hi], dtype=torch.float64).to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF
    return int(bits[0]) | int(bits[1]) << 16


def run_ptx(src: str, operands: list[int], outputs: int = 1, bf16: bool = False) -> list[float]:
    """Execute the PTX block on b32 operands $outputs.. and return $0 .. $(outputs - 1); 16-bit
    halves are fp16, or bf16 with `bf16`."""
    regs: dict[str, object] = {f"${i}": v for i, v in enumerate(operands, start=outputs)}

    def val(tok: str) -> int:
        tok = tok.strip()
        return int(tok, 0) if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", tok) else regs[tok]  # type: ignore[return-value]

    for line in src.splitlines():
        line = line.strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, rest = line.split(None, 1)
        if op == "mov.b32" and rest.startswith("{"):  # split a b32 into two b16
            names, src_reg = rest.rsplit(",", 1)
            lo, hi = (t.strip() for t in names.strip("{} ").split(","))
            regs[lo], regs[hi] = _bf16x2(val(src_reg)) if bf16 else _f16x2(val(src_reg))
            continue
        args = [a.strip() for a in rest.split(",")]
        d, a = args[0], args[1:]
        if op == "mov.b32":
            regs[d] = val(a[0]) & 0xFFFFFFFF
        elif op == "shr.u32":
            regs[d] = (val(a[0]) & 0xFFFFFFFF) >> val(a[1])
        elif op == "shl.b32":
            regs[d] = (val(a[0]) << val(a[1])) & 0xFFFFFFFF
        elif op == "lop3.b32":
            x, y, z, lut = (val(t) & 0xFFFFFFFF for t in a)
            out = 0
            for bit in range(32):
                idx = ((x >> bit) & 1) << 2 | ((y >> bit) & 1) << 1 | ((z >> bit) & 1)
                out |= ((lut >> idx) & 1) << bit
            regs[d] = out
        elif op == "fma.rn.f16x2":  # one rounding per half: exact in float64, then to fp16
            parts = [_f16x2(val(t)) for t in a]
            regs[d] = _pack16(*(np.float16(float(parts[0][h]) * float(parts[1][h]) + float(parts[2][h])) for h in (0, 1)))
        elif op == "sub.f16x2":
            parts = [_f16x2(val(t)) for t in a]
            regs[d] = _pack16(*(np.float16(float(parts[0][h]) - float(parts[1][h])) for h in (0, 1)))
        elif op == "fma.rn.bf16x2":
            parts = [_bf16x2(val(t)) for t in a]
            regs[d] = _pack_bf16(*(parts[0][h] * parts[1][h] + parts[2][h] for h in (0, 1)))
        elif op == "sub.bf16x2":
            parts = [_bf16x2(val(t)) for t in a]
            regs[d] = _pack_bf16(*(parts[0][h] - parts[1][h] for h in (0, 1)))
        elif op == "cvt.f32.f16":
            regs[d] = np.float32(regs[a[0]])
        elif op == "add.f32":
            regs[d] = np.float32(regs[a[0]]) + np.float32(regs[a[1]])
        else:
            raise AssertionError(f"emulator lacks {op}")
    return [float(regs[f"${i}"]) for i in range(outputs)]


@pytest.mark.parametrize("few_shifts", [False, True])
@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pair_ptx_matches_codes(bits, rows, few_shifts):
    """sum over a word's codes of q * x / 16, for the words `pack_planes` writes."""
    g = torch.Generator().manual_seed(bits)
    w0 = 4 if bits == 4 else 2
    per = 32 // w0
    k = 32  # two plane-0 rows at 3 bits share one plane-1 row
    for trial in range(20):
        codes = torch.randint(0, 2**bits, (1, k), generator=g, dtype=torch.uint8)
        x = (torch.randn(rows, k, generator=g) * (1.0 if trial % 2 else 300.0)).half()
        planes = pack_planes(codes, bits)
        for r in range(k // per):
            word = int(planes[0][r, 0]) & 0xFFFFFFFF
            ops = [word]
            if bits == 3:  # what the kernel passes: the plane-1 word arithmetically shifted to row r's share
                ops.append((int(planes[1][0, 0]) >> (r % 2) * 8) & 0xFFFFFFFF)
            xs = x[:, r * per : (r + 1) * per].numpy()
            ops += [_pack16(xs[m, 2 * j], xs[m, 2 * j + 1]) for m in range(rows) for j in range(per // 2)]
            src, constraints = pair_dot_ptx(w0, 1 if bits == 3 else 0, rows, few_shifts)
            assert constraints.count(",") + 1 == rows + len(ops)  # the outputs, then one operand each
            got = run_ptx(src, ops, rows)
            q = codes[0, r * per : (r + 1) * per].double().numpy()
            for m in range(rows):
                want = float((q * xs[m].astype(np.float64)).sum() / 16)
                scale = float((q * np.abs(xs[m].astype(np.float64))).sum() / 16) + 1e-6
                assert abs(got[m] - want) <= 2e-3 * scale, (bits, trial, r, m, got[m], want)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pair_dequant_ptx_matches_codes(bits, bf16):
    """(q - z) s for each code pair of the words `pack_planes` writes, as the tiles (PAIRS) call it,
    in fp16 or bf16 (s and -z s arrive rounded to that type)."""
    g = torch.Generator().manual_seed(10 + bits)
    w0, w1 = (4, 0) if bits == 4 else (2, 1 if bits == 3 else 0)
    per = 32 // w0
    src, constraints = pair_dequant_ptx(w0, w1, bf16)
    pack, half = (_pack_bf16, lambda v: float(torch.tensor(v).to(torch.bfloat16))) if bf16 else (_pack16, lambda v: float(np.float16(v)))
    eps = 2**-7 if bf16 else 2e-3
    assert constraints.count(",") + 1 == 2 + (2 if w1 else 1) + 2  # two fp16 outputs, the words, s, -z s
    for trial in range(10):
        codes = torch.randint(0, 2**bits, (1, 32), generator=g, dtype=torch.uint8)
        s = half(np.exp(np.random.default_rng(trial).uniform(-8, 2)))
        z = half(np.random.default_rng(trial + 1).uniform(0, 2**bits - 1))
        nzs = half(-z * s)
        s2, nzs2 = pack(s, s), pack(nzs, nzs)
        planes = pack_planes(codes, bits)
        for r in range(32 // per):
            word = int(planes[0][r, 0]) & 0xFFFFFFFF
            hi = (int(planes[1][0, 0]) >> (r % 2) * 8) & 0xFFFFFFFF if w1 else 0  # as _step_words shifts it
            for j in range(per // 2):
                ops = [word >> (j * w0)] + ([((hi >> (j * w1)) << w0) & 0xFFFFFFFF] if w1 else []) + [s2, nzs2]
                got = run_ptx(src, ops, 2, bf16)
                for h in (0, 1):
                    q = float(codes[0, r * per + 2 * j + h])
                    want = (q - z) * s
                    assert abs(got[h] - want) <= eps * (2**bits) * s, (bits, trial, r, j, h, got[h], want)


@pytest.mark.parametrize("words", [1, 2, 4])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pair_dot_sub_ptx_matches_codes(bits, words):
    """The 2-instruction pair (codes as fp16 subnormals, inputs pre-scaled by 2^(F - r)): the sum of q x over
    `words` words of a column, times 2^(F - 24), for the words `pack_planes` writes and inputs from 0.01 to 30000."""
    from amq_kernels.ptx import SUB_SLOTS, pair_dot_sub_ptx, pair_positions

    g = torch.Generator().manual_seed(20 + bits + 10 * words)
    w0, w1 = (4, 0) if bits == 4 else (2, 1 if bits == 3 else 0)
    per = 32 // w0
    src, constraints = pair_dot_sub_ptx(w0, w1, words)
    assert constraints.count(",") == words * SUB_SLOTS
    offsets = [r for _, r in pair_positions(w0, w1, True)]
    n_codes = 32 * words * (2 if bits == 3 else 1)  # whole plane-1 words at 3 bits
    for trial, magnitude in enumerate((0.01, 1.0, 300.0, 30000.0) * 3):
        codes = torch.randint(0, 2**bits, (1, n_codes), generator=g, dtype=torch.uint8)
        x = (torch.randn(n_codes, generator=g) * magnitude).clamp(-60000, 60000).half().numpy()
        f = min(15, 14 - int(np.floor(np.log2(np.abs(x.astype(np.float64)).max()))))  # max |x| 2^F < 2^15
        planes = pack_planes(codes, bits)
        for r0 in range(0, n_codes // per, words):  # `words` consecutive word rows to one block
            ops, xs_all = [], []
            for r in range(r0, r0 + words):
                ops.append(int(planes[0][r, 0]) & 0xFFFFFFFF)
                ops.append((int(planes[1][r // 2, 0]) >> (r % 2) * 8) & 0xFFFFFFFF if w1 else 0)
                xs = x[r * per : (r + 1) * per]
                pairs = [_pack16(*(np.float16(float(v) * 2.0 ** (f - offsets[j])) for v in xs[2 * j : 2 * j + 2])) for j in range(per // 2)]
                ops += pairs + [0] * (SUB_SLOTS - 2 - len(pairs))
                xs_all.append(xs)
            got = run_ptx(src, ops)[0] * 2.0 ** (24 - f)
            q = codes[0, r0 * per : (r0 + words) * per].double().numpy()
            xw = np.concatenate(xs_all).astype(np.float64)
            want = float((q * xw).sum())
            scale = float((q * np.abs(xw)).sum())
            # fp16 rounding of the block's running sums, and at most half a subnormal step a product (2^-25, times 2^(24 - F))
            assert abs(got - want) <= 2e-3 * scale + words * per * 2.0 ** (-1 - f), (bits, words, trial, r0, got, want)
