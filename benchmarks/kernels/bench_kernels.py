"""Mixed-bit matmul on the GPU: correctness on full shapes, then time vs fp16 cuBLAS, one run.

    PYTHONPATH=kernels python benchmarks/kernels/bench_kernels.py [--quick] > benchmarks/kernels/results/kernels.md

The design sweeps (tile grids, kernel variants) are kernel_sweeps.py; both share the timing here.

Every kernel (ours and torch.nn.functional.linear) is timed under CUDA graphs
(triton.testing.do_bench_cudagraph) cycling through several distinct weight copies, so the
weights stream from HBM as in a real model; bandwidth is reported against a device-to-device
copy measured in the same run (bytes read + written).
"""

from __future__ import annotations

import argparse

import torch
import triton
from triton.testing import do_bench_cudagraph

from amq_kernels.matmul import matmul
from amq_kernels.mma import mma_matmul, mma_ok, pack_mma
from amq_kernels.packing import dequantize, pack

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (5120, 5120), (13824, 5120), (5120, 13824)]  # (N out, K in)
MS = [1, 4, 16, 64, 256, 2048]
BITS = [2, 3, 4]
GROUP = 128
COPIES = 8  # distinct weight copies cycled in every timing: the weights stream from HBM, not L2


def copy_bandwidth() -> float:
    a = torch.randn(256 * 1024 * 1024, device="cuda", dtype=torch.float16)  # 512 MB
    b = torch.empty_like(a)
    ms = do_bench_cudagraph(lambda: b.copy_(a))
    return 2 * a.numel() * 2 / (ms * 1e-3) / 1e9


