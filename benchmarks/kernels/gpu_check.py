"""GPU correctness of every matmul path on full shapes, against float64.

    PYTHONPATH=kernels python benchmarks/kernels/gpu_check.py [--ms 1,4,16,64,300]

On a CPU under Triton's interpreter, small shapes (what tests/kernels/test_gpu_check_cpu.py runs,
so that the script itself cannot rot between GPU calls):

    TRITON_INTERPRET=1 PYTHONPATH=kernels python benchmarks/kernels/gpu_check.py --device cpu --shapes 128x256g128 --group-nk 128x256

Fresh random codes, scales, zeros and activations for every case; the output is poisoned with
NaN before each run (`matmul(out=...)`), so an element a kernel fails to write shows up as NaN;
a case fails at relative error >= 1e-2 or any NaN. Paths: M = 1 (default tiles, serial split-K,
exact fp32 inner loop instead of fp16-pair PTX, pairs shifted down instead of FEW_SHIFTS, no |x|
guard, SUBNORMAL alone and with XVEC + WORDS 2 / 4), M = 4 and 16 (the PAIRS + SWAP tiles with atomics and with serial split-K, ROWS4 with
both, code-by-code tiles with PAIRS, SWAP, both), M = 64 (tensor-core tiles with split K, also
PAIRS and PAIRS + SWAP), M = 300 (dequantize + cuBLAS), grouped launches (q/k/v, gate/up at mixed
bits); shapes with group 32/64 and bit-widths 1/5/6 take the default path only; fp16 and bf16;
activations of scale 1 and 1000 (the PTX loop accumulates fp16 pairs), and at M = 1 of scale 0.01
and with outliers of 20000 (past the guard's 4096), in bf16 of 3e6 (past SUBNORMAL's 2^20). Prints failures
and a summary.
"""

import argparse
import itertools

import torch

from amq_kernels.matmul import _tiling, matmul, matmul_group
from amq_kernels.packing import dequantize, pack

SHAPES = [(72, 256, 64), (4096, 4096, 128), (11008, 4096, 128), (4096, 11008, 128), (4000, 1024, 32)]  # N, K, group
DEVICE = "cuda"


def paths(m: int, n: int, k: int, bits: int, group: int, dtype: torch.dtype) -> dict[str, dict | None]:
    base = _tiling(m, n, k, bits, group, torch.device(DEVICE), dtype)
    if group != 128 or bits not in (2, 3, 4):  # odd shapes and bit-widths: the default path only
        return {"default": None}
    if m == 1:
        return {
            "default": None,
            "serial": {**base, "SERIAL": 1},
            "fp32-loop": {**base, "PTX": 0},
            "shifted-pairs": {**base, "FEW_SHIFTS": 0},
            "no-guard": {**base, "GUARD": 0},
            "subnormal": {**base, "SUBNORMAL": 1},
            "subnormal-xvec-w2": {**base, "SUBNORMAL": 1, "XVEC": 1, "WORDS": 2},
            "subnormal-xvec-w4": {**base, "SUBNORMAL": 1, "XVEC": 1, "WORDS": 4},
        }
    if m <= 16:
        rows4 = {"BLOCK_N": 128, "BLOCK_K": min(128, group), "SPLIT_K": 8, "num_warps": 4, "num_stages": 3, "ROWS4": 1}
        tiles = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "SPLIT_K": 8, "num_warps": 4, "num_stages": 3}
        return {
            "default": None,
            "serial": {**base, "SERIAL": 1},
            "rows4": rows4,
            "rows4-serial": {**rows4, "SERIAL": 1},
            "pairs": {**tiles, "PAIRS": 1},
            "swap": {**tiles, "SWAP": 1},
            "pairs-swap": {**tiles, "PAIRS": 1, "SWAP": 1},
        }
    if m < 128:
        return {"default": None, "pairs": {**base, "PAIRS": 1}, "pairs-swap": {**base, "PAIRS": 1, "SWAP": 1}}
    return {"default": None}


OUTLIERS = -1.0  # the x "scale" that means: N(0, 1) inputs with every 512th at 20000 (massive activations)
HUGE = -2.0  # N(0, 1) inputs with every 512th at 3e6 (bf16 only: past SUBNORMAL's 2^20, its exact fp32 steps)
SMALL = 0.01  # inputs far below 1: where SUBNORMAL's input scale saturates (2^15) and its products are subnormal


