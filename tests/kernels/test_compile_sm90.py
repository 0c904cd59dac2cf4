"""Every kernel variant compiles for Hopper (sm_90) to a cubin, on the CPU: Triton's compiler and
its bundled ptxas need no GPU. This covers what the interpreter cannot run: the inline-PTX inner
loops, 16-bit atomics and the grouped launch (their numerics are tested by the interpreter test,
the PTX emulator in test_pair_ptx.py, and benchmarks/kernels/gpu_check.py on a GPU)."""

from __future__ import annotations

import os
import re

import pytest

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") == "1":  # the kernels are interpreter functions then, not compilable
    pytest.skip("TRITON_INTERPRET=1", allow_module_level=True)

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from amq_kernels import jit  # noqa: E402
from amq_kernels.matmul import FUSE  # noqa: E402
from amq_kernels.packing import plane_widths  # noqa: E402
from amq_kernels.ptx import packed_offsets, pair_dequant_ptx, pair_dot_ptx, pair_dot_sub_ptx  # noqa: E402

WORDS = ("p0_ptr", "p1_ptr", "a0_ptr", "a1_ptr", "b0_ptr", "b1_ptr", "c0_ptr", "c1_ptr", "lock_ptr")


def _signature(fn, consts: dict) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*i32" if name in WORDS else "*fp32" if name == "ws_ptr" else "*fp16"
        else:
            sig[name] = "i32"
    return sig


def _compile(fn, consts: dict, num_warps: int = 4, act: str = "*fp16", fuse: dict = FUSE) -> str:
    """PTX of `fn` for sm_90, compiled with the options our launches pass (`FUSE`)."""
    sig = _signature(fn, consts)
    sig.update({name: act for name in ("x_ptr", "y_ptr") if name in sig})  # activations and output
    k = triton.compile(
        ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": 3, **fuse}
    )
    assert k.asm["cubin"]
    return k.asm["ptx"]