def random_packed(n: int, k: int, bits: int):
    codes = torch.randint(0, 2**bits, (n, k), device="cuda", dtype=torch.uint8)
    scale = (torch.rand(n, k // GROUP, device="cuda") * 0.01 + 0.001).half()
    zero = (torch.rand(n, k // GROUP, device="cuda") * (2**bits - 1)).half()
    return pack(codes, scale, zero, bits, GROUP)


def check(n: int, k: int, bits: int, m: int, dtype: torch.dtype, layout: str = "planes") -> float:
    p = random_packed(n, k, bits)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = x.double() @ dequantize(p, torch.float64).t()
    poisoned = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)  # unwritten shows
    y = mma_matmul(x, pack_mma(p), out=poisoned) if layout == "mma" and mma_ok(p) else matmul(x, p, out=poisoned)
    if torch.isnan(y).any():
        return float("nan")
    return ((y.double() - ref).norm() / ref.norm()).item()


def correctness(shapes: list[tuple[int, int]], layout: str = "planes") -> str:
    """Fresh random data, fp16 and bf16, M = 1/5/16/64/300: relative error vs float64, one line."""
    errs = []
    for bits in BITS:
        for dtype in (torch.float16, torch.bfloat16):
            for m in (1, 5, 16, 64, 300):
                for n, k in shapes:
                    errs.append(check(n, k, bits, m, dtype, layout))
    worst = max((e if e == e else float("inf") for e in errs), default=float("nan"))
    return (
        f"Correctness: {len(errs)} cases (bits 2/3/4 x fp16/bf16 x M 1/5/16/64/300 x {len(shapes)} shapes), "
        f"worst relative error {worst:.2e} (limit 1e-2), NaN: {any(e != e for e in errs)}."
    )


def time_cycle(fns) -> float:
    """Median microseconds of one call, cycling through len(fns) distinct weights."""

    def run():
        for f in fns:
            f()

    return do_bench_cudagraph(run) * 1e3 / len(fns)


def peer_layers(n: int, k: int, bits: int, copies: int) -> dict[str, list]:
    """The same setting in the peers, where they have it: bitsandbytes NF4 (4-bit, its own
    blocksize-64 absmax format) and gemlite (2/4-bit, group 128, asymmetric like ours)."""
    out: dict[str, list] = {}
    if bits == 4:
        try:
            import bitsandbytes as bnb

            layers = []
            for _ in range(copies):
                lin = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.float16, quant_type="nf4")
                lin.weight = bnb.nn.Params4bit(torch.randn(n, k, dtype=torch.float16) * 0.02, requires_grad=False, quant_type="nf4")
                layers.append(lin.cuda())
            out["bnb"] = layers
        except Exception as exc:  # not installed, or no kernel for this GPU
            print(f"<!-- bitsandbytes unavailable: {type(exc).__name__}: {exc} -->")
    if bits in (2, 4):
        try:
            from gemlite import DType, GemLiteLinear

            layers = []
            for _ in range(copies):
                g = GemLiteLinear(bits, group_size=GROUP, in_features=k, out_features=n, input_dtype=DType.FP16, output_dtype=DType.FP16)
                codes = torch.randint(0, 2**bits, (n, k), device="cuda", dtype=torch.uint8)
                scale = (torch.rand(n, k // GROUP, device="cuda") * 0.01 + 0.001).half()
                zero = (torch.rand(n, k // GROUP, device="cuda") * (2**bits - 1)).half()
                g.pack(codes, scale, zero, None)
                layers.append(g)
            out["gemlite"] = layers
        except Exception as exc:
            print(f"<!-- gemlite unavailable: {type(exc).__name__}: {exc} -->")
    return out


def time_peer(layers: list, x: torch.Tensor) -> float | None:
    try:
        for lay in layers:  # autotune / first-call work outside the timed graph
            lay(x)
        torch.cuda.synchronize()
        return time_cycle([lambda lay=lay: lay(x) for lay in layers])
    except Exception as exc:
        print(f"<!-- peer failed at M={x.shape[0]}: {type(exc).__name__}: {str(exc)[:200]} -->")
        return None


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'4096x11008,5120x5120' -> [(4096, 11008), (5120, 5120)]."""
    return [(int(a), int(b)) for a, b in (sh.split("x") for sh in text.split(","))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="Llama-2-7B shapes and M in {1, 16, 2048} only")
    ap.add_argument("--shapes", default=None, help="only these N x K, e.g. 4096x11008,5120x5120")
    ap.add_argument("--ms", default=None, help="only these row counts M, e.g. 1,16,2048")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness block")
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16", help="activations, and the baseline's weights")
    ap.add_argument("--peers", action="store_true", help="also time bitsandbytes NF4 and gemlite where they run the setting")
    ap.add_argument(
        "--layout", choices=["planes", "mma"], default="planes", help="ours: the bit planes (matmul) or the mma layout (mma_matmul)"
    )
    args = ap.parse_args()
    shapes = parse_shapes(args.shapes) if args.shapes else SHAPES[:3] if args.quick else SHAPES
    ms = [1, 16, 2048] if args.quick else MS
    if args.ms:
        ms = [int(v) for v in args.ms.split(",")]
    if args.peers and args.dtype != "fp16":
        ap.error("--peers runs with fp16 activations only")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    dev = torch.cuda.get_device_name()
    bw = copy_bandwidth()

    print(f"# Mixed-bit matmul on {dev}\n")
    print(
        f"Command: `PYTHONPATH=kernels python benchmarks/kernels/bench_kernels.py{' --quick' if args.quick else ''}"
        f"{' --peers' if args.peers else ''}{f' --shapes {args.shapes}' if args.shapes else ''}{f' --ms {args.ms}' if args.ms else ''}{f' --dtype {args.dtype}' if args.dtype != 'fp16' else ''}{' --no-check' if args.no_check else ''}{' --layout mma' if args.layout == 'mma' else ''}`; torch {torch.__version__}, triton {triton.__version__}."
    )
    print(f"Copy bandwidth measured in this run: {bw:.0f} GB/s (read + write).\n")

    if not args.no_check:
        print(correctness(shapes[:3], args.layout) + "\n")

    # --- timing ---------------------------------------------------------------------------
    peer_cols = " bnb NF4 us | ours vs bnb | gemlite us | ours vs gemlite |" if args.peers else ""
    print(f"| N x K | M | bits | ours us | {args.dtype} us | speedup | % of byte ceiling | ours GB/s | % of copy BW |" + peer_cols)
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * (4 if args.peers else 0))
    for n, k in shapes:
        copies = COPIES
        ws = [torch.randn(n, k, device="cuda", dtype=dtype) * 0.02 for _ in range(copies)]
        peers = {b: peer_layers(n, k, b, copies) for b in BITS} if args.peers else {}
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            t16 = time_cycle([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
            for bits in BITS:
                ps = [random_packed(n, k, bits) for _ in range(copies)]
                if args.layout == "mma" and mma_ok(ps[0]):
                    mws = [pack_mma(p) for p in ps]
                    t = time_cycle([lambda mw=mw: mma_matmul(x, mw) for mw in mws])
                    del mws
                else:
                    t = time_cycle([lambda p=p: matmul(x, p) for p in ps])
                nbytes = ps[0].nbytes() + x.numel() * 2 + m * n * 2
                gbs = nbytes / (t * 1e-6) / 1e9
                ceiling = t16 * ps[0].nbytes() / (n * k * 2)  # fp16's time at the packed bytes
                row = f"| {n} x {k} | {m} | {bits} | {t:.1f} | {t16:.1f} | {t16 / t:.2f}x | {100 * ceiling / t:.0f}% | {gbs:.0f} | {100 * gbs / bw:.0f}% |"
                if args.peers:
                    for name in ("bnb", "gemlite"):
                        tp = time_peer(peers[bits][name], x) if name in peers.get(bits, {}) else None
                        row += f" {tp:.1f} | {tp / t:.2f}x |" if tp else " n/a | |"
                print(row, flush=True)
                del ps
        del ws, peers
    print()


if __name__ == "__main__":
    main()
