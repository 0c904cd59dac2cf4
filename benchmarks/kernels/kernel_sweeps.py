"""Design sweeps of the mixed-bit matmul on the GPU: tile grids and kernel variants, each config
checked against float64 before it is timed (the timing of bench_kernels.py: CUDA graphs, weight
copies cycled from HBM). One mode per call:

    PYTHONPATH=kernels python benchmarks/kernels/kernel_sweeps.py --sweep-gemv [--shapes 13824x5120,5120x13824]
    PYTHONPATH=kernels python benchmarks/kernels/kernel_sweeps.py --sweep [--sweep-m 1,16,2048]

and --sweep-small-m, --sweep-group, --sweep-ptx, --sweep-pairs [--dtype bf16], --sweep-guard,
--sweep-nosplit, --sweep-mid-m 32,64,256 (see --help). The results are in results/kernels_*_sweep.md.
"""

from __future__ import annotations

import argparse

import torch
from bench_kernels import BITS, GROUP, SHAPES, parse_shapes, random_packed, time_cycle

from amq_kernels.matmul import _tiling, matmul, matmul_group
from amq_kernels.packing import dequantize

SWEEP_SHAPES = SHAPES[:3]  # Llama-2-7B's; --shapes replaces them


def sweep_case(n: int, k: int, m: int, bits: int, dtype: torch.dtype = torch.float16):
    """One sweep case: 8 distinct packed weight copies (together larger than L2, as a model's
    layers stream from HBM), an input of m rows in `dtype`, its float64 result, and the time of
    `F.linear` on as many `dtype` weight copies."""
    copies = 8  # until 2026-12-03: max(2, min(8, 200 MB // fp16 size)), 2 at 11008 x 4096, whose 4-bit copies fit H200's L2
    ws = [torch.randn(n, k, device="cuda", dtype=dtype) for _ in range(copies)]
    ps = [random_packed(n, k, bits) for _ in range(copies)]
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = x.double() @ dequantize(ps[0], torch.float64).t()
    t16 = time_cycle([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
    return ps, x, ref, t16


def sweep_gemv() -> None:
    """M = 1, fp16 inputs (PTX inner loop): the default config against the best of a grid (tile
    width, waves of programs, warps, stages), K splits meeting through atomics (output zeroed
    first) or through the serial reduction (workspace, last-arriving split sums; no memset).
    Each config is checked against float64 before it is timed."""
    import itertools

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("| N x K | bits | fp16 us | default us | best atomics (cfg) us | best serial (cfg) us |")
    print("|---|---|---|---|---|---|")
    for (n, k), bits in itertools.product(SWEEP_SHAPES, [2, 3, 4]):
        ps, x, ref, t16 = sweep_case(n, k, 1, bits)
        t_default = time_cycle([lambda p=p: matmul(x, p) for p in ps])
        few = _tiling(1, n, k, bits, GROUP, x.device)["FEW_SHIFTS"]  # the default's inner loop: tiles alone vary
        best = {0: (float("inf"), None), 1: (float("inf"), None)}
        for bn, waves, nw, ns, serial in itertools.product([128, 256], [2, 4, 8, 16], [2, 4], [1, 3], [0, 1]):
            split = max(1, min(k // 128, -(-waves * sms // -(-n // bn))))
            cfg = {"BLOCK_N": bn, "BLOCK_K": 128, "SPLIT_K": split, "num_warps": nw, "num_stages": ns, "SERIAL": serial, "FEW_SHIFTS": few}
            t = _checked_time(x, ps, ref, cfg)
            if t < best[serial][0]:
                best[serial] = (t, {"BN": bn, "waves": waves, "warps": nw, "stages": ns, "split": split})
        print(
            f"| {n} x {k} | {bits} | {t16:.1f} | {t_default:.1f} | {best[0][0]:.1f} {best[0][1]} | {best[1][0]:.1f} {best[1][1]} |",
            flush=True,
        )


def sweep_gemv_occupancy() -> None:
    """M = 1, fp16: today's kernel over tile width x warps x waves (stages 3, atomics), the grid that trades
    registers a thread (warps resident an SM: `sass_count.py --gemv-grid`) against instructions a word.
    The load-only kernel needed about 16 resident warps an SM for 85% of the byte ceiling
    (reading_floor_h200.md); the defaults were swept on an H100 with 2 and 4 warps only. Each config
    checked against float64 before it is timed; the five fastest printed per case."""
    import itertools

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("| N x K | bits | fp16 us | default us | fastest configs: us (BLOCK_N / warps / waves) | best vs default |")
    print("|---|---|---|---|---|---|")
    for (n, k), bits in itertools.product(SWEEP_SHAPES, [2, 3, 4]):
        ps, x, ref, t16 = sweep_case(n, k, 1, bits)
        t_default = _checked_time(x, ps, ref, None)
        few = _tiling(1, n, k, bits, GROUP, x.device)["FEW_SHIFTS"]
        times = []
        for bn, nw, waves in itertools.product([64, 128, 256], [2, 4, 8], [4, 8, 16]):
            split = max(1, min(k // 128, -(-waves * sms // -(-n // bn))))
            cfg = {"BLOCK_N": bn, "BLOCK_K": 128, "SPLIT_K": split, "num_warps": nw, "num_stages": 3, "FEW_SHIFTS": few}
            times.append((_checked_time(x, ps, ref, cfg), f"{bn} / {nw} / {waves}"))
        times.sort()
        top = ", ".join(f"{t:.1f} ({c})" for t, c in times[:5])
        print(f"| {n} x {k} | {bits} | {t16:.1f} | {t_default:.1f} | {top} | {t_default / times[0][0]:.2f}x |", flush=True)


def sweep_group() -> None:
    """M = 1, fp16: layers that read the same input (a 7B block's q/k/v: 3 x 4096 x 4096; gate/up:
    2 x 11008 x 4096) at mixed bits, one `matmul` each vs one `matmul_group` launch, each checked
    against float64 first."""
    print(
        "| layers | bits | fp16 us (one F.linear each) | separate us | grouped us | grouped, loop before SUBNORMAL us | grouped vs separate | grouped vs fp16 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    cases = [((4096, 4096, 3), b) for b in ((3, 3, 3), (2, 3, 4), (4, 4, 4), (2, 2, 2))]
    cases += [((11008, 4096, 2), b) for b in ((3, 3), (4, 2), (4, 4))]
    for (n, k, count), bits in cases:
        copies = 8  # until 2026-12-03: 200 MB of fp16 copies, 2 here, whose packed copies fit in L2
        ws = [[torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(count)] for _ in range(copies)]
        ps = [[random_packed(n, k, b) for b in bits] for _ in range(copies)]
        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        ref = torch.cat([x.double() @ dequantize(p, torch.float64).t() for p in ps[0]], dim=-1)
        y = matmul_group(x, ps[0])
        err = ((y.double() - ref).norm() / ref.norm()).item()
        t16 = time_cycle([lambda w=w: [torch.nn.functional.linear(x, wi) for wi in w] for w in ws])
        t_sep = time_cycle([lambda p=p: [matmul(x, pi) for pi in p] for p in ps])
        t_grp = time_cycle([lambda p=p: matmul_group(x, p) for p in ps])
        t_grp2 = time_cycle([lambda p=p: matmul_group(x, p, subnormal=False) for p in ps])
        print(
            f"| {count} x {n} x {k} | {bits} | {t16:.1f} | {t_sep:.1f} | {t_grp:.1f} | {t_grp2:.1f} | {t_sep / t_grp:.2f}x | {t16 / t_grp:.2f}x |"
            + (f" relative error {err:.1e} (FAILED) |" if not err < 1e-2 else ""),
            flush=True,
        )


def sweep_ptx() -> None:
    """fp16, default tiles: the PTX inner loop shifting each code pair down (FEW_SHIFTS: 0) against
    FEW_SHIFTS: 1 (pairs masked where they sit, one word shift instead of up to 7), at M = 1 and
    at M = 4 (ROWS4 at 2/3 bits)."""
    import itertools

    print("| N x K | M | bits | fp16 us | shifted pairs us | FEW_SHIFTS us | ratio |")
    print("|---|---|---|---|---|---|---|")
    for (n, k), m, bits in itertools.product(SWEEP_SHAPES, [1, 4], BITS):
        ps, x, ref, t16 = sweep_case(n, k, m, bits)
        base = _tiling(m, n, k, bits, GROUP, x.device)
        t0 = _checked_time(x, ps, ref, {**base, "FEW_SHIFTS": 0})
        t1 = _checked_time(x, ps, ref, {**base, "FEW_SHIFTS": 1})
        print(f"| {n} x {k} | {m} | {bits} | {t16:.1f} | {t0:.1f} | {t1:.1f} | {t0 / t1:.2f}x |", flush=True)


SUB_VARIANTS = {  # name -> what a variant changes in today's M = 1 default (SUBNORMAL, XVEC, WORDS 4, 512 x 2 warps)
    "W1 no XVEC": {"XVEC": 0, "WORDS": 1},
    "W1": {"WORDS": 1},
    "W2": {"WORDS": 2},
    "default (W4)": {},
}


def before_subnormal(n: int, k: int, bits: int, sms: int | None = None) -> dict:
    """The M = 1 default before SUBNORMAL: the 3-instruction pair loop (FEW_SHIFTS at 2/3 bits), 256-wide tiles,
    2 warps and 8 waves at 2 bits, 2 / 4 at 3, 4 / 4 at 4 (kernels_gemv_sweep.md, H100); `sms` this GPU's
    multiprocessors (its own by default)."""
    sms = sms or torch.cuda.get_device_properties(0).multi_processor_count
    waves, warps = (8, 2) if bits <= 2 else (4, 2) if bits == 3 else (4, 4)
    split = max(1, min(k // 128, -(-waves * sms // -(-n // 256))))
    return {"BLOCK_N": 256, "BLOCK_K": 128, "SPLIT_K": split, "num_warps": warps, "num_stages": 3, "FEW_SHIFTS": int(bits <= 3)}


def _rel_err(x: torch.Tensor, p, cfg) -> float:
    want = x.double() @ dequantize(p, torch.float64).t()
    return ((matmul(x, p, cfg).double() - want).norm() / want.norm()).item()


def sweep_subnormal(dtype: torch.dtype, grid: bool) -> None:
    """M = 1: the loop before SUBNORMAL (3 instructions a pair of codes, its tiles) against today's default
    (`pair_dot_sub_ptx`: 2 a pair, inputs read 16 bytes at a time (XVEC), 4 words a column in one fp16
    accumulator (WORDS), 512-wide tiles of 2 warps) and variants of it, each checked against float64 first:
    time, and relative error on N(0, 1) inputs and on inputs of scale 0.01 (where the products are subnormal).
    `grid`: today's default over BLOCK_N x warps x waves, the five fastest printed."""
    import itertools

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    names = list(SUB_VARIANTS)
    print(f"Activations {str(dtype).replace('torch.', '')}. Times in us.\n")
    print("| N x K | bits | fp16 us | before us | " + " | ".join(f"{v} us" for v in names) + " | default vs before | default vs fp16 |")
    print("|---|---|---|---|" + "---|" * len(names) + "---|---|")
    errors, grids = [], []
    for (n, k), bits in itertools.product(SWEEP_SHAPES, BITS):
        ps, x, ref, t16 = sweep_case(n, k, 1, bits, dtype)
        base = _tiling(1, n, k, bits, GROUP, x.device)
        before = before_subnormal(n, k, bits)
        t0 = _checked_time(x, ps, ref, before)
        ts = [_checked_time(x, ps, ref, {**base, **SUB_VARIANTS[v]}) for v in names]
        print(
            f"| {n} x {k} | {bits} | {t16:.1f} | {t0:.1f} | "
            + " | ".join(f"{t:.1f}" for t in ts)
            + f" | {t0 / ts[-1]:.2f}x | {t16 / ts[-1]:.2f}x |",
            flush=True,
        )
        errs = [f"{_rel_err(xs, ps[0], cfg):.1e}" for xs in (x, x * 0.01) for cfg in (before, base)]
        errors.append(f"| {n} x {k} | {bits} | " + " | ".join(errs) + " |")
        if grid:
            times = []
            for bn, nw, waves, words in itertools.product([256, 512], [2, 4], [4, 8], [2, 4]):
                split = max(1, min(k // 128, -(-waves * sms // -(-n // bn))))
                cfg = {**base, "BLOCK_N": bn, "SPLIT_K": split, "num_warps": nw, "WORDS": words}
                times.append((_checked_time(x, ps, ref, cfg), f"{bn} / {nw} / {waves} / W{words}"))
            grids.append(f"| {n} x {k} | {bits} | {ts[-1]:.1f} | " + " | ".join(f"{t:.1f}" for t, _ in times) + " |")
            best_t, best_c = min(times)
            grids[-1] += f" {best_c}: {best_t:.1f} | {ts[-1] / best_t:.2f}x |"
            grid_cols = [c for _, c in times]
    print("\nRelative error against float64 (split K meets in 16-bit atomics in both):\n")
    print("| N x K | bits | before, x ~ 1 | default, x ~ 1 | before, x ~ 0.01 | default, x ~ 0.01 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(errors))
    if grid:
        print("\nToday's default over BLOCK_N / warps / waves / WORDS (split = waves x SMs / n tiles), us:\n")
        print("| N x K | bits | default us | " + " | ".join(grid_cols) + " | fastest | default vs fastest |")
        print("|---|---|---|" + "---|" * len(grid_cols) + "---|---|")
        print("\n".join(grids))


def sweep_mid_m(ms: list[int]) -> None:
    """fp16, M between the decode and prefill paths: the default (`matmul`'s own choice), dequantize
    + cuBLAS, and the fused tensor-core kernel over a grid of tiles with split K so the tiles fill
    the GPU. Each config checked against float64 first."""
    import itertools

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("| N x K | M | bits | fp16 us | default us | dequantize + cuBLAS us | best fused (cfg) us | best vs fp16 |")
    print("|---|---|---|---|---|---|---|---|")
    for (n, k), m, bits in itertools.product(SWEEP_SHAPES, ms, BITS):
        ps, x, ref, t16 = sweep_case(n, k, m, bits)
        t_default = _checked_time(x, ps, ref, None)
        t_deq = _checked_time(x, ps, ref, {"DEQUANT": 1})
        grid = []
        for (bm, bn), waves, nw in itertools.product([(32, 64), (64, 64), (64, 128), (128, 128)], [1, 2, 4], [4, 8]):
            if bm > max(32, m) or (bn == 64 and nw == 8):
                continue
            split = max(1, min(k // 64, -(-waves * sms // (-(-n // bn) * -(-m // bm)))))
            cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 64, "SPLIT_K": split, "num_warps": nw, "num_stages": 3}
            grid.append((cfg, {"BM": bm, "BN": bn, "waves": waves, "split": split, "warps": nw}))
        _print_best_row(n, k, m, bits, t16, [t_default, t_deq], _best_of(x, ps, ref, grid))


def sweep_mma_large_m() -> None:
    """M = 128 / 256 in the mma layout: the fused register-fed kernel (64-row x tiles, the weights read
    once per tile) against its dequantize + cuBLAS path and fp16; relative error of the fused result."""
    from amq_kernels.mma import mma_matmul, pack_mma

    print(
        "| N x K | M | bits | mma fused us | mma dequant+cuBLAS us | fp16 us | fused x fp16 | rel err |\n|---|---|---|---|---|---|---|---|"
    )
    for n, k in SWEEP_SHAPES[:2]:
        ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(8)]
        for m in (128, 256):
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            t16 = time_cycle([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
            for bits in (4, 2):
                ps = [random_packed(n, k, bits) for _ in range(8)]
                mws = [pack_mma(p) for p in ps]
                ref = x.double() @ dequantize(ps[0], torch.float64).t()
                y = mma_matmul(x, mws[0], fused=True)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                tf = time_cycle([lambda mw=mw: mma_matmul(x, mw, fused=True) for mw in mws])
                td = time_cycle([lambda mw=mw: mma_matmul(x, mw, fused=False) for mw in mws])
                print(f"| {n} x {k} | {m} | {bits} | {tf:.1f} | {td:.1f} | {t16:.1f} | {t16 / tf:.2f}x | {err:.1e} |", flush=True)


def sweep_pairs(dtype: torch.dtype) -> None:
    """Tensor-core tiles at M = 4, 8, 16 (and 64), same tiles and K split in the first four
    columns: the weight tile dequantized code by code in fp32; PAIRS (built pair by pair from the
    words, each pair one lop3 + sub + fp16x2 fma in inline PTX); SWAP (y^T = W x^T: the weight
    tile as the left operand of Hopper's 64-row warpgroup MMA, x as its narrow right side); both.
    Then `matmul`'s default, and at M = 16 the best of a grid of PAIRS + SWAP tiles. Each config
    is checked against float64 first. `dtype`: the activations (bf16 runs the bf16x2 PTX)."""
    import itertools

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{str(dtype).split('.')[-1]} activations and baseline.\n")
    print(
        "| N x K | M | bits | 16-bit us | code by code us | PAIRS us | SWAP us | PAIRS + SWAP us | default us | best PAIRS + SWAP tiles (cfg) us | default vs code by code | default vs 16-bit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (n, k), m, bits in itertools.product(SWEEP_SHAPES, [4, 8, 16, 64], BITS):
        ps, x, ref, t16 = sweep_case(n, k, m, bits, dtype)
        base = {key: v for key, v in _tiling(m, n, k, bits, GROUP, x.device).items() if key not in ("PAIRS", "SWAP")}
        if m <= 16:  # the tiles of M <= 16 before this sweep: ~4 waves
            base = {**base, "BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": max(1, min(k // 128, -(-4 * sms // -(-n // 64))))}
        ts = [_checked_time(x, ps, ref, {**base, **extra}) for extra in ({}, {"PAIRS": 1}, {"SWAP": 1}, {"PAIRS": 1, "SWAP": 1})]
        t_default = _checked_time(x, ps, ref, None)
        best = (float("inf"), "")
        if m == 16:
            for bn, nw, ns, waves in itertools.product([64, 128], [4, 8], [2, 4], [4, 8]):
                if bn == 64 and nw == 8:
                    continue
                split = max(1, min(k // 128 // 4, -(-waves * sms // -(-n // bn))))
                cfg = {**base, "BLOCK_N": bn, "SPLIT_K": split, "num_warps": nw, "num_stages": ns, "PAIRS": 1, "SWAP": 1}
                t = _checked_time(x, ps, ref, cfg)
                if t < best[0]:
                    best = (t, f"BN {bn}, warps {nw}, stages {ns}, waves {waves}, split {split}")
        cols = " | ".join(f"{t:.1f}" for t in ts)
        grid_col = f"{best[0]:.1f} {best[1]}" if best[1] else "-"
        print(
            f"| {n} x {k} | {m} | {bits} | {t16:.1f} | {cols} | {t_default:.1f} | {grid_col} | {ts[0] / t_default:.2f}x | {t16 / t_default:.2f}x |",
            flush=True,
        )


def sweep_guard() -> None:
    """M = 1: what the |x| guard costs in fp16 (default vs GUARD: 0), and bf16 inputs through the
    fp16-pair PTX (converted in the kernel; the default) vs the exact-fp32 loop (PTX: 0), each
    against its own 16-bit F.linear. Each config checked against float64 first."""
    import itertools

    print(
        "| N x K | bits | fp16 F.linear us | fp16 default us | fp16 no guard us | guard cost | bf16 F.linear us | bf16 default us | bf16 fp32 loop us | bf16 PTX vs fp32 loop | bf16 default vs bf16 F.linear |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (n, k), bits in itertools.product(SWEEP_SHAPES, BITS):
        ps, x, ref, t16 = sweep_case(n, k, 1, bits)
        base = _tiling(1, n, k, bits, GROUP, x.device)
        t_def = _checked_time(x, ps, ref, None)
        t_ng = _checked_time(x, ps, ref, {**base, "GUARD": 0})
        xb = x.to(torch.bfloat16)
        wb = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(len(ps))]
        tb16 = time_cycle([lambda w=w: torch.nn.functional.linear(xb, w) for w in wb])
        refb = xb.double() @ dequantize(ps[0], torch.float64).t()
        tb = _checked_time(xb, ps, refb, None)
        tb32 = _checked_time(xb, ps, refb, {**base, "PTX": 0})
        print(
            f"| {n} x {k} | {bits} | {t16:.1f} | {t_def:.1f} | {t_ng:.1f} | {t_def / t_ng:.3f}x | {tb16:.1f} | {tb:.1f} | {tb32:.1f} | {tb32 / tb:.2f}x | {tb16 / tb:.2f}x |",
            flush=True,
        )


def sweep_nosplit() -> None:
    """M = 1, fp16: the default (K split, the splits' sums meeting through atomics in an output
    zeroed first: a memset launch before the kernel) against narrow tiles over the whole K, one
    program per tile and a plain store (no memset, no atomics), best of a grid. Each config
    checked against float64 first."""
    import itertools

    print("| N x K | bits | fp16 us | default us | best unsplit (cfg) us | best vs default |")
    print("|---|---|---|---|---|---|")
    for (n, k), bits in itertools.product(SWEEP_SHAPES, BITS):
        ps, x, ref, t16 = sweep_case(n, k, 1, bits)
        t_default = _checked_time(x, ps, ref, None)
        few = _tiling(1, n, k, bits, GROUP, x.device)["FEW_SHIFTS"]
        grid = []
        for bn, nw, ns in itertools.product([16, 32, 64], [1, 2, 4], [1, 3]):
            cfg = {"BLOCK_N": bn, "BLOCK_K": 128, "SPLIT_K": 1, "num_warps": nw, "num_stages": ns, "FEW_SHIFTS": few}
            grid.append((cfg, {"BN": bn, "warps": nw, "stages": ns}))
        best = _best_of(x, ps, ref, grid)
        print(f"| {n} x {k} | {bits} | {t16:.1f} | {t_default:.1f} | {best[0]:.1f} {best[1]} | {t_default / best[0]:.2f}x |", flush=True)


def sweep_small_m() -> None:
    """M = 4 and 16, fp16: the default (tensor-core tiles, atomics) against the same tiles with the
    serial split-K reduction and against the 4-rows-per-program kernel (ROWS4: each word unpacked
    once for 4 rows), best of a grid, each config checked against float64 first."""
    import itertools

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("| N x K | M | bits | fp16 us | default us | default + SERIAL us | best ROWS4 (cfg) us | best vs fp16 |")
    print("|---|---|---|---|---|---|---|---|")
    for (n, k), m, bits in itertools.product(SWEEP_SHAPES, [4, 16], [2, 3, 4]):
        ps, x, ref, t16 = sweep_case(n, k, m, bits)
        t_default = time_cycle([lambda p=p: matmul(x, p) for p in ps])
        default_cfg = _tiling(m, n, k, bits, GROUP, x.device)
        t_serial = _checked_time(x, ps, ref, {**default_cfg, "SERIAL": 1})
        grid = []
        for bn, waves, nw, serial in itertools.product([128, 256], [4, 8], [2, 4], [0, 1]):
            split = max(1, min(k // 128, -(-waves * sms // (-(-n // bn) * -(-m // 4)))))
            cfg = {"BLOCK_N": bn, "BLOCK_K": 128, "SPLIT_K": split, "num_warps": nw, "num_stages": 3, "ROWS4": 1, "SERIAL": serial}
            grid.append((cfg, {"BN": bn, "waves": waves, "warps": nw, "serial": serial, "split": split}))
        _print_best_row(n, k, m, bits, t16, [t_default, t_serial], _best_of(x, ps, ref, grid))


def _best_of(x: torch.Tensor, ps: list, ref: torch.Tensor, grid: list[tuple[dict, dict]]) -> tuple[float, dict | None]:
    """(microseconds, label) of the fastest (config, label) in `grid`, each checked first."""
    best: tuple[float, dict | None] = (float("inf"), None)
    for cfg, label in grid:
        t = _checked_time(x, ps, ref, cfg)
        if t < best[0]:
            best = (t, label)
    return best


def _print_best_row(n: int, k: int, m: int, bits: int, t16: float, times: list[float], best: tuple[float, dict | None]) -> None:
    """A sweep's table row: fp16, the fixed variants, the best of the grid (with its config), and
    the fastest of them all against fp16."""
    cells = " | ".join(f"{t:.1f}" for t in times)
    print(f"| {n} x {k} | {m} | {bits} | {t16:.1f} | {cells} | {best[0]:.1f} {best[1]} | {t16 / min(*times, best[0]):.2f}x |", flush=True)


def _checked_time(x: torch.Tensor, ps: list, ref: torch.Tensor, cfg: dict | None) -> float:
    """Microseconds of `cfg` (None: matmul's own choice; inf if it fails or its result is off by
    >= 1e-2 against float64)."""
    try:
        y = matmul(x, ps[0], cfg, out=torch.full((x.shape[0], ref.shape[1]), float("nan"), device="cuda", dtype=x.dtype))
        err = ((y.double() - ref).norm() / ref.norm()).item()
        if not err < 1e-2:
            print(f"<!-- {cfg}: relative error {err:.2e} -->")
            return float("inf")
        return time_cycle([lambda p=p: matmul(x, p, cfg) for p in ps])
    except Exception as exc:
        print(f"<!-- {cfg}: {type(exc).__name__}: {str(exc)[:300]} -->")
        return float("inf")


def sweep(ms: list[int]) -> None:
    """Time a small grid of tile configs per case; prints the best (feeds matmul._tiling)."""
    import itertools

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("| N x K | M | bits | best config | us | fp16 us | speedup | default us |")
    print("|---|---|---|---|---|---|---|---|")
    for (n, k), m, bits in itertools.product(SWEEP_SHAPES, ms, [2, 3, 4]):
        ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(4)]
        ps = [random_packed(n, k, bits) for _ in range(4)]
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        t16 = time_cycle([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
        t_default = time_cycle([lambda p=p: matmul(x, p) for p in ps])
        configs = []
        if m <= 16:
            for bn, bk, waves, nw in itertools.product([32, 64, 128, 256], [128], [1, 2, 4, 8], [4, 8]):
                split = max(1, min(k // bk, -(-waves * sms // -(-n // bn))))
                configs.append(
                    {"BLOCK_M": 1 if m == 1 else 16, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split, "num_warps": nw, "num_stages": 3}
                )
        else:
            for bm, bn, bk, nw, ns in [
                (128, 128, 64, 8, 3),
                (128, 128, 32, 4, 4),
                (64, 128, 64, 4, 3),
                (128, 256, 64, 8, 3),
                (64, 64, 64, 4, 4),
                (128, 64, 64, 4, 4),
                (256, 128, 64, 8, 3),
                (128, 128, 128, 8, 3),
            ]:
                configs.append({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": nw, "num_stages": ns})
            configs.append({"DEQUANT": 1})  # dequantize once + cuBLAS
        best = (float("inf"), None)
        for cfg in configs:
            try:
                t = time_cycle([lambda p=p, c=cfg: matmul(x, p, c) for p in ps])
            except Exception:  # out of shared memory or registers for this tile
                continue
            best = min(best, (t, cfg), key=lambda b: b[0])
        t, cfg = best
        short = {k_: v for k_, v in cfg.items() if k_ != "BLOCK_M"} if cfg else None
        print(f"| {n} x {k} | {m} | {bits} | {short} | {t:.1f} | {t16:.1f} | {t16 / t:.2f}x | {t_default:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=None, help="only these N x K, e.g. 4096x11008,5120x5120 (default: Llama-2-7B's)")
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16", help="activations (--sweep-pairs, --sweep-subnormal)")
    ap.add_argument("--sweep", action="store_true", help="search tile configs for every M in --sweep-m")
    ap.add_argument("--sweep-m", default="1,16,2048", help="row counts --sweep covers")
    ap.add_argument("--sweep-gemv", action="store_true", help="M = 1 kernel variants and tiles")
    ap.add_argument("--sweep-gemv-occupancy", action="store_true", help="M = 1: tile width x warps x waves (registers vs instructions)")
    ap.add_argument("--sweep-subnormal", action="store_true", help="M = 1: the loop before SUBNORMAL against today's and its variants")
    ap.add_argument("--grid", action="store_true", help="--sweep-subnormal: also today's default over a grid of tiles")
    ap.add_argument("--sweep-small-m", action="store_true", help="M = 2..16: tensor-core tiles vs ROWS4")
    ap.add_argument("--sweep-group", action="store_true", help="M = 1: q/k/v and gate/up separately vs in one launch")
    ap.add_argument("--sweep-ptx", action="store_true", help="M = 1 and 4: the PTX inner loop with fewer word shifts")
    ap.add_argument(
        "--sweep-pairs",
        action="store_true",
        help="M = 4..64 tiles: weights dequantized pair by pair in PTX, and/or as the left MMA operand (SWAP)",
    )
    ap.add_argument("--sweep-guard", action="store_true", help="M = 1: the |x| guard's cost (fp16); bf16 through the PTX vs the fp32 loop")
    ap.add_argument("--sweep-nosplit", action="store_true", help="M = 1: narrow unsplit tiles (no memset) vs the default")
    ap.add_argument("--sweep-mma-large-m", action="store_true", help="M = 128/256: the fused mma kernel vs its dequantize + cuBLAS")
    ap.add_argument("--sweep-mid-m", default=None, help="e.g. 32,64,256: fused tiles with split K vs dequantize + cuBLAS")
    args = ap.parse_args()
    if args.shapes:
        global SWEEP_SHAPES
        SWEEP_SHAPES = parse_shapes(args.shapes)
    modes = {
        "sweep_pairs": lambda: sweep_pairs(torch.bfloat16 if args.dtype == "bf16" else torch.float16),
        "sweep_guard": sweep_guard,
        "sweep_nosplit": sweep_nosplit,
        "sweep_mid_m": lambda: sweep_mid_m([int(v) for v in args.sweep_mid_m.split(",")]),
        "sweep_mma_large_m": sweep_mma_large_m,
        "sweep_ptx": sweep_ptx,
        "sweep_group": sweep_group,
        "sweep_small_m": sweep_small_m,
        "sweep_gemv": sweep_gemv,
        "sweep_gemv_occupancy": sweep_gemv_occupancy,
        "sweep_subnormal": lambda: sweep_subnormal(torch.bfloat16 if args.dtype == "bf16" else torch.float16, args.grid),
        "sweep": lambda: sweep([int(v) for v in args.sweep_m.split(",")]),
    }
    chosen = [run for name, run in modes.items() if getattr(args, name)]
    if len(chosen) != 1:
        ap.error("choose one sweep")
    chosen[0]()


if __name__ == "__main__":
    main()
