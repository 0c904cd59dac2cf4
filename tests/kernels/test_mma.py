"""The register-fed tensor-core kernel (amq_kernels/mma.py): its layout against the documented
fragment map, its numerics under the interpreter, and, compiled for sm_90 on the CPU, that the
weight tile reaches the warpgroup MMA from registers (no shared-memory round trip)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amq.quant.groupwise import quantize_hqq
from amq_kernels.mma import mma_ok, pack_mma, unpack_mma
from amq_kernels.packing import pack, plane_widths


def _packed(n: int, k: int, bits: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = quantize_hqq(torch.randn(n, k, generator=g) * 0.02, bits, 128, iters=2)
    return q.codes, pack(q.codes, q.scale, q.zero, bits, 128)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_each_code_sits_where_its_mma_fragment_reads_it(bits):
    """Decoded word by word from the docstring's map (lane l of warp w, pair p = j + HALF v:
    row 16 w + 8 (p >> 4) + l // 4, column 16 ((p >> 1) & 7) + 8 (p & 1) + 2 (l % 4) + h)."""
    codes, p = _packed(128, 256, bits)
    planes = pack_mma(p).planes
    got = torch.zeros(128, 256, dtype=torch.int64)
    offset = 0
    for width, plane in zip(plane_widths(bits), planes, strict=True):
        half, v_words = 16 // width, 32 // (16 // width)
        assert plane.shape == (2, 2, 128 * v_words)
        words = plane.to(torch.int64) & 0xFFFFFFFF
        for t in range(2):
            for s in range(2):
                for thread in range(128):
                    w, lane = divmod(thread, 32)
                    for v in range(v_words):
                        word = int(words[t, s, thread * v_words + v])
                        for j in range(half):
                            pair = j + half * v
                            row = 64 * t + 16 * w + 8 * (pair >> 4) + lane // 4
                            col = 128 * s + 16 * ((pair >> 1) & 7) + 8 * (pair & 1) + 2 * (lane % 4)
                            for h in range(2):
                                got[row, col + h] |= ((word >> (16 * h + width * j)) & ((1 << width) - 1)) << offset
        offset += width
    assert torch.equal(got, codes.to(torch.int64))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_unpack_gives_the_packed_weight_back_exactly(bits):
    _, p = _packed(128, 384, bits)
    mw = pack_mma(p)
    assert mw.nbytes() == p.nbytes() and not mw.int_zero  # HQQ zeros are fractional
    back = unpack_mma(mw)
    assert all(torch.equal(a, b) for a, b in zip(back.planes, p.planes, strict=True))
    assert torch.equal(back.scales, p.scales) and torch.equal(back.zeros, p.zeros)
    rounded = pack_mma(type(p)(p.planes, p.scales, p.zeros.round(), bits, 128, 128, 384))
    assert rounded.int_zero


def test_the_layout_names_what_it_does_not_cover():
    _, p = _packed(96, 256, 4)  # 96 rows: not a multiple of 64
    assert not mma_ok(p)
    with pytest.raises(ValueError, match="N % 64"):
        pack_mma(p)


INTERPRETER_CHECK = r"""
import torch
from amq.quant.groupwise import quantize_hqq
from amq_kernels.packing import pack, dequantize
from amq_kernels.mma import mma_matmul, pack_mma  # M = 130: dequantize (mma_dequant_kernel) + matmul
torch.manual_seed(0)
fails = 0
for bits, int_zero in ((2, False), (3, False), (4, False), (2, True), (3, True), (4, True)):
    w = torch.randn(128, 384) * 0.05
    q = quantize_hqq(w, bits, 128, iters=2)  # fractional zeros
    zero = q.zero.round() if int_zero else q.zero  # integer zeros (as GPTQ / RTN / AWQ make them): the cheaper path
    p = pack(q.codes, q.scale, zero, bits, 128)
    for dtype in (torch.float16, torch.bfloat16):
        mw = pack_mma(p)
        assert mw.int_zero == int_zero
        for m, split, unroll in ((1, 1, 1), (1, 2, 1), (3, 3, 1), (16, 1, 3), (1, 2, 3), (40, 2, 1), (70, 1, 1), (130, 1, 1)):
            x = torch.randn(m, 384).to(dtype)
            ref = x.double() @ dequantize(p, torch.float64).t()
            y = mma_matmul(x, mw, split_k=split, unroll=unroll, out=torch.full((m, 128), float("nan"), dtype=dtype))
            err = ((y.double() - ref).norm() / ref.norm()).item()
            ok = err < 1e-2 and not torch.isnan(y).any() and y.dtype == dtype
            fails += not ok
            print(bits, int_zero, dtype, m, split, unroll, f"{err:.2e}", "ok" if ok else "FAIL")
raise SystemExit(fails)
"""


