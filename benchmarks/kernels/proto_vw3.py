"""Prototype (issue 20, items 1 and 4): a 3-bit layout whose code pairs unpack in about 2.75 instructions
instead of about 4, for the M = 1 SUBNORMAL loop. Not in the product yet: it needs GPU time to show it is
faster, then every path that reads 3-bit planes moved to it (a packed-format version). Design and instruction
count only, all on the CPU:

    PYTHONPATH=kernels python benchmarks/kernels/proto_vw3.py          # sm_90 loop instructions, today's 3-bit vs this
    PYTHONPATH=kernels:benchmarks/kernels python benchmarks/kernels/proto_vw3.py --time   # GPU: checked, then timed

The layout. The low plane stays today's 2-bit plane (16 codes a word, pair j at bits 2j and 16 + 2j). The high
plane keeps one bit a code and 32 codes a word (the two low-plane rows A = 2R and B = 2R + 1 of word row R), but
places them in nibble slots: for row X, pair j, half h (even / odd code) the bit is
16 h + 4 (j // 2) + slot, slot = 2 / 3 for row A's even / odd pairs, 1 / 0 for row B's.
Then one LOP3 "select" (c = 0x33333333: slots 0-1 from the low word, 2-3 from the high word) makes a 4-bit-like
"virtual word" holding four 3-bit codes a half (nibble slot 3 is garbage, masked away by the pair mask 0x00070007):
  row A: VW0 = select(L, H),        pairs 0, 2, 4, 6     row B: VW0 = select(L, H << 1),      pairs 0, 2, 4, 6
         VW1 = select(L >> 2, H >> 1), pairs 1, 3, 5, 7         VW1 = select(L >> 2, H << 2), pairs 1, 3, 5, 7
and each virtual word is read as SUBNORMAL reads a 4-bit word: per pair a LOP3 (mask in place) and an HFMA2,
one shift by 8 halfway (a 3-bit code at bit r is subnormal while r <= 7). Same bytes as today (exactly 3 bits a
code); only the high plane's bit order changes.
"""

from __future__ import annotations

import torch

from amq_kernels.packing import pack_planes

SELECT = 0x33333333
VW3_SLOTS = 19  # a block's operands per row pair: L_A, L_B, H, 8 input pairs of A, 8 of B


def slot(row_b: bool, j: int) -> int:
    return (1 - j % 2) if row_b else (2 + j % 2)