def random_packed(n: int, k: int, bits: int, group: int):
    """Fresh random codes, scales (0.001-0.011) and zeros (anywhere in the code range), packed."""
    codes = torch.randint(0, 2**bits, (n, k), device=DEVICE, dtype=torch.uint8)
    scale = (torch.rand(n, k // group, device=DEVICE) * 0.01 + 0.001).half()
    zero = (torch.rand(n, k // group, device=DEVICE) * (2**bits - 1)).half()
    return pack(codes, scale, zero, bits, group)


def random_x(m: int, k: int, xscale: float) -> torch.Tensor:
    if xscale in (OUTLIERS, HUGE):
        x = torch.randn(m, k, device=DEVICE)
        x[:, ::512] = 20000.0 if xscale == OUTLIERS else 3e6
        return x
    return torch.randn(m, k, device=DEVICE) * xscale


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="1,4,16,64,300", help="row counts to check (the grouped launches run with M = 1)")
    ap.add_argument("--device", default="cuda", help="cpu: under TRITON_INTERPRET=1, with small --shapes")
    ap.add_argument("--shapes", default=None, help="NxKgG,... instead of the built-in list, e.g. 128x256g128")
    ap.add_argument("--group-nk", default=None, help="NxK of each grouped layer (default 11008x4096 for 2, 4096x4096 for 3)")
    args = ap.parse_args()
    global DEVICE, SHAPES
    DEVICE = args.device
    if args.shapes:
        SHAPES = [tuple(int(v) for v in s.replace("g", "x").split("x")) for s in args.shapes.split(",")]
    group_nk = tuple(int(v) for v in args.group_nk.split("x")) if args.group_nk else None
    ms = tuple(int(v) for v in args.ms.split(","))
    torch.manual_seed(0)
    cases = fails = 0
    worst: dict[str, float] = {}
    for bits, (n, k, group), m, dtype, xscale in itertools.product(
        (1, 2, 3, 4, 5, 6), SHAPES, ms, (torch.float16, torch.bfloat16), (1.0, 1000.0, SMALL, OUTLIERS, HUGE)
    ):
        if (bits not in (2, 3, 4) and m != 1) or (xscale != 1.0 and m == 300):
            continue  # 1/5/6 bits: the M = 1 kernel only; the cuBLAS path has no fp16 pair sums
        if xscale == SMALL and m != 1:
            continue  # small inputs: the M = 1 loops' fp16 pair sums (SUBNORMAL's products are subnormal there)
        if xscale == OUTLIERS and (m != 1 or bits not in (2, 3, 4)):
            continue  # inputs past 4096: the M = 1 PTX loop's guard (such splits run in fp32)
        if xscale == HUGE and (m != 1 or bits not in (2, 3, 4) or dtype != torch.bfloat16):
            continue  # inputs past 2^20: bf16 only (fp16 cannot hold them)
        p = random_packed(n, k, bits, group)
        x = random_x(m, k, xscale).to(dtype)
        ref = x.double() @ dequantize(p, torch.float64).t()
        for name, cfg in paths(m, n, k, bits, group, dtype).items():
            if name == "no-guard" and xscale in (OUTLIERS, HUGE):
                continue  # unguarded fp16 word sums overflow there, by design
            y = matmul(x, p, cfg, out=torch.full((m, n), float("nan"), device=DEVICE, dtype=dtype))
            err = ((y.double() - ref).norm() / ref.norm()).item()
            nan = bool(torch.isnan(y).any())
            cases += 1
            label = {OUTLIERS: "outliers", HUGE: "huge"}.get(xscale, f"x{xscale:g}")
            key = f"M={m} {name} {str(dtype)[6:]} {label}"
            worst[key] = max(worst.get(key, 0.0), err if not nan else float("inf"))
            if nan or not err < 1e-2:
                fails += 1
                # the exact result can exceed fp16's range (6 bits, x1000): then inf is right, not an error
                overflow = bool(ref.abs().max() > 65504) and dtype == torch.float16
                print(
                    f"FAIL bits={bits} {n}x{k} g{group} {key}: err {err:.2e} NaN {nan}{' (exact result overflows fp16)' if overflow else ''}"
                )
    for bits, dtype in itertools.product(((3, 3, 3), (2, 3, 4), (4, 2)) if 1 in ms else (), (torch.float16, torch.bfloat16)):  # grouped
        n, k = group_nk or (11008 if len(bits) == 2 else 4096, 4096)
        ps = [random_packed(n, k, b, 128) for b in bits]
        x = torch.randn(1, k, device=DEVICE).to(dtype)
        ref = torch.cat([x.double() @ dequantize(p, torch.float64).t() for p in ps], dim=-1)
        y = matmul_group(x, ps, out=torch.full((1, n * len(bits)), float("nan"), device=DEVICE, dtype=dtype))
        err, nan = ((y.double() - ref).norm() / ref.norm()).item(), bool(torch.isnan(y).any())
        cases += 1
        worst[f"group {len(bits)} x {n} {str(dtype)[6:]}"] = max(worst.get(f"group {len(bits)} x {n} {str(dtype)[6:]}", 0.0), err)
        if nan or not err < 1e-2:
            fails += 1
            print(f"FAIL group bits={bits} {str(dtype)[6:]}: err {err:.2e} NaN {nan}")
    print(f"\n{cases} cases, {fails} failed. Worst relative error per path:")
    for key, err in sorted(worst.items()):
        print(f"  {key}: {err:.2e}")


if __name__ == "__main__":
    main()
