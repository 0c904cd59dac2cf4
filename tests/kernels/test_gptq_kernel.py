"""GPTQ's column loop as a Triton kernel (amq_kernels.gptq) against the PyTorch loop it replaces
on a GPU: the same codes, scales and zeros bit for bit, under Triton's CPU interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]

CHECK = r"""
import torch
from amq.quant.gptq import HessianAccumulator, gptq_quantize_shared

torch.manual_seed(0)
cases = [
    ((40, 24), 256, 128, (2, 4), False),  # q/k/v-like siblings at different bits, two blocks
    ((33,), 192, 64, (3,), False),  # rows not a multiple of the program's, a half last block
    ((20, 20), 128, 32, (4, 2), True),  # four groups in a block, integer zeros
]
for rows, in_f, gs, bits, int_zero in cases:
    ws = [torch.randn(r, in_f) * 0.02 for r in rows]
    ws[0][0, :gs] = 0.0  # an all-zero group and a constant one: the stretched-range path
    ws[0][1, :gs] = 0.25
    x = torch.randn(512, in_f) * torch.linspace(0.2, 3.0, in_f)
    x[:, 5] = 0.0  # a dead input column
    acc = HessianAccumulator(in_f, torch.device("cpu"))
    acc.add(x)
    ref = gptq_quantize_shared(ws, acc.h, list(bits), gs, int_zero=int_zero, use_kernel=False)
    got = gptq_quantize_shared(ws, acc.h, list(bits), gs, int_zero=int_zero, use_kernel=True)
    for a, b in zip(ref, got):
        assert torch.equal(a.codes, b.codes), (rows, in_f, (a.codes != b.codes).sum().item())
        assert torch.equal(a.scale, b.scale) and torch.equal(a.zero, b.zero), (rows, in_f)
        assert torch.isfinite(a.scale).all() and torch.isfinite(a.zero).all()
        assert a.codes.max().item() == 2**a.bits - 1  # the codes span their range (not all clamped)
print("ok", len(cases))
"""


@pytest.mark.interpreter
def test_gptq_kernel_matches_the_torch_loop_bit_for_bit():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kernels")])}
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", CHECK], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ok 3" in r.stdout