@pytest.mark.interpreter
def test_mma_kernel_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run(
        [sys.executable, "-c", INTERPRETER_CHECK], capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parent
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("act", ["*fp16", "*bf16"])
@pytest.mark.parametrize("int_zero", [False, True])
def test_weights_reach_the_warpgroup_mma_in_registers(bits, act, int_zero):
    triton = pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from amq_kernels import jit_mma
    from amq_kernels.matmul import FUSE
    from amq_kernels.mma import placed_pair_ptx

    w = plane_widths(bits)
    src, cons = placed_pair_ptx(len(w) > 1, act == "*bf16", int_zero)
    fn = jit_mma.mma_matmul_kernel
    consts = {"W0": w[0], "W1": w[1] if len(w) > 1 else 0, "BLOCK_M": 16, "REDUCE": "atomic", "UNROLL": 2, "INT_ZERO": int_zero,
              "PTX": True, "PTX_SRC": src, "PTX_ARGS": cons, "DOT_FP32": False}  # fmt: skip
    sig = {n: "constexpr" if n in consts else act if n in ("x_ptr", "y_ptr") else "*fp32" if n == "ws_ptr" else "*i32" if n.endswith("_ptr") else "i32" for n in fn.arg_names}  # fmt: skip
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if sig[n].startswith("*") or n in ("N", "K")}
    k = triton.compile(
        ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 1, **FUSE}
    )
    dt = "bf16" if act == "*bf16" else "f16"
    # the weight tile is a register operand (a dot_op layout), not a shared-memory descriptor
    assert "ttng.warp_group_dot %w" in k.asm["ttgir"] and f"tensor<64x128x{dt}, #ttg.dot_op<{{opIdx = 0" in k.asm["ttgir"]
    assert f"wgmma.mma_async.sync.aligned.m64n16k16.f32.{dt}.{dt}" in k.asm["ptx"]
    assert "ldmatrix" not in k.asm["ptx"]  # nothing of the weights read back from shared memory
    if not int_zero:  # the prefill path's dequantization builds the same tile
        fn = jit_mma.mma_dequant_kernel
        consts = {"W0": consts["W0"], "W1": consts["W1"], "PTX": True, "PTX_SRC": src, "PTX_ARGS": cons}
        sig = {n: "constexpr" if n in consts else act if n == "w_ptr" else "*i32" if n.endswith("_ptr") else "i32" for n in fn.arg_names}
        assert triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, **FUSE}).asm["cubin"]


def test_quantlinear_in_the_mma_layout_computes_the_same_and_exports_the_same(monkeypatch):
    from torch import nn

    import amq_kernels.linear as linear
    from amq_kernels.linear import QuantLinear, group_shared_inputs, use_mma_layout

    _, p = _packed(128, 256, 3)
    _, p64 = _packed(64, 256, 4, seed=1)
    _, odd = _packed(96, 256, 4, seed=2)  # 96 rows: stays in the bit-plane layout
    model = nn.ModuleDict({"a": QuantLinear(p), "b": QuantLinear(p64), "c": QuantLinear(odd)})
    x = torch.randn(2, 256)
    before = {k: m(x) for k, m in model.items()}
    assert group_shared_inputs(model, [["a", "b"]]) == 1
    assert use_mma_layout(model) == 0  # no Hopper GPU here: nothing changes
    monkeypatch.setattr(linear, "mma_supported", lambda device: True)
    assert use_mma_layout(model) == 2
    assert [m.layout for m in model.values()] == ["mma", "mma", "planes"]
    assert model["a"].group is None and model["b"].group is None  # the grouped launch reads bit planes: unlinked
    assert "plane0" not in dict(model["a"].named_buffers()) and "sz" in dict(model["a"].named_buffers())
    for k, m in model.items():
        assert torch.allclose(m(x), before[k], atol=1e-6)
    back = model["a"].packed  # what the exports read
    assert all(torch.equal(u, v) for u, v in zip(back.planes, p.planes, strict=True)) and torch.equal(back.zeros, p.zeros)


def _as_u32(v: int) -> int:
    return v & 0xFFFFFFFF


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("bf16", [False, True])
def test_placed_pair_ptx_decodes_every_code_of_the_mma_words(bits, bf16):
    """The mma kernel's pair PTX, run by test_pair_ptx's emulator on the words `pack_mma` writes, with
    the operands `jit_mma._pair` builds (shift per chunk of pairs, mask and 16-bit exponent where the
    pair sits, the high-bit plane's one bit above it): every code comes out exactly (q, integer zero 0)."""
    from test_pair_ptx import run_ptx

    from amq_kernels.mma import placed_pair_ptx

    codes, p = _packed(64, 128, bits)
    mw = pack_mma(type(p)(p.planes, p.scales, p.zeros.round(), bits, 128, 64, 128))
    w = plane_widths(bits)
    w0, w1 = w[0], w[1] if len(w) > 1 else 0
    src, _ = placed_pair_ptx(w1 > 0, bf16, int_zero=True)
    mant = 7 if bf16 else 10
    chunk = (mant - w0 - w1) // w0 + 1
    half, v_words = 16 // w0, 32 // (16 // w0)
    for thread in (0, 37, 127):
        wd, lane = divmod(thread, 32)
        for v in range(v_words):
            word = int(mw.planes[0][0, 0, thread * v_words + v])
            hi_word = int(mw.planes[1][0, 0, thread * 2 + v // 2]) >> (8 * (v % 2)) if w1 else 0
            for j in range(half):
                r = (j % chunk) * w0
                a = _as_u32(word) >> ((j // chunk) * chunk * w0)
                up = r + w0 - j
                b = (_as_u32(hi_word << up) if up >= 0 else _as_u32(hi_word) >> -up) if w1 else 0
                mask = ((1 << w0) - 1) * 65537 << r
                magic = (((134 - r) << 7) if bf16 else ((25 - r) << 10)) * 65537
                ops = [a, mask, b, ((1 << w1) - 1) * 65537 << (r + w0), magic, magic] if w1 else [a, mask, magic, magic]
                got = run_ptx(src, ops, outputs=2, bf16=bf16)
                pair = j + half * v
                row = 16 * wd + 8 * (pair >> 4) + lane // 4
                col = 16 * ((pair >> 1) & 7) + 8 * (pair & 1) + 2 * (lane % 4)
                assert got == [float(codes[row, col]), float(codes[row, col + 1])], (thread, v, j)
