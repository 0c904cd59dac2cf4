"""Issue 20: how fast can a Triton kernel only *read* a layer's packed bytes at M = 1, and with how
many bytes in flight? The yardstick our M = 1 kernel is held to, without any of its arithmetic.

    PYTHONPATH=kernels:benchmarks/kernels python benchmarks/kernels/stream_probe.py > $OUT/stream_probe.md

A load-only kernel streams a buffer of a packed layer's size (codes + fp16 scale/zero per group of
128) with 16-byte loads: each program walks its own contiguous share (about SMs x 1..8 programs), UNROLL
independent loads per thread per iteration (XOR-reduced, one word a thread written at the end, so
nothing is optimized away). Every timing under CUDA graphs over 8 distinct copies (from HBM, not
L2), as bench_kernels.py. Printed: the byte ceiling (fp16 `F.linear` at M = 1 on the same shape: its
bytes/s times the format's byte ratio), the best load-only configuration and today's M = 1 kernel,
each as microseconds and percent of that ceiling; then the whole grid for one shape, with the
bytes in flight per SM that each configuration keeps (Little's law: bandwidth = bytes in flight /
latency).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def stream_kernel(src_ptr, out_ptr, per_prog, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    """XOR of program p's `per_prog` int32 words (a multiple of BLOCK * UNROLL), BLOCK lanes wide."""
    pid = tl.program_id(0)
    base = src_ptr + pid.to(tl.int64) * per_prog
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.int32)
    for i in range(0, per_prog, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            acc ^= tl.load(base + i + u * BLOCK + offs)
    tl.store(out_ptr + pid * BLOCK + offs, acc)


def stream(src: torch.Tensor, out: torch.Tensor, warps: int, unroll: int) -> None:
    block = warps * 32 * 4  # one 16-byte load per thread
    programs = out.numel() // block
    stream_kernel[(programs,)](src, out, src.numel() // programs, BLOCK=block, UNROLL=unroll, num_warps=warps)


def buffers(nbytes: int, programs: int, warps: int, unroll: int, device: str, copies: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`copies` int32 buffers of `nbytes` rounded up to whole iterations of each program (fewer programs than
    asked for where the buffer has fewer iterations than that), and the output (one word per lane)."""
    step = warps * 32 * 4 * unroll
    per_prog = -(-nbytes // 4 // programs // step) * step
    programs = -(-nbytes // 4 // per_prog)
    srcs = [torch.randint(-(2**31), 2**31 - 1, (programs * per_prog,), dtype=torch.int32, device=device) for _ in range(copies)]
    return srcs, torch.empty(programs * warps * 32 * 4, dtype=torch.int32, device=device)


def check(device: str) -> None:
    """The kernel reads every word exactly once: lane j of program p is the XOR of its share's words j, j + BLOCK, ..."""
    for programs, warps, unroll in ((3, 1, 2), (2, 2, 1)):
        (src,), out = buffers(40_000, programs, warps, unroll, device, 1)
        stream(src, out, warps, unroll)
        block = warps * 32 * 4
        programs = out.numel() // block
        want = np.bitwise_xor.reduce(src.cpu().numpy().reshape(programs, -1, block), axis=1)
        assert np.array_equal(out.cpu().numpy().reshape(programs, block), want), (programs, warps, unroll)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008")
    ap.add_argument("--grid-shape", default="11008x4096", help="the shape whose whole grid is printed (4 bits)")
    args = ap.parse_args()
    if not torch.cuda.is_available():  # the interpreter: the kernel's arithmetic only
        check("cpu")
        print("stream_kernel: XOR matches on the CPU interpreter")
        return
    check("cuda")
    from bench_kernels import COPIES, random_packed, time_cycle

    from amq_kernels.matmul import matmul

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    grid = [(sms * w, warps, u) for w in (1, 2, 4, 8) for warps in (4, 8) for u in (1, 4, 16)]
    print(f"# Load-only streaming at M = 1 sizes on {torch.cuda.get_device_name()} ({sms} SMs)\n")
    print(
        "| shape | bits | MB | fp16 us | ceiling us | today's kernel us (% ceiling) | load-only best us (% ceiling) | its programs / warps / unroll |"
    )
    print("|---|---|---|---|---|---|---|---|")
    grid_rows = []
    for shape in args.shapes.split(","):
        n, k = map(int, shape.split("x"))
        ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(COPIES)]
        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        t16 = time_cycle([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
        del ws
        for bits in (4, 3, 2):
            ps = [random_packed(n, k, bits) for _ in range(COPIES)]
            nbytes = ps[0].nbytes()  # codes + fp16 scale and zero per group
            ceiling = t16 * nbytes / (2 * n * k)
            t_ours = time_cycle([lambda p=p: matmul(x, p) for p in ps])
            del ps
            best = (float("inf"), None)
            for asked, warps, unroll in grid:
                srcs, out = buffers(nbytes, asked, warps, unroll, "cuda", COPIES)
                programs = out.numel() // (warps * 32 * 4)
                t = time_cycle([lambda s=s: stream(s, out, warps, unroll) for s in srcs]) * nbytes / (srcs[0].numel() * 4)
                best = min(best, (t, (programs, warps, unroll)))
                if shape == args.grid_shape and bits == 4:
                    grid_rows.append((programs, warps, unroll, t, ceiling))
                del srcs
            tb, (p, wp, u) = best
            print(
                f"| {shape} | {bits} | {nbytes / 1e6:.1f} | {t16:.1f} | {ceiling:.1f} | {t_ours:.1f} ({100 * ceiling / t_ours:.0f}%) "
                f"| {tb:.1f} ({100 * ceiling / tb:.0f}%) | {p} / {wp} / {u} |",
                flush=True,
            )
    if grid_rows:
        print(f"\n## Every load-only configuration, {args.grid_shape} at 4 bits\n")
        print("Bytes in flight per SM: resident programs per SM (at most programs / SMs) x threads x 16 B x unroll.\n")
        print("| programs | warps | unroll | KB in flight per SM (if all resident) | us | % of ceiling |\n|---|---|---|---|---|---|")
        for programs, warps, unroll, t, ceiling in grid_rows:
            kb = programs / sms * warps * 32 * 16 * unroll / 1024
            print(f"| {programs} | {warps} | {unroll} | {kb:.0f} | {t:.1f} | {100 * ceiling / t:.0f}% |")


if __name__ == "__main__":
    main()
