"""GPU correctness of the M = 1 kernel, both inner loops (fp16-pair PTX and exact fp32 pairs),
against float64, with activations of scale 1 and 1000 (the PTX path accumulates fp16 pairs).

    PYTHONPATH=kernels python benchmarks/gemv_check.py

Prints every case that fails (relative error >= 1e-2 or NaN) and the 4096 x 11008 rows.
"""

import torch

from amq_kernels.matmul import matmul
from amq_kernels.packing import dequantize, pack

torch.manual_seed(0)
bad = 0
for bits in (1, 2, 3, 4, 5, 6):
    for n, k, group in ((72, 256, 64), (4096, 4096, 128), (11008, 4096, 128), (4096, 11008, 128), (4000, 1024, 32)):
        codes = torch.randint(0, 2**bits, (n, k), device="cuda", dtype=torch.uint8)
        scale = (torch.rand(n, k // group, device="cuda") * 0.01 + 0.001).half()
        zero = (torch.rand(n, k // group, device="cuda") * (2**bits - 1)).half()
        p = pack(codes, scale, zero, bits, group)
        wref = dequantize(p, torch.float64).t()
        for dtype in (torch.float16, torch.bfloat16):
            for xscale in (1.0, 1000.0):
                x = (torch.randn(1, k, device="cuda") * xscale).to(dtype)
                ref = x.double() @ wref
                for ptx in (0, 1):
                    cfg = {"BLOCK_N": 128, "BLOCK_K": min(128, group), "SPLIT_K": 4, "num_warps": 4, "num_stages": 3, "PTX": ptx}
                    y = matmul(x, p, cfg)
                    err = ((y.double() - ref).norm() / ref.norm()).item()
                    ok = err < 1e-2 and not torch.isnan(y).any()
                    bad += not ok
                    if not ok or (n == 4096 and k == 11008):
                        print(bits, n, k, group, dtype, xscale, ptx, f"{err:.2e}", "ok" if ok else "FAIL")
print("FAILS", bad)
