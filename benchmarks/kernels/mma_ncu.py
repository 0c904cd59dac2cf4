"""The launches ncu profiles for issue 20's bound analysis: today's M = 1 kernel and the mma kernel
on 11008 x 4096 at 2 and 4 bits, fp16, one call each (after a compile-only first call).

    ncu --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        --section SchedulerStats -k regex:"gemv_kernel|mma_matmul_kernel" --launch-skip-before-match 0 \
        python benchmarks/kernels/mma_ncu.py
"""

from __future__ import annotations

import torch
from bench_kernels import random_packed

from amq_kernels.matmul import matmul
from amq_kernels.mma import mma_matmul, pack_mma

N, K = 11008, 4096
for bits in (2, 4):
    p = random_packed(N, K, bits)
    mw = pack_mma(p)
    x = torch.randn(1, K, device="cuda", dtype=torch.float16)
    for _ in range(2):
        matmul(x, p)
        mma_matmul(x, mw)
    torch.cuda.synchronize()
