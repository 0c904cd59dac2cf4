"""Issue 20: are the M = 1 kernels bound by instruction issue? Answered without a GPU.

    python benchmarks/kernels/sass_count.py     # writes benchmarks/kernels/results/sass_count.md

Compiles `gemv_kernel` for sm_90 exactly as `matmul` launches it at M = 1 (per bit-width: the
tiling of `_tiling`, the inline PTX of `pair_dot_ptx`, FUSE), disassembles the cubin with the
nvdisasm Triton bundles, finds the K loop (the largest block ending in a backward branch) and
counts its SASS instructions by kind. From that, per byte of packed weights streamed: warp
instructions issued, and the time that issue alone needs on an H200 (132 SMs x 4 schedulers x
1 warp instruction per cycle at 1.98 GHz) against the time HBM needs for the same bytes (4.8 TB/s):
a ratio above 1 means the kernel cannot reach the byte ceiling whatever the memory system does.
(An upper bound on speed: latency, occupancy and dual issue are not modelled; ncu on the GPU
measures them.)
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "kernels")]

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from amq_kernels import jit, jit_mma  # noqa: E402
from amq_kernels.matmul import FUSE, _tiling  # noqa: E402
from amq_kernels.mma import placed_pair_ptx  # noqa: E402
from amq_kernels.packing import plane_widths  # noqa: E402
from amq_kernels.ptx import packed_offsets, pair_dot_ptx, pair_dot_sub_ptx  # noqa: E402

SMS, SCHEDULERS, CLOCK_HZ, HBM_BPS = 132, 4, 1.98e9, 4.8e12
GROUP = 128
MMA_UNROLL = 2
SHAPE = (11008, 4096)  # Llama-2-7B gate/up (N, K): the tiling at M = 1 depends on bits, not on the shape's K loop
KINDS = {  # opcode prefix -> what it is
    "LDG": "global load", "LDS": "shared load", "STS": "shared store", "LOP3": "logic (mask/merge)", "SHF": "shift",
    "IMAD": "integer mul-add (addresses)", "IADD3": "integer add", "HFMA2": "fp16x2 fma", "HADD2": "fp16x2 add",
    "HMUL2": "fp16x2 mul", "FFMA": "fp32 fma", "FADD": "fp32 add", "F2F": "convert", "HADD2.F32": "fp16->fp32",
    "MOV": "move", "ISETP": "compare", "BRA": "branch", "PRMT": "byte permute", "LEA": "address",
}  # fmt: skip


def _on_cubin(tool: str, cubin: bytes, *args: str) -> str:
    """The stdout of one of Triton's bundled CUDA tools (nvdisasm, cuobjdump) run on `cubin`."""
    exe = str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        return subprocess.run([exe, *args, f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)


def compile_gemv(
    bits: int, block_n: int | None = None, warps: int | None = None, before: bool = False, sub: bool | None = None
) -> tuple[bytes, dict]:
    """The cubin of `gemv_kernel` with the tiling and loop `matmul` picks at M = 1 (`_tiling`: SUBNORMAL, XVEC, WORDS),
    and that tiling; `before`: the loop and tiles before SUBNORMAL (the 3-instruction pair, FEW_SHIFTS at 2/3 bits,
    256-wide tiles of 2 / 2 / 4 warps); `sub=False`: the default tiles with that older loop.
    Without the |x| guard of the older loop: its second K loop, run only for a split whose inputs reach 4096, would
    be the largest (what `k_loop` would count); the loop every other call runs is the same either way."""
    tile = _tiling(1, SHAPE[0], SHAPE[1], bits, GROUP, torch.device("cpu"))
    if before:
        from kernel_sweeps import before_subnormal

        tile = before_subnormal(SHAPE[0], SHAPE[1], bits, SMS)
    tile.update({k: v for k, v in (("BLOCK_N", block_n), ("num_warps", warps)) if v})
    sub = bool(tile.get("SUBNORMAL")) if sub is None else sub
    words = tile.get("WORDS", 1) if sub else 1
    widths = plane_widths(bits)
    w0, w1 = widths[0], widths[1] if len(widths) > 1 else 0
    src, args = pair_dot_sub_ptx(w0, w1, words) if sub else pair_dot_ptx(w0, w1, 1, bool(tile["FEW_SHIFTS"]))
    consts = dict(GROUP=GROUP, W0=w0, W1=w1, BLOCK_N=tile["BLOCK_N"], BLOCK_K=tile["BLOCK_K"], REDUCE="atomic", PTX=True, PTX_SRC=src,
                  PTX_ARGS=args, GUARD=False, SUB=sub, OFFS=packed_offsets(w0, w1) if sub else 0, WORDS=words,
                  XVEC=bool(tile.get("XVEC")) and sub)  # fmt: skip
    sig = {}
    for name in jit.gemv_kernel.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in ("x_ptr", "y_ptr", "s_ptr", "z_ptr"):
            sig[name] = "*fp16"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name == "ws_ptr" else "*i32"
        else:
            sig[name] = "i32"
    k = triton.compile(
        ASTSource(jit.gemv_kernel, sig, consts, aligned(jit.gemv_kernel, consts)),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": tile["num_warps"], "num_stages": tile["num_stages"], **FUSE},
    )
    return k.asm["cubin"], tile


def aligned(fn, consts: dict) -> dict:
    """The 16-divisibility Triton's launcher specializes pointers (and ints) on, as it does for
    our tensors and shapes: without it the compiler cannot vectorize loads."""
    names = [n for n in fn.arg_names if n not in consts]
    ints = ("N", "K", "stride_xm", "stride_ym")
    return {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in names if n.endswith("_ptr") or n in ints}


def sass(cubin: bytes) -> list[str]:
    return _on_cubin("nvdisasm", cubin, "-c").splitlines()


def registers(cubin: bytes) -> int:
    """Registers a thread of the cubin's kernel (cuobjdump -res-usage): what bounds the warps resident on an SM."""
    return int(re.search(r"REG:(\d+)", _on_cubin("cuobjdump", cubin, "-res-usage")).group(1))  # type: ignore[union-attr]


def k_loop(lines: list[str]) -> list[str]:
    """Instructions of the largest block that ends in a branch back to its own start label and multiplies in
    fp16 pairs or on tensor cores (HFMA2 / HGMMA): the kernel's main K loop, not an fp32 fallback loop."""
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^\s*\.?(L_x_\d+|\.L_x_\d+):", line))}
    best: list[str] = []
    for i, line in enumerate(lines):
        m = re.search(r"BRA\s+`?\(?\.?(L_x_\d+)", line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            body = [x for x in lines[labels[m.group(1)] : i + 1] if re.search(r"/\*[0-9a-f]{4}\*/", x)]
            if len(body) > len(best) and any(re.search(r"\b(HFMA2|HGMMA)", x) for x in body):
                best = body
    return best


def opcode(line: str) -> str:
    text = re.sub(r"/\*[0-9a-f]{4}\*/", "", line).strip().lstrip("{").strip()
    text = re.sub(r"^@!?U?P\w+\s+", "", text)
    return text.split()[0].rstrip(";") if text else ""


def compile_mma(bits: int, int_zero: bool) -> bytes:
    """The cubin of `mma_matmul_kernel` as `mma_matmul` launches it at M = 1 (fp16, 2 steps a loop iteration)."""
    widths = plane_widths(bits)
    w0, w1 = widths[0], widths[1] if len(widths) > 1 else 0
    src, args = placed_pair_ptx(w1 > 0, False, int_zero)
    fn = jit_mma.mma_matmul_kernel
    consts = dict(W0=w0, W1=w1, BLOCK_M=16, REDUCE="atomic", UNROLL=MMA_UNROLL, PTX=True, PTX_SRC=src, PTX_ARGS=args, DOT_FP32=False,
                  INT_ZERO=int_zero)  # fmt: skip
    sig = {n: "constexpr" if n in consts else "*fp16" if n in ("x_ptr", "y_ptr") else "*fp32" if n == "ws_ptr" else "*i32"
           if n.endswith("_ptr") else "i32" for n in fn.arg_names}  # fmt: skip
    k = triton.compile(ASTSource(fn, sig, consts, aligned(fn, consts)), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4, "num_stages": 1, **FUSE})  # fmt: skip
    return k.asm["cubin"]


def pair_floor(bits: int) -> float:
    """Issue / HBM of 3 warp instructions per pair of codes (5 at 3 bits: the high plane's shift and merge), nothing else."""
    per_pair = 5 if bits == 3 else 3
    per_byte = (8 / bits / 2) * per_pair / 32  # pairs a byte x instructions a pair / lanes a warp
    return per_byte / (SMS * SCHEDULERS * CLOCK_HZ) * HBM_BPS


def count(cubin: bytes) -> collections.Counter:
    return collections.Counter(opcode(x) for x in k_loop(sass(cubin)))


def gemv_grid() -> None:
    """Today's M = 1 kernel over tile width x warps: registers a thread (so warps resident an SM) against
    K-loop instructions a word; written to results/sass_gemv_grid.md."""
    lines = [
        "# M = 1: registers against instructions, today's kernel over tile width x warps (issue 20)",
        "",
        "Command: `python benchmarks/kernels/sass_count.py --gemv-grid` (no GPU: sm_90 cubins, as for sass_count.md).",
        "",
        "| bits | BLOCK_N | warps | registers a thread | warps an SM at most (by registers) | K-loop instructions a warp | words a thread an iteration | instructions a word |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bits in (2, 3, 4):
        for block_n in (128, 256, 512):
            for warps in (2, 4, 8):
                cubin, tile = compile_gemv(bits, block_n, warps)
                regs, n = registers(cubin), sum(count(cubin).values())
                words = block_n * tile["BLOCK_K"] * bits / 32 / (warps * 32)
                default = (
                    " (default)"
                    if (
                        _tiling(1, SHAPE[0], SHAPE[1], bits, GROUP, torch.device("cpu"))["num_warps"],
                        _tiling(1, SHAPE[0], SHAPE[1], bits, GROUP, torch.device("cpu"))["BLOCK_N"],
                    )
                    == (warps, block_n)
                    else ""
                )
                lines.append(
                    f"| {bits} | {block_n} | {warps}{default} | {regs} | {min(64, 65536 // (regs * 32))} | {n} | {words:g} | {n / words:.1f} |"
                )
    out = Path(__file__).parent / "results" / "sass_gemv_grid.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    if "--gemv-grid" in sys.argv[1:]:
        return gemv_grid()
    rows = []  # (kernel, bits, warps, loop instructions, weight bytes per iteration, per byte, issue / HBM)
    detail = {}
    for bits in (2, 3, 4):
        for name, before in (("gemv before", True), ("gemv", False)):
            cubin, tile = compile_gemv(bits, before=before)
            # one K-loop iteration of one program: BLOCK_N x BLOCK_K codes + one group's scales and zeros
            wb = tile["BLOCK_N"] * tile["BLOCK_K"] * bits / 8 + tile["BLOCK_N"] * 4 * tile["BLOCK_K"] / GROUP
            detail[(name, bits)] = (count(cubin), tile["num_warps"], wb, registers(cubin))
        for int_zero in (False, True):
            # MMA_UNROLL steps of a 64 x 128 block: codes + each row's scale and zero
            wb = MMA_UNROLL * (64 * 128 * bits / 8 + 64 * 4)
            mma = compile_mma(bits, int_zero)
            detail[("mma int z" if int_zero else "mma", bits)] = (count(mma), 4, wb, registers(mma))
    for (kernel, bits), (ops, warps, wb, regs) in detail.items():
        n = sum(ops.values())
        per_byte = n * warps / wb
        rows.append((kernel, bits, warps, regs, n, wb, per_byte, per_byte / (SMS * SCHEDULERS * CLOCK_HZ) * HBM_BPS))
    kernels = ["gemv before", "gemv", "mma", "mma int z"]
    ratio = {(r[0], r[1]): r[7] for r in rows}
    lines = [
        "# M = 1: SASS instructions per byte, today's decode kernel and the mma kernel (issue 20)",
        "",
        "Command: `python benchmarks/kernels/sass_count.py` (no GPU: Triton's compiler and its bundled nvdisasm, sm_90).",
        "",
        "- `gemv`: `gemv_kernel` as `matmul` runs it at M = 1 (`_tiling`; group 128, fp16): the SUBNORMAL loop",
        "  (`pair_dot_sub_ptx`: codes masked into fp16 subnormals, 2 instructions a pair), inputs read 16 bytes at a",
        "  time (XVEC), 4 words a column to one fp16 accumulator (WORDS), 512-wide tiles of 2 warps at this shape.",
        "- `gemv before`: the loop and tiles before it (until 2026-12-03): 3 instructions a pair, FEW_SHIFTS at 2/3",
        "  bits, 256-wide tiles; its K loop for inputs under 4096 (the |x| guard's own loop is not counted).",
        f"- `mma`: `mma_matmul_kernel` (amq_kernels/mma.py) at M = 1, {MMA_UNROLL} steps of 128 inputs a loop iteration; `mma int z`: the",
        "  same with integer zeros (GPTQ / AWQ / RTN), one fp16x2 op a pair fewer.",
        "",
        "Each compiled with the 16-divisibility Triton's launcher gives our tensors and shapes (without it loads are",
        "not vectorized and the counts are higher: the first version of this page had 0.30-0.36 for `gemv`).",
        "Per byte of packed weights (codes + fp16 scale and zero) the warp instructions the K loop issues;",
        "`issue / HBM` is the time issuing them takes on an H200",
        f"({SMS} SMs x {SCHEDULERS} schedulers x 1 warp instruction per cycle at {CLOCK_HZ / 1e9:.2f} GHz) over the time",
        f"HBM needs for the same bytes ({HBM_BPS / 1e12:.1f} TB/s). Above 1: bound by instruction issue before memory.",
        "",
        "| kernel | bits | warps | registers a thread (warps an SM at most) | loop instructions (per warp) | weight bytes per iteration | warp instructions per byte | issue / HBM |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {k} | {b} | {w} | {g} ({min(64, 65536 // (g * 32))}) | {n} | {wb:.0f} | {pb:.3f} | **{r:.2f}** |"
            for k, b, w, g, n, wb, pb, r in rows
        ],
        "",
        "Loop body by kind (per warp, one iteration):",
        "",
        "| opcode | what | " + " | ".join(f"{k} {b}b" for k in kernels for b in (2, 3, 4)) + " |",
        "|---|---|" + "---|" * 3 * len(kernels),
    ]
    names = sorted(
        set().union(*(d[0] for d in detail.values())), key=lambda o: (-sum(d[0][o] for d in detail.values()), o)
    )  # ties by name: the page is reproducible
    for o in names:
        kind = next((v for k, v in KINDS.items() if o.startswith(k)), "")
        lines.append(f"| {o} | {kind} | " + " | ".join(str(detail[(k, b)][0][o]) for k in kernels for b in (2, 3, 4)) + " |")
    lines += [
        "",
        "## Reading",
        "",
        "`gemv before` issues its instructions on CUDA cores for everything: per pair of codes a LOP3 to unpack, an HFMA2 to",
        "remove the exponent bias and scale, an HFMA2 to multiply-accumulate, plus per word the fp16 sums widened to",
        f"fp32, scaled and added: issue / HBM {ratio[('gemv before', 2)]:.2f} / {ratio[('gemv before', 3)]:.2f} / {ratio[('gemv before', 4)]:.2f} at 2 / 3 / 4 bits.",
        "`gemv` (today's default) masks each pair into two fp16 subnormals q 2^(r - 24) and multiplies them with inputs the",
        "kernel pre-scaled by 2^(F - r) (F from each K step's max |x|): one LOP3 + one HFMA2 a pair; it reads the inputs",
        "16 bytes at a time, sums 4 words of a column in one fp16 accumulator (one widening to fp32 for 4 words) and gives",
        f"each thread 8 columns: issue / HBM {ratio[('gemv', 2)]:.2f} / {ratio[('gemv', 3)]:.2f} / {ratio[('gemv', 4)]:.2f}. 3 bits stays the",
        "costliest a byte: its high-bit plane adds a shift and a LOP3 a pair (4-5 instructions a pair against 2).",
        "`mma` hands the multiply-accumulate to the tensor cores (HGMMA, the weights as the register operand): per pair",
        "LOP3 (mask + exponent, the pair masked where it sits, one shift a word) + HADD2 (exact code) + HFMA2 (scale and",
        f"zero): {ratio[('mma', 2)]:.2f} / {ratio[('mma', 3)]:.2f} / {ratio[('mma', 4)]:.2f}; with integer zeros the HFMA2 goes:",
        f"{ratio[('mma int z', 2)]:.2f} / {ratio[('mma int z', 3)]:.2f} / {ratio[('mma int z', 4)]:.2f}. Below 1 the kernel can be memory-bound; the",
        "2- and 3-bit rows still sit at the issue limit (a 2-bit byte holds twice the pairs of a 4-bit byte;",
        "3 bits pays a second LOP3 and a shift per pair for its high-bit plane).",
        "",
        "The floor of `gemv before`'s arithmetic alone, 3 warp instructions a pair of codes (5 at 3 bits) and nothing else:",
        "issue / HBM "
        + " / ".join(f"{pair_floor(b):.2f}" for b in (2, 3, 4))
        + " at 2 / 3 / 4 bits; today's pair costs 2 (4 at 3 bits), two thirds of that.",
        "",
    ]
    out = Path(__file__).parent / "results" / "sass_count.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