def pack_vw3(codes: torch.Tensor) -> list[torch.Tensor]:
    """(N, K) 3-bit codes -> [low plane (K / 16, N) as today's, high plane (K / 32, N) in nibble slots]."""
    n, k = codes.shape
    low = pack_planes(codes & 3, 2)[0]
    hi = ((codes >> 2) & 1).to(torch.int64).view(n, k // 32, 2, 8, 2)  # (n, R, row A/B, pair j, half h)
    word = torch.zeros(n, k // 32, dtype=torch.int64)
    for x in (0, 1):
        for j in range(8):
            for h in (0, 1):
                word |= hi[:, :, x, j, h] << (16 * h + 4 * (j // 2) + slot(bool(x), j))
    word = torch.where(word >= 2**31, word - 2**32, word)
    return [low, word.to(torch.int32).t().contiguous()]


def pair_r(j: int) -> int:
    """The bit where pair j's code sits when masked (its input is scaled by 2^(F - r))."""
    return 4 * ((j // 2) % 2)


def pair_dot_sub_vw3_ptx(units: int = 1) -> tuple[str, str]:
    """PTX for `units` row pairs (A, B) of one column: sum over their 32 codes of q x 2^(F - 24) in one fp16x2
    accumulator, widened once. Operands: $0 the fp32 result, then per unit L_A, L_B, H, A's 8 input pairs, B's 8,
    pair j scaled by 2^(F - pair_r(j))."""
    body = []
    for u in range(units):
        base = 1 + u * VW3_SLOTS
        la, lb, h = f"${base}", f"${base + 1}", f"${base + 2}"
        for row, lw, (h0, h1) in ((0, la, ("", "shr.u32 hs, {h}, 1;")), (1, lb, ("shl.b32 hs, {h}, 1;", "shl.b32 hs, {h}, 2;"))):
            xs = base + 3 + 8 * row
            for parity, hshift in ((0, h0), (1, h1)):
                src_l = lw
                if parity:
                    body.append(f"shr.u32 ls, {lw}, 2;")
                    src_l = "ls"
                src_h = h
                if hshift:
                    body.append(hshift.format(h=h))
                    src_h = "hs"
                body.append(f"lop3.b32 v, {src_l}, {src_h}, {SELECT:#010x}, 0xE4;")  # (a & c) | (b & ~c)
                for m in range(4):
                    if m == 2:
                        body.append("shr.u32 v, v, 8;")
                    j = 2 * m + parity
                    body.append(f"lop3.b32 t, v, {0x00070007 << pair_r(j):#010x}, 0, 0xC0;")  # v & mask
                    body.append(f"fma.rn.f16x2 a, t, ${xs + j}, a;")
    lines = ["{", ".reg .b32 v, t, ls, hs, a;", ".reg .b16 a_lo, a_hi;", ".reg .f32 f_lo, f_hi;", "mov.b32 a, 0;", *body]
    lines += ["mov.b32 {a_lo, a_hi}, a;", "cvt.f32.f16 f_lo, a_lo;", "cvt.f32.f16 f_hi, a_hi;", "add.f32 $0, f_lo, f_hi;", "}"]
    return "\n".join(lines), ",".join(["=f"] + ["r"] * (units * VW3_SLOTS))


def vw3_offsets() -> int:
    return sum(pair_r(j) << 4 * j for j in range(8))


def _kernel():
    """A standalone M = 1 kernel with the VW3 loop, for the SASS count: today's SUBNORMAL loop (one step of
    128 inputs, 2 words of each column a block, inputs 16 bytes at a time) with the row pairs of the new layout."""
    import triton
    import triton.language as tl

    from amq_kernels import jit

    @triton.jit
    def _unit(x_ptr, p0_ptr, p1_ptr, k0, hr, offs_n, mask_n, N, f, OFFS: tl.constexpr):
        """Operands of a row pair block for high-plane rows `hr` (k0 // 32 + hr): L_A, L_B, H, A's and B's pairs."""
        la = tl.load(p0_ptr + (k0 // 16 + 2 * hr)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        lb = tl.load(p0_ptr + (k0 // 16 + 2 * hr + 1)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        h = tl.load(p1_ptr + (k0 // 32 + hr)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        a0, a1, a2, a3, a4, a5, a6, a7 = jit._sub_xpairs(x_ptr, (k0 + hr * 32) // 2, f, 8, OFFS, True)  # row A's inputs
        b0, b1, b2, b3, b4, b5, b6, b7 = jit._sub_xpairs(x_ptr, (k0 + hr * 32 + 16) // 2, f, 8, OFFS, True)  # row B's
        return la, lb, h, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7

    @triton.jit
    def vw3_kernel(x_ptr, p0_ptr, p1_ptr, s_ptr, z_ptr, y_ptr, N, K, SPLIT_K,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PTX_SRC: tl.constexpr, PTX_ARGS: tl.constexpr,
                   OFFS: tl.constexpr):  # fmt: skip
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        k_start, k_end = jit._k_range(K, BLOCK_K, SPLIT_K, tl.program_id(1))
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_z = tl.zeros((BLOCK_N,), dtype=tl.float32)
        RP: tl.constexpr = BLOCK_K // 32 // 2  # row pairs (high-plane rows) a block input: 2 units a block
        for k0 in range(k_start, k_end, BLOCK_K):
            xv = tl.load(x_ptr + k0 + tl.arange(0, BLOCK_K)).to(tl.float32)
            xsum = tl.sum(xv)
            f = tl.minimum(15.0, 14.0 - tl.floor(tl.log2(tl.max(tl.abs(xv))))).to(tl.int32)
            g = k0 // 128
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            hr = tl.arange(0, RP)
            la, lb, h, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7 = _unit(
                x_ptr, p0_ptr, p1_ptr, k0, hr, offs_n, mask_n, N, f, OFFS
            )
            lc, ld, h2, c0, c1, c2, c3, c4, c5, c6, c7, e0, e1, e2, e3, e4, e5, e6, e7 = _unit(
                x_ptr, p0_ptr, p1_ptr, k0, RP + hr, offs_n, mask_n, N, f, OFFS
            )
            args = [la, lb, h, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7,
                    lc, ld, h2, c0, c1, c2, c3, c4, c5, c6, c7, e0, e1, e2, e3, e4, e5, e6, e7]  # fmt: skip
            d = tl.inline_asm_elementwise(PTX_SRC, PTX_ARGS, args, dtype=tl.float32, is_pure=True, pack=1)
            acc += tl.sum(d, axis=0) * (tl.exp2((24 - f).to(tl.float32)) * s)
            acc_z += s * z * xsum
        tl.atomic_add(y_ptr + offs_n, (acc - acc_z).to(y_ptr.dtype.element_ty), mask=mask_n, sem="relaxed")

    return vw3_kernel


def time_on_gpu(shapes=((4096, 4096), (11008, 4096), (4096, 11008))) -> None:
    """The prototype kernel against today's 3- and 4-bit M = 1 defaults, fp16, each checked against float64 first
    (never run yet: next_gpu_calls.md q)."""
    import triton
    from bench_kernels import random_packed, time_cycle

    from amq_kernels.matmul import FUSE, _sm_count, matmul
    from amq_kernels.packing import dequantize, unpack_codes

    fn = _kernel()
    src, cons = pair_dot_sub_vw3_ptx(2)
    print("| N x K | fp16 us | today 4-bit us | today 3-bit us | VW3 3-bit us | VW3 vs today 3-bit | VW3 3-bit vs 4-bit | VW3 rel. error |")
    print("|---|---|---|---|---|---|---|---|")
    for n, k in shapes:
        p3 = [random_packed(n, k, 3) for _ in range(8)]
        p4 = [random_packed(n, k, 4) for _ in range(8)]
        vw = [[t.cuda() for t in pack_vw3(unpack_codes(p).cpu())] for p in p3]
        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(8)]
        block_n = 512 if -(-n // 512) * (k // 128) >= 4 * _sm_count(x.device) else 256
        split = max(1, min(k // 128, -(-8 * _sm_count(x.device) // -(-n // block_n))))
        split = -(-(k // 128) // -(-(k // 128) // split))

        def run(i):
            y = torch.zeros(1, n, device="cuda", dtype=torch.float16)
            fn[(triton.cdiv(n, block_n), split)](
                x, vw[i][0], vw[i][1], p3[i].scales, p3[i].zeros, y, n, k, split,
                BLOCK_N=block_n, BLOCK_K=128, PTX_SRC=src, PTX_ARGS=cons, OFFS=vw3_offsets(), num_warps=2, **FUSE,
            )  # fmt: skip
            return y

        ref = x.double() @ dequantize(p3[0], torch.float64).t()
        err = ((run(0).double() - ref).norm() / ref.norm()).item()
        t16 = time_cycle([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
        t4 = time_cycle([lambda p=p: matmul(x, p) for p in p4])
        t3 = time_cycle([lambda p=p: matmul(x, p) for p in p3])
        tv = time_cycle([lambda i=i: run(i) for i in range(8)]) if err < 1e-2 else float("inf")
        print(f"| {n} x {k} | {t16:.1f} | {t4:.1f} | {t3:.1f} | {tv:.1f} | {t3 / tv:.2f}x | {t4 / tv:.2f}x | {err:.1e} |", flush=True)


def main() -> None:
    import sys

    if "--time" in sys.argv[1:]:
        return time_on_gpu()
    import sass_count as sc
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from amq_kernels.matmul import FUSE

    fn = _kernel()
    src, cons = pair_dot_sub_vw3_ptx(2)
    consts = {"BLOCK_N": 512, "BLOCK_K": 128, "PTX_SRC": src, "PTX_ARGS": cons, "OFFS": vw3_offsets()}
    sig = {a: "constexpr" if a in consts else "*fp16" if a in ("x_ptr", "y_ptr", "s_ptr", "z_ptr") else "*i32" if a.endswith("_ptr") else "i32"
           for a in fn.arg_names}  # fmt: skip
    k = triton.compile(ASTSource(fn, sig, consts, sc.aligned(fn, consts)), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 2, "num_stages": 3, **FUSE})  # fmt: skip
    vw = sc.count(k.asm["cubin"])
    today, _ = sc.compile_gemv(3)
    now = sc.count(today)
    wb = 512 * 128 * 3 / 8 + 512 * 4
    rows = []
    for name, c, regs in (
        ("today (SUBNORMAL, WORDS 4)", now, sc.registers(today)),
        ("VW3 layout (2 row pairs a block)", vw, sc.registers(k.asm["cubin"])),
    ):
        n = sum(c.values())
        per_byte = n * 2 / wb
        rows.append(f"| {name} | {regs} | {n} | {per_byte:.3f} | {per_byte / (sc.SMS * sc.SCHEDULERS * sc.CLOCK_HZ) * sc.HBM_BPS:.2f} |")
    print(
        "| 3-bit M = 1 loop, 512 x 2 warps, sm_90 | registers | loop instructions (per warp) | warp instructions per byte | issue / HBM |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| opcode | today | VW3 |\n|---|---|---|")
    for o in sorted(set(now) | set(vw), key=lambda o: -(now[o] + vw[o]))[:12]:
        print(f"| {o} | {now[o]} | {vw[o]} |")


if __name__ == "__main__":
    main()
