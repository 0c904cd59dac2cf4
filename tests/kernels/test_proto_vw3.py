"""The 3-bit "virtual word" prototype (benchmarks/kernels/proto_vw3.py, issue 20): its PTX, run by the
emulator of test_pair_ptx on words its layout packs, gives sum(q x) for every code, so the design the
prototype's instruction count rests on is a correct one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pair_ptx import _pack16, run_ptx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "kernels"))
from proto_vw3 import VW3_SLOTS, pack_vw3, pair_dot_sub_vw3_ptx, pair_r


@pytest.mark.parametrize("units", [1, 2])
def test_vw3_ptx_sums_every_code(units):
    g = torch.Generator().manual_seed(3 + units)
    src, constraints = pair_dot_sub_vw3_ptx(units)
    assert constraints.count(",") == units * VW3_SLOTS
    k = 32 * units  # a unit: low-plane rows A and B and their high-plane row
    for trial, magnitude in enumerate((0.01, 1.0, 300.0, 30000.0) * 3):
        codes = torch.randint(0, 8, (1, k), generator=g, dtype=torch.uint8)
        x = (torch.randn(k, generator=g) * magnitude).clamp(-60000, 60000).half().numpy()
        f = min(15, 14 - int(np.floor(np.log2(np.abs(x.astype(np.float64)).max()))))
        low, high = pack_vw3(codes)
        ops = []
        for u in range(units):
            ops += [int(low[2 * u, 0]) & 0xFFFFFFFF, int(low[2 * u + 1, 0]) & 0xFFFFFFFF, int(high[u, 0]) & 0xFFFFFFFF]
            for row in (2 * u, 2 * u + 1):
                xs = x[16 * row : 16 * row + 16]
                ops += [_pack16(*(np.float16(float(v) * 2.0 ** (f - pair_r(j))) for v in xs[2 * j : 2 * j + 2])) for j in range(8)]
        got = run_ptx(src, ops)[0] * 2.0 ** (24 - f)
        q = codes[0].double().numpy()
        want = float((q * x.astype(np.float64)).sum())
        scale = float((q * np.abs(x.astype(np.float64))).sum())
        assert abs(got - want) <= 2e-3 * scale + k * 2.0 ** (-1 - f), (units, trial, got, want)


def test_vw3_layout_holds_every_code_once():
    """Same bytes as today's 3-bit planes, and decoding the layout by its rule gives the codes back."""
    from proto_vw3 import slot

    from amq_kernels.packing import pack_planes

    codes = torch.randint(0, 8, (5, 128), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    low, high = pack_vw3(codes)
    today = pack_planes(codes, 3)
    assert low.shape == today[0].shape and high.shape == today[1].shape and torch.equal(low, today[0])
    words = high.t().to(torch.int64) & 0xFFFFFFFF  # (n, K / 32)
    for x in (0, 1):
        for j in range(8):
            for h in (0, 1):
                bit = (words >> (16 * h + 4 * (j // 2) + slot(bool(x), j))) & 1
                want = (codes.view(5, -1, 2, 8, 2)[:, :, x, j, h].to(torch.int64) >> 2) & 1
                assert torch.equal(bit, want)
