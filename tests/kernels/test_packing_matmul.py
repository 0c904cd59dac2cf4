"""Packing round trip, and the Triton kernel under the interpreter against a float64 reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amq.quant.groupwise import quantize_hqq
from amq_kernels.packing import dequantize, pack, plane_widths, unpack_codes


def _packed(n: int, k: int, bits: int, group: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.02
    q = quantize_hqq(w, bits, group, iters=2)
    return q, pack(q.codes, q.scale, q.zero, bits, group)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_pack_roundtrip_and_exact_bytes(bits):
    q, p = _packed(48, 256, bits, 64)
    assert torch.equal(unpack_codes(p), q.codes)
    assert p.nbytes() == 48 * 256 * bits // 8 + 48 * (256 // 64) * 4  # what amq.cost counts
    assert torch.allclose(dequantize(p, torch.float32), q.dequantize(torch.float32))


def test_plane_widths():
    assert plane_widths(3) == [2, 1] and plane_widths(4) == [4] and plane_widths(2) == [2]
    with pytest.raises(ValueError):
        plane_widths(9)


def test_matmul_names_a_bad_config_key():
    pytest.importorskip("triton")
    from amq_kernels.matmul import matmul

    _, p = _packed(64, 256, 2, 128)
    x = torch.randn(1, 256).half()
    with pytest.raises(ValueError, match="SERAIL"):
        matmul(x, p, {"BLOCK_N": 64, "BLOCK_K": 128, "SPLIT_K": 1, "SERAIL": 1})
    with pytest.raises(ValueError, match="BLOCK_K"):
        matmul(x, p, {"BLOCK_N": 64, "SPLIT_K": 1})
    with pytest.raises(ValueError, match="BLOCK_M"):  # the tensor-core tiles need their row count
        matmul(torch.randn(8, 256).half(), p, {"BLOCK_N": 64, "BLOCK_K": 128, "SPLIT_K": 1})


def test_cost_model_matches_packed_bytes():
    from amq.cost import layer_bytes

    for bits in (2, 3, 4):
        _, p = _packed(64, 384, bits, 128)
        assert p.nbytes() == layer_bytes(64, 384, bits, 128)


INTERPRETER_CHECK = r"""
import torch
from amq.quant.groupwise import quantize_hqq
from amq_kernels.packing import pack, dequantize
from amq_kernels.matmul import matmul, matmul_group
torch.manual_seed(0)
fails = 0
for bits in (2, 3, 4):
    for dtype in (torch.float16, torch.bfloat16):
        for m in (1, 3, 17, 70, 130):  # decode vector, decode dot, fused 16-row tiles, fused 64-row tiles + split K, dequantize + matmul
            n, k, group = 72, 128, 64   # ragged N (not a multiple of BLOCK_N), odd M
            w = torch.randn(n, k) * 0.05
            q = quantize_hqq(w, bits, group, iters=2)
            p = pack(q.codes, q.scale, q.zero, bits, group)
            x = torch.randn(m, k).to(dtype)
            ref = x.double() @ dequantize(p, torch.float64).t()
            y = matmul(x, p)
            # opt-in paths; serial split-K (workspace + last-arriving split) writes into an output
            # poisoned with NaN, twice (the counters reset; the result is the same bits)
            tile = {"BLOCK_N": 32, "BLOCK_K": 64, "SPLIT_K": 2, "num_warps": 4, "num_stages": 1}
            configs = {"serial": {**tile, "SERIAL": 1}} if m == 1 else {}
            if m in (3, 17):
                configs = {"rows4": {**tile, "ROWS4": 1}, "rows4-serial": {**tile, "ROWS4": 1, "SERIAL": 1},
                           "dot-serial": {**tile, "BLOCK_M": 16, "SERIAL": 1},
                           "dot-pairs": {**tile, "BLOCK_M": 16, "PAIRS": 1},
                           "dot-swap": {**tile, "BLOCK_M": 16, "SWAP": 1},
                           "dot-pairs-swap": {**tile, "BLOCK_M": 16, "PAIRS": 1, "SWAP": 1}}
            for name, cfg in configs.items():
                outs = [matmul(x, p, cfg, out=torch.full((m, n), float("nan"), dtype=dtype)) for _ in range(2)]
                err_c = ((outs[0].double() - ref).norm() / ref.norm()).item()
                assert err_c < 1e-2 and not torch.isnan(outs[0]).any(), (name, bits, dtype, m, err_c)
                assert "serial" not in name or torch.equal(outs[0], outs[1]), (name, bits, dtype, m)
            if m in (1, 3):  # two more layers on the same input, at other bit-widths: one launch at M = 1
                extra = [pack(q2.codes, q2.scale, q2.zero, b2, group) for b2 in (2, 4) for q2 in [quantize_hqq(torch.randn(40, k) * 0.05, b2, group, iters=2)]]
                poisoned = torch.full((m, n + 80), float("nan"), dtype=dtype) if m == 1 else None
                yg = matmul_group(x, [p, *extra], out=poisoned)
                refg = torch.cat([ref] + [x.double() @ dequantize(e, torch.float64).t() for e in extra], dim=-1)
                assert yg.shape == (m, n + 80) and ((yg.double() - refg).norm() / refg.norm()).item() < 1e-2, ("group", bits, dtype, m)
                assert not torch.isnan(yg).any()
            assert y.dtype == dtype and y.shape == (m, n)
            err = ((y.double() - ref).norm() / ref.norm()).item()
            ok = err < 1e-2 and not torch.isnan(y).any()
            fails += not ok
            print(bits, dtype, m, f"{err:.2e}", "ok" if ok else "FAIL")
raise SystemExit(fails)
"""


@pytest.mark.interpreter
def test_triton_kernel_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # must be set before triton is imported
    r = subprocess.run(
        [sys.executable, "-c", INTERPRETER_CHECK], capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parent
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