def _widths(bits: int) -> tuple[int, int]:
    w = plane_widths(bits)
    return w[0], w[1] if len(w) > 1 else 0


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_decode_kernels_compile_for_sm90_with_inline_ptx(bits):
    w0, w1 = _widths(bits)
    common = {"GROUP": 128, "BLOCK_N": 256, "BLOCK_K": 128, "REDUCE": "atomic", "PTX": True, "GUARD": True}
    off = {"SUB": False, "OFFS": 0, "WORDS": 1, "XVEC": False}  # gemv_kernel's SUBNORMAL options, off
    src, cons = pair_dot_ptx(w0, w1)
    ptx = _compile(jit.gemv_kernel, {**common, **off, "W0": w0, "W1": w1, "PTX_SRC": src, "PTX_ARGS": cons}, num_warps=2)
    assert "fma.rn.f16x2" in ptx and "lop3.b32" in ptx  # the inline PTX is in
    # bf16 inputs: converted to fp16 pairs in the kernel, then the same PTX; without the |x| guard too
    ptx_bf16 = _compile(jit.gemv_kernel, {**common, **off, "W0": w0, "W1": w1, "PTX_SRC": src, "PTX_ARGS": cons}, num_warps=2, act="*bf16")
    assert "fma.rn.f16x2" in ptx_bf16 and re.search(r"cvt\.rn\.f16\.f32|cvt\.rn\.f16x2\.f32", ptx_bf16)
    _compile(jit.gemv_kernel, {**common, **off, "W0": w0, "W1": w1, "PTX_SRC": src, "PTX_ARGS": cons, "GUARD": False}, num_warps=2)
    assert re.search(r"red\.global\.gpu\.relaxed\.add\.noftz\.(v\d\.)?f16\b", ptx)  # splits meet in relaxed fp16 atomics
    fsrc, fcons = pair_dot_ptx(w0, w1, few_shifts=True)
    _compile(jit.gemv_kernel, {**common, **off, "W0": w0, "W1": w1, "PTX_SRC": fsrc, "PTX_ARGS": fcons}, num_warps=2)
    # SUBNORMAL: two instructions a pair (pair_dot_sub_ptx), inputs scaled by fp16x2 powers of two; bf16 too
    sub = {**common, **off, "W0": w0, "W1": w1, "SUB": True, "OFFS": packed_offsets(w0, w1)}
    ssrc, scons = pair_dot_sub_ptx(w0, w1)
    ptx_sub = _compile(jit.gemv_kernel, {**sub, "PTX_SRC": ssrc, "PTX_ARGS": scons}, num_warps=2)
    assert "mul.rn.f16x2" in ptx_sub and "0x64006400" not in ptx_sub  # scaled inputs; no exponent OR-ed into the codes
    _compile(jit.gemv_kernel, {**sub, "PTX_SRC": ssrc, "PTX_ARGS": scons}, num_warps=2, act="*bf16")
    for words in (2, 4):  # several words a PTX block, inputs read 16 bytes at a time
        wsrc, wcons = pair_dot_sub_ptx(w0, w1, words)
        ptx_w = _compile(jit.gemv_kernel, {**sub, "PTX_SRC": wsrc, "PTX_ARGS": wcons, "WORDS": words, "XVEC": True}, num_warps=2)
        assert "ld.global.nc.v4.b32" in ptx_w
        _compile(jit.gemv_kernel, {**sub, "PTX_SRC": wsrc, "PTX_ARGS": wcons, "WORDS": words, "XVEC": True}, num_warps=2, act="*bf16")
    src4, cons4 = pair_dot_ptx(w0, w1, 4)
    _compile(
        jit.gemv4_kernel,
        {
            **{k: v for k, v in common.items() if k != "GUARD"},
            "BLOCK_N": 128,
            "W0": w0,
            "W1": w1,
            "PTX_SRC": src4,
            "PTX_ARGS": cons4,
            "REDUCE": "serial",
        },
        num_warps=2,
    )
    # a group of three layers at 2, 3 and `bits` bits: the loop before SUBNORMAL, and SUBNORMAL (the default)
    group = {**common, "SUB": False, "XVEC": False}
    sub_group = {**common, "SUB": True, "XVEC": True, "BLOCK_N": 512}
    for name, b in zip("ABC", (2, 3, bits), strict=True):
        gw0, gw1 = _widths(b)
        gsrc, gcons = pair_dot_ptx(gw0, gw1)
        group.update(
            {f"W{name}0": gw0, f"W{name}1": gw1, f"SRC_{name}": gsrc, f"ARGS_{name}": gcons, f"OFFS_{name}": 0, f"WORDS_{name}": 1}
        )
        gsrc, gcons = pair_dot_sub_ptx(gw0, gw1, 4)
        sub_group.update({f"W{name}0": gw0, f"W{name}1": gw1, f"SRC_{name}": gsrc, f"ARGS_{name}": gcons})
        sub_group.update({f"OFFS_{name}": packed_offsets(gw0, gw1), f"WORDS_{name}": 4})
    _compile(jit.gemv_group_kernel, group)
    assert "ld.global.nc.v4.b32" in _compile(jit.gemv_group_kernel, sub_group, num_warps=2)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_tile_and_dequant_kernels_compile_for_sm90(bits):
    w0, w1 = _widths(bits)
    tiles = {
        "GROUP": 128,
        "W0": w0,
        "W1": w1,
        "DOT_FP32": False,
        "BLOCK_M": 16,
        "BLOCK_N": 64,
        "BLOCK_K": 128,
        "REDUCE": "serial",
        "PAIRS": False,
        "PTX": False,
        "PTX_SRC": "",
        "PTX_ARGS": "",
        "SWAP": False,
    }
    _compile(jit.packed_matmul_kernel, tiles)
    # y^T = W x^T: the weight tile is the left operand of a warpgroup MMA (64-row tiles)
    swapped = _compile(jit.packed_matmul_kernel, {**tiles, "BLOCK_N": 64, "SWAP": True})
    assert "wgmma" in swapped
    if bits in (2, 3, 4):  # tiles built pair by pair, the pairs dequantized in inline PTX
        src, cons = pair_dequant_ptx(w0, w1)
        ptx = _compile(jit.packed_matmul_kernel, {**tiles, "PAIRS": True, "PTX": True, "PTX_SRC": src, "PTX_ARGS": cons})
        assert "sub.f16x2" in ptx and "mma" in ptx  # the PTX feeds the tensor cores
        ptx = _compile(jit.packed_matmul_kernel, {**tiles, "PAIRS": True, "PTX": True, "PTX_SRC": src, "PTX_ARGS": cons, "SWAP": True})
        assert "sub.f16x2" in ptx and "wgmma" in ptx
        src, cons = pair_dequant_ptx(w0, w1, bf16=True)  # bf16 activations: bf16x2 sub and fma
        ptx = _compile(
            jit.packed_matmul_kernel, {**tiles, "PAIRS": True, "PTX": True, "PTX_SRC": src, "PTX_ARGS": cons, "SWAP": True}, act="*bf16"
        )
        assert "sub.bf16x2" in ptx and "wgmma" in ptx
    _compile(jit.dequant_kernel, {"GROUP": 128, "W0": w0, "W1": w1, "BLOCK_K": 64, "BLOCK_N": 128})


