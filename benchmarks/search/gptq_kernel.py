"""GPTQ's column loop: the PyTorch loop against the Triton kernel (amq_kernels.gptq), on a GPU.

    python benchmarks/search/gptq_kernel.py --out benchmarks/search/results/gptq_kernel.md

For each linear group of one Llama-2-7B and one 13B decoder block (q/k/v and gate/up stacked as
`amq.quant.apply` quantizes them, at 2/3/4 bits), with a Hessian from random activations of
uneven column scale: the time of `gptq_quantize_shared` with the PyTorch column loop and with
the kernel (median of 3 after a warm-up, CUDA-synchronized), and whether codes, scales and zeros
are identical. The block totals times the number of blocks give the GPTQ solve time of one
plan for the whole model (what the search's final step pays per candidate, on top of the
forwards that collect the Hessians).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "kernels")]

from amq.quant.gptq import HessianAccumulator, gptq_quantize_shared  # noqa: E402

# (hidden, intermediate, blocks) from the models' config.json
MODELS = {"llama2_7b": (4096, 11008, 32), "llama2_13b": (5120, 13824, 40)}


def groups(hidden: int, inter: int) -> dict[str, tuple[list[tuple[int, int]], list[int]]]:
    """One block's GPTQ calls: stacked siblings (out, in) shapes and their bits."""
    return {
        "q/k/v": ([(hidden, hidden)] * 3, [2, 3, 4]),
        "o": ([(hidden, hidden)], [3]),
        "gate/up": ([(inter, hidden)] * 2, [2, 4]),
        "down": ([(hidden, inter)], [3]),
    }


def timed(fn, reps: int = 3) -> tuple[float, object]:
    fn()
    ts, out = [], None
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def compare(ref, got) -> str:
    """'yes' when codes, scales and zeros are equal (NaN equal to NaN), else what differs."""
    diff = [int((a.codes != b.codes).sum()) for a, b in zip(ref, got, strict=True)]
    params = all(
        torch.equal(x.nan_to_num(7.0, 8.0, 9.0), y.nan_to_num(7.0, 8.0, 9.0))
        for a, b in zip(ref, got, strict=True)
        for x, y in ((a.scale, b.scale), (a.zero, b.zero))
    )
    nonfinite = sum(int((~a.zero.isfinite()).sum()) for a in ref)
    if not any(diff) and params:
        return "yes" + (f" ({nonfinite} non-finite zeros in both)" if nonfinite else "")
    return f"**no**: {sum(diff)} codes differ, scales/zeros {'equal' if params else 'differ'}, {nonfinite} non-finite zeros in the loop's"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama2_7b,llama2_13b")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    torch.manual_seed(0)
    rows, totals = [], {}
    for model in args.models.split(","):
        hidden, inter, n_blocks = MODELS[model]
        tot = [0.0, 0.0]
        for name, (shapes, bits) in groups(hidden, inter).items():
            in_f = shapes[0][1]
            ws = [torch.randn(o, i, device="cuda", dtype=torch.float16) * 0.02 for o, i in shapes]
            acc = HessianAccumulator(in_f, torch.device("cuda"))
            scale = torch.rand(in_f, device="cuda") * 3 + 0.1
            for _ in range(4):
                acc.add(torch.randn(2048, in_f, device="cuda") * scale)
            t_loop, ref = timed(lambda ws=ws, acc=acc, bits=bits: gptq_quantize_shared(ws, acc.h, bits, 128, use_kernel=False))
            t_kern, got = timed(lambda ws=ws, acc=acc, bits=bits: gptq_quantize_shared(ws, acc.h, bits, 128, use_kernel=True))
            same = compare(ref, got)
            out_f = sum(o for o, _ in shapes)
            rows.append((model, name, f"{out_f}x{in_f}", "/".join(map(str, bits)), t_loop, t_kern, same))
            tot[0] += t_loop
            tot[1] += t_kern
            print(
                f"{model} {name} {out_f}x{in_f}: loop {t_loop:.3f} s, kernel {t_kern:.3f} s ({t_loop / t_kern:.1f}x), identical: {same}",
                flush=True,
            )
        totals[model] = (tot[0] * n_blocks, tot[1] * n_blocks, n_blocks)
    lines = [
        "# GPTQ's column loop on the GPU: PyTorch loop vs Triton kernel",
        "",
        f"Command: `python benchmarks/search/gptq_kernel.py {' '.join(sys.argv[1:])}`",
        "",
        f"Device: {torch.cuda.get_device_name()}. Group 128, block 128 columns, fp32 solve; median of 3 after a warm-up.",
        "",
        "| model | layers (stacked) | out x in | bits | loop s | kernel s | speedup | identical codes, scales, zeros |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {m} | {n} | {s} | {b} | {a:.3f} | {k:.3f} | {a / k:.1f}x | {same} |" for m, n, s, b, a, k, same in rows],
        "",
        "| model | GPTQ solves of one whole-model plan, loop | kernel | speedup |",
        "|---|---|---|---|",
        *[f"| {m} ({nb} blocks) | {a:.0f} s | {k:.1f} s | {a / k:.0f}x |" for m, (a, k, nb) in totals.items()],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
