"""Issue 20, first GPU look at the register-fed tensor-core kernel (amq_kernels/mma.py) against
today's kernels and fp16 cuBLAS: correctness on full shapes, then time and % of the byte ceiling.

    PYTHONPATH=kernels python benchmarks/kernels/mma_probe.py > benchmarks/kernels/results/mma_probe.md

Timing as bench_kernels.py (CUDA graphs, 8 distinct weight copies cycled). Byte ceiling: fp16
F.linear's time on the same shape divided by the byte ratio (fp16 weight bytes / packed bytes,
codes + fp16 scale and zero per group of 128); "% ceil" = ceiling time / our time.
"""

from __future__ import annotations

import argparse

import torch
from bench_kernels import SHAPES, random_packed, time_cycle

from amq_kernels.matmul import matmul
from amq_kernels.mma import mma_matmul, pack_mma
from amq_kernels.packing import PackedWeight, dequantize

COPIES = 8


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="1,4,16")
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--waves", default="4")
    ap.add_argument("--zeros", default="frac,int", help="fractional zeros (HQQ-like) and/or integer zeros (GPTQ/AWQ/RTN: the 2-op pair)")
    ap.add_argument("--unroll", default="2", help="K steps per loop iteration (every shape here has an even step count)")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    ms = [int(v) for v in args.ms.split(",")]
    stages = [int(v) for v in args.stages.split(",")]
    waves = [int(v) for v in args.waves.split(",")]
    unrolls = [int(v) for v in args.unroll.split(",")]
    print(f"# Register-fed tensor-core kernel (mma) vs today's kernels, {torch.cuda.get_device_name()}, {args.dtype}\n")
    print(
        f"Command: `PYTHONPATH=kernels python benchmarks/kernels/mma_probe.py --ms {args.ms} --dtype {args.dtype} --stages {args.stages} --waves {args.waves} --unroll {args.unroll} --zeros {args.zeros}`\n"
    )
    worst, nan = 0.0, False
    zero_kinds = args.zeros.split(",")
    variants = [(st, wv, un, zk) for zk in zero_kinds for st in stages for wv in waves for un in unrolls]
    head = (
        "| N x K | bits | M | fp16 us | today us | today x fp16 | today % ceil | "
        + " | ".join(f"mma {zk} s{st} w{wv} u{un} us | x fp16 | % ceil" for st, wv, un, zk in variants)
        + " | mma / today |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n, k in SHAPES:
        ws = [torch.randn(n, k, device="cuda", dtype=dtype) * 0.02 for _ in range(COPIES)]
        for bits in (2, 3, 4):
            ps = [random_packed(n, k, bits) for _ in range(COPIES)]
            mmas = {"frac": [pack_mma(p) for p in ps]}
            if "int" in zero_kinds:  # the same codes and scales, zeros rounded to integers
                ps_int = [PackedWeight(p.planes, p.scales, p.zeros.round(), p.bits, p.group_size, n, k) for p in ps]
                mmas["int"] = [pack_mma(p) for p in ps_int]
            nbytes = ps[0].nbytes()
            ratio = n * k * 2 / nbytes
            for m in ms:
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                for zk in zero_kinds:
                    src = ps[0] if zk == "frac" else ps_int[0]
                    ref = x.double() @ dequantize(src, torch.float64).t()
                    y = mma_matmul(x, mmas[zk][0], out=torch.full((m, n), float("nan"), device="cuda", dtype=dtype))
                    nan |= bool(torch.isnan(y).any())
                    worst = max(worst, ((y.double() - ref).norm() / ref.norm()).item())
                t16 = time_cycle([lambda w=w, x=x: torch.nn.functional.linear(x, w) for w in ws])
                today = time_cycle([lambda p=p, x=x: matmul(x, p) for p in ps])
                cells = []
                best = None
                for st, wv, un, zk in variants:
                    t = time_cycle(
                        [lambda pl=pl, st=st, wv=wv, un=un, x=x: mma_matmul(x, pl, num_stages=st, waves=wv, unroll=un) for pl in mmas[zk]]
                    )
                    best = t if best is None else min(best, t)
                    cells.append(f"{t:.1f} | {t16 / t:.2f} | {100 * t16 / ratio / t:.0f}%")
                print(
                    f"| {n}x{k} | {bits} | {m} | {t16:.1f} | {today:.1f} | {t16 / today:.2f} | {100 * t16 / ratio / today:.0f}% | "
                    + " | ".join(cells)
                    + f" | {today / best:.2f} |",
                    flush=True,
                )
        del ws
    print(
        f"\nCorrectness (mma, M in {ms}, every shape and bit-width, zeros {args.zeros}, output poisoned with NaN): worst relative error {worst:.2e}, NaN: {nan}."
    )


if __name__ == "__main__":
    main()
