"""Speedups and bandwidth from a `kernel_sweeps.py --sweep-gemv` table (M = 1, fp16 inputs).

    python benchmarks/kernels/gemv_sweep_report.py benchmarks/kernels/results/kernels_gemv_sweep.raw.md

Bytes per call: the packed layer (codes + fp16 scale and zero per group of 128) or the fp16
weight, plus x and y; GB/s = bytes / time.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def layer_bytes(n: int, k: int, bits: int | None) -> int:
    io = 2 * (n + k)
    return io + (2 * n * k if bits is None else n * k * bits // 8 + n * (k // 128) * 4)


def main(path: str) -> None:
    print(
        "| N x K | bits | fp16 us | legacy us | PTX best us | speedup vs fp16 (legacy -> new) | new vs legacy | GB/s fp16 / new | new / fp16 GB/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for line in Path(path).read_text().splitlines():
        m = re.match(r"\| (\d+) x (\d+) \| (\d) \| ([\d.]+) \| ([\d.]+|-) \| ([\d.]+) \| ([\d.]+) \{.*?\} \| ([\d.]+) \{", line)
        if not m:
            continue
        n, k, bits = int(m[1]), int(m[2]), int(m[3])
        t16, best = float(m[4]), float(m[8])
        legacy = float(m[5]) if m[5] != "-" else float("nan")  # the previous kernel, in runs before its removal
        bw16 = layer_bytes(n, k, None) / t16 / 1e3
        bw = layer_bytes(n, k, bits) / best / 1e3
        print(
            f"| {n} x {k} | {bits} | {t16:.1f} | {legacy:.1f} | {best:.1f} | {t16 / legacy:.2f}x -> {t16 / best:.2f}x "
            f"| {legacy / best:.2f}x | {bw16:.0f} / {bw:.0f} | {bw / bw16:.0%} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/kernels/results/kernels_gemv_sweep.raw.md")