def test_launches_ask_for_fused_multiply_adds():
    """The fp32 scale/zero epilogue of the M = 1 kernel is FMAs only because the launches ask for
    them: Triton 3.10 stops fusing by default, which would change the numbers we measured."""
    consts = {"GROUP": 128, "BLOCK_N": 256, "BLOCK_K": 128, "REDUCE": "atomic", "PTX": False, "GUARD": True}
    consts.update(W0=2, W1=0, PTX_SRC="", PTX_ARGS="")
    fused = _compile(jit.gemv_kernel, consts, num_warps=2)
    unfused = _compile(jit.gemv_kernel, consts, num_warps=2, fuse={"enable_fp_fusion": False})
    assert FUSE == {"enable_fp_fusion": True}
    assert "fma.rn.f32" in fused and "fma.rn.f32" not in unfused


def test_every_launch_passes_the_fusion_option():
    """Each `<name>_kernel[grid](...)` in matmul.py ends with `**FUSE` (the interpreter drops the
    option, so only the source shows a launch that forgot it)."""
    import ast
    import inspect

    from amq_kernels import matmul

    launches = [
        node
        for node in ast.walk(ast.parse(inspect.getsource(matmul)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript) and getattr(node.func.value, "id", "").endswith("_kernel")
    ]
    assert len(launches) == 5  # dequant, gemv, gemv4, gemv_group, packed_matmul
    for call in launches:
        assert any(kw.arg is None and getattr(kw.value, "id", None) == "FUSE" for kw in call.keywords), ast.unparse(call.func)


@pytest.mark.parametrize("int_zero", [False, True])
def test_gptq_column_kernel_compiles_for_sm90_without_contraction(int_zero):
    """GPTQ's column loop (amq_kernels.gptq) as launched: IEEE division, no fused multiply-add
    (what keeps it bit-exact with the PyTorch loop)."""
    from amq_kernels.gptq import ROWS, gptq_block_kernel

    consts = {"BLOCK": 128, "GROUP": 128, "ROWS": ROWS, "INT_ZERO": int_zero}
    sig = {
        n: "constexpr" if n in consts else "*u8" if n == "CODES" else "*fp32" if n.isupper() else "i32" for n in gptq_block_kernel.arg_names
    }
    k = triton.compile(
        ASTSource(gptq_block_kernel, sig, consts), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "enable_fp_fusion": False}
    )
    ptx = k.asm["ptx"]
    assert k.asm["cubin"] and "div.rn.f32" in ptx
    assert not re.search(r"\bfma\.rn\.f32", ptx)  # contraction off: every product rounded on its own, as in PyTorch
