"""Issue 20's first question, answered without a GPU: is the M = 1 kernel bound by instructions?

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

from amq_kernels import jit  # noqa: E402
from amq_kernels.matmul import FUSE, _tiling  # noqa: E402
from amq_kernels.packing import plane_widths  # noqa: E402
from amq_kernels.ptx import pair_dot_ptx  # noqa: E402

SMS, SCHEDULERS, CLOCK_HZ, HBM_BPS = 132, 4, 1.98e9, 4.8e12
GROUP = 128
SHAPE = (11008, 4096)  # Llama-2-7B gate/up (N, K): the tiling at M = 1 depends on bits, not on the shape's K loop
KINDS = {  # opcode prefix -> what it is
    "LDG": "global load", "LDS": "shared load", "STS": "shared store", "LOP3": "logic (mask/merge)", "SHF": "shift",
    "IMAD": "integer mul-add (addresses)", "IADD3": "integer add", "HFMA2": "fp16x2 fma", "HADD2": "fp16x2 add",
    "HMUL2": "fp16x2 mul", "FFMA": "fp32 fma", "FADD": "fp32 add", "F2F": "convert", "HADD2.F32": "fp16->fp32",
    "MOV": "move", "ISETP": "compare", "BRA": "branch", "PRMT": "byte permute", "LEA": "address",
}  # fmt: skip


def nvdisasm() -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm")


def compile_gemv(bits: int) -> tuple[bytes, dict]:
    """The cubin of `gemv_kernel` with the tiling `matmul` picks at M = 1 (`_tiling`), and that tiling."""
    tile = _tiling(1, SHAPE[0], SHAPE[1], bits, GROUP, torch.device("cpu"))
    widths = plane_widths(bits)
    w0, w1 = widths[0], widths[1] if len(widths) > 1 else 0
    src, args = pair_dot_ptx(w0, w1, 1, bool(tile["FEW_SHIFTS"]))
    consts = dict(GROUP=GROUP, W0=w0, W1=w1, BLOCK_N=tile["BLOCK_N"], BLOCK_K=tile["BLOCK_K"], REDUCE="atomic", PTX=True, PTX_SRC=src,
                  PTX_ARGS=args, GUARD=True)  # fmt: skip
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
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([nvdisasm(), "-c", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    return out.splitlines()


def k_loop(lines: list[str]) -> list[str]:
    """Instructions of the largest block that ends in a branch back to its own start label."""
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^\s*\.?(L_x_\d+|\.L_x_\d+):", line))}
    best: list[str] = []
    for i, line in enumerate(lines):
        m = re.search(r"BRA\s+`?\(?\.?(L_x_\d+)", line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            body = [x for x in lines[labels[m.group(1)] : i + 1] if re.search(r"/\*[0-9a-f]{4}\*/", x)]
            if len(body) > len(best):
                best = body
    return best


def opcode(line: str) -> str:
    text = re.sub(r"/\*[0-9a-f]{4}\*/", "", line).strip().lstrip("{").strip()
    text = re.sub(r"^@!?U?P\w+\s+", "", text)
    return text.split()[0].rstrip(";") if text else ""


def main() -> None:
    rows = []
    detail = {}
    for bits in (2, 3, 4):
        cubin, tile = compile_gemv(bits)
        warps, block_n, block_k = tile["num_warps"], tile["BLOCK_N"], tile["BLOCK_K"]
        body = k_loop(sass(cubin))
        ops = collections.Counter(opcode(x) for x in body)
        n = sum(ops.values())
        # one K-loop iteration of one program: BLOCK_N x BLOCK_K codes + one group's scales and zeros + BLOCK_K inputs
        weight_bytes = block_n * block_k * bits / 8 + block_n * 4 * block_k / GROUP
        per_byte = n * warps / weight_bytes
        issue_s_per_byte = per_byte / (SMS * SCHEDULERS * CLOCK_HZ)
        ratio = issue_s_per_byte * HBM_BPS
        rows.append((bits, warps, n, weight_bytes, per_byte, ratio, block_k))
        detail[bits] = ops
    lines = [
        "# M = 1 decode kernel: SASS instructions per byte (issue 20)",
        "",
        "Command: `python benchmarks/kernels/sass_count.py` (no GPU: Triton's compiler and its bundled nvdisasm, sm_90).",
        "",
        "`gemv_kernel` with the tiling `matmul._tiling` picks at M = 1 (group 128, inline PTX, the |x| guard; warps per",
        "bit-width in the table); its K loop's instructions, and per byte of packed weights (codes + fp16",
        "scale and zero) the warp instructions issued. `issue / HBM` is the time issuing them takes on an H200",
        f"({SMS} SMs x {SCHEDULERS} schedulers x 1 warp instruction per cycle at {CLOCK_HZ / 1e9:.2f} GHz) over the time",
        f"HBM needs for the same bytes ({HBM_BPS / 1e12:.1f} TB/s). Above 1: bound by instruction issue before memory.",
        "",
        "| bits | warps | loop instructions (per warp) | weight bytes per iteration | warp instructions per byte | issue / HBM |",
        "|---|---|---|---|---|---|",
        *[f"| {b} | {w} | {n} | {wb:.0f} | {pb:.3f} | **{r:.2f}** |" for b, w, n, wb, pb, r, _ in rows],
        "",
        "Loop body by kind (per warp, one iteration):",
        "",
        "| opcode | what | 2 bits | 3 bits | 4 bits |",
        "|---|---|---|---|---|",
    ]
    names = sorted(set().union(*detail.values()), key=lambda o: -sum(d[o] for d in detail.values()))
    for o in names:
        kind = next((v for k, v in KINDS.items() if o.startswith(k)), "")
        lines.append(f"| {o} | {kind} | {detail[2][o]} | {detail[3][o]} | {detail[4][o]} |")
    per_byte = [r[4] for r in rows]
    ratio = [r[5] for r in rows]
    by_bits = {r[0]: r[4] for r in rows}
    issued = {r[0]: r[4] * r[3] / r[6] for r in rows}  # warp instructions per input column of one program
    speed_3_over_4 = issued[4] / issued[3]
    lines += [
        "",
        "## Reading",
        "",
        f"The K loop issues {min(per_byte):.2f}-{max(per_byte):.2f} warp instructions per streamed byte, which an H200 needs",
        f"{min(ratio):.2f}-{max(ratio):.2f}x longer to issue than its HBM needs to deliver the bytes: with perfect latency hiding",
        f"the kernel can reach at most {100 / max(ratio):.0f}-{100 / min(ratio):.0f}% of the byte ceiling (issue 20 measured 43-60%).",
        "Instruction issue, not memory, is the first bound. Per byte, 3 bits costs about what 4 bits does",
        f"({by_bits[3]:.3f} vs {by_bits[4]:.3f}), so 3 bits could be up to {speed_3_over_4:.2f}x faster than 4 on issue alone;",
        "that it measures equal points at a second bound (latency / occupancy at 2 warps), which ncu on the GPU can show.",
        "",
        "Where the instructions go: the per-pair core (LOP3 + HFMA2) is about half; the rest is per word and per group:",
        "fp16 word sums widened to fp32 (HADD2.F32, F2F), scaled (FMUL) and added (FADD/FFMA), shifts and addresses.",
        "Reaching 85% of the ceiling needs the count per byte roughly halved: e.g. tensor-core MMA for the",
        "multiply-accumulate even at M = 1 (the activation row padded to the MMA's narrow side, as Marlin does), so",
        "that a pair costs one LOP3 + one HSUB2/HFMA2 to dequantize and the MMA does the rest, and accumulating",
        "more words before each widening.",
        "",
    ]
    out = Path(__file__).parent / "results" / "sass_count.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
