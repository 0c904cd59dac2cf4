"""Where the M = 1 time goes: a fixed cost per call plus bytes over a bandwidth.

    PYTHONPATH=kernels python benchmarks/kernels/gemv_floor.py

Times (CUDA graphs, distinct weight copies as in bench_kernels.py) our M = 1 kernel and fp16
cuBLAS on N x 4096 layers of growing N, fits time = a + bytes / B by least squares for each, and
times the pieces of the fixed cost alone: an empty one-program Triton kernel, the same with a
memset of the output before it (what the split-K atomics need), and a memset alone.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from bench_kernels import GROUP, time_cycle
from kernel_sweeps import sweep_case

from amq_kernels.matmul import matmul


@triton.jit
def _empty(y_ptr):
    if tl.program_id(0) < 0:  # never: a launch that does nothing
        tl.store(y_ptr, 0.0)


def fit(bytes_: list[float], us: list[float]) -> tuple[float, float]:
    """(intercept us, slope GB/s) of us = a + bytes / B."""
    a = torch.tensor([[1.0, b] for b in bytes_], dtype=torch.float64)
    sol = torch.linalg.lstsq(a, torch.tensor(us, dtype=torch.float64)[:, None]).solution[:, 0]
    return sol[0].item(), 1e-3 / sol[1].item()


def main() -> None:
    print(f"# M = 1 fixed cost and bandwidth on {torch.cuda.get_device_name()}\n")
    y = torch.empty(11008, device="cuda", dtype=torch.float16)
    t_empty = time_cycle([lambda: _empty[(1,)](y)])
    t_empty_grid = time_cycle([lambda: _empty[(1024,)](y)])
    t_memset = time_cycle([lambda: y.zero_()])
    t_both = time_cycle([lambda: (y.zero_(), _empty[(1,)](y))])
    print("| piece | us |\n|---|---|")
    for name, t in [("empty kernel, 1 program", t_empty), ("empty kernel, 1024 programs", t_empty_grid),
                    ("memset of 11008 fp16", t_memset), ("memset + empty kernel", t_both)]:  # fmt: skip
        print(f"| {name} | {t:.2f} |")
    print("\n| N x K | bits | MB | ours us | fp16 us | fp16 MB |\n|---|---|---|---|---|---|")
    fits = {}
    for bits in (2, 3, 4):
        xs, ours, xs16, f16 = [], [], [], []
        for n in (1024, 2048, 4096, 8192, 11008, 16384, 24576, 32768):
            k = 4096
            ps, x, _ref, t16 = sweep_case(n, k, 1, bits)
            t = time_cycle([lambda p=p: matmul(x, p) for p in ps])
            mb = (n * k * bits / 8 + 2 * 2 * n * k / GROUP) / 1e6
            xs.append(mb * 1e6), ours.append(t), xs16.append(2 * n * k), f16.append(t16)
            print(f"| {n} x {k} | {bits} | {mb:.1f} | {t:.1f} | {t16:.1f} | {2 * n * k / 1e6:.1f} |", flush=True)
        fits[bits] = (fit(xs, ours), fit(xs16, f16))
    print(
        "\nLeast-squares fit time = a + bytes / B:\n\n| bits | ours a us | ours B GB/s | fp16 a us | fp16 B GB/s |\n|---|---|---|---|---|"
    )
    for bits, ((a, b), (a16, b16)) in fits.items():
        print(f"| {bits} | {a:.2f} | {b:.0f} | {a16:.2f} | {b16:.0f} |")


if __name__ == "__main__":
    main()
