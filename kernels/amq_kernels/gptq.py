"""GPTQ's column loop as one Triton kernel per block of columns (quantizer math, not serving;
imported only where GPTQ runs on a GPU, by amq.quant.gptq).

GPTQ walks the input columns one at a time: round the column, push its error onto the columns
not yet visited through a row of the inverse Hessian's upper Cholesky factor. In PyTorch that
is about ten tiny kernels per column: a 13B model has about 1.2 million columns to visit over its
280 layers, so on a GPU the quantizer waits on kernel launches, not on arithmetic (one plan's
sequential GPTQ of 13B took 355 s on an H200, most of it launches).

Every output row is independent given the inverse Hessian, so one program owns ROWS rows of
one block of BLOCK columns in registers and visits the columns itself: min-max group parameters
(at each group's first column, from the error-updated weights), rounding, the error, and the
rank-1 update of the columns to its right. One launch per block instead of about 1,300; the
update of the columns after the block stays one GEMM in the caller.

Bit-exact with the PyTorch loop (`amq.quant.gptq`): fp32 throughout, IEEE division (div_rn),
no fused multiply-add (the launch turns contraction off), round half to even, the fp16 rounding
of scales and zeros where the packed format stores them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ROWS = 16  # output rows per program: W, codes and errors of 16 x 128 columns stay in registers


@triton.jit
def rint(x):
    """Round half to even, exactly (torch.round's rule)."""
    r = tl.floor(x)
    f = x - r
    odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
    return tl.where((f > 0.5) | ((f == 0.5) & odd), r + 1.0, r)


@triton.jit
def gptq_block_kernel(
    W, HINV, CODES, SCALE, ZERO, ERR, QMAX,
    n_rows, n_in, n_groups, i1, nb,
    BLOCK: tl.constexpr, GROUP: tl.constexpr, ROWS: tl.constexpr, INT_ZERO: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    rmask = rows < n_rows
    tile = rmask[:, None] & (cols[None, :] < nb)
    w = tl.load(W + rows[:, None].to(tl.int64) * n_in + i1 + cols[None, :], mask=tile, other=0.0)
    qmax = tl.load(QMAX + rows, mask=rmask, other=1.0)
    q_all = tl.zeros((ROWS, BLOCK), tl.float32)
    e_all = tl.zeros((ROWS, BLOCK), tl.float32)
    s = tl.zeros((ROWS,), tl.float32)
    z = tl.zeros((ROWS,), tl.float32)
    for i in range(nb):
        if i % GROUP == 0:  # a group starts: min-max parameters from the updated weights
            in_group = (cols[None, :] >= i) & (cols[None, :] < i + GROUP)
            lo = tl.min(tl.where(in_group, w, float("inf")), 1)
            hi = tl.max(tl.where(in_group, w, float("-inf")), 1)
            s = tl.maximum(tl.math.div_rn(hi - lo, qmax), 1e-8).to(tl.float16).to(tl.float32)
            flat = s == 0.0  # a (near-)constant group: its range stretched to 0, as _minmax_params does
            lo = tl.where(flat, tl.minimum(lo, 0.0), lo)
            hi = tl.where(flat, tl.maximum(hi, 0.0), hi)
            s = tl.where(flat, tl.maximum(tl.math.div_rn(hi - lo, qmax).to(tl.float16).to(tl.float32), 5.960464477539063e-08), s)
            z = tl.math.div_rn(-lo, s)
            if INT_ZERO:
                z = tl.minimum(tl.maximum(rint(z), 0.0), qmax)
            else:
                z = z.to(tl.float16).to(tl.float32)
            g = (i1 + i) // GROUP
            tl.store(SCALE + rows.to(tl.int64) * n_groups + g, s, mask=rmask)
            tl.store(ZERO + rows.to(tl.int64) * n_groups + g, z, mask=rmask)
        here = cols[None, :] == i
        wc = tl.sum(tl.where(here, w, 0.0), 1)  # exact: one term, the rest zeros
        q = tl.minimum(tl.maximum(rint(tl.math.div_rn(wc, s) + z), 0.0), qmax)
        d = tl.load(HINV + (i1 + i).to(tl.int64) * n_in + i1 + i)
        err = tl.math.div_rn(wc - (q - z) * s, d)
        h = tl.load(HINV + (i1 + i).to(tl.int64) * n_in + i1 + cols, mask=(cols >= i) & (cols < nb), other=0.0)
        w = w - err[:, None] * h[None, :]
        q_all = tl.where(here, q[:, None], q_all)
        e_all = tl.where(here, err[:, None], e_all)
    tl.store(CODES + rows[:, None].to(tl.int64) * n_in + i1 + cols[None, :], q_all.to(tl.uint8), mask=tile)
    tl.store(ERR + rows[:, None].to(tl.int64) * BLOCK + cols[None, :], e_all, mask=tile)


def gptq_block(
    w: torch.Tensor,
    hinv: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    err: torch.Tensor,
    qmax: torch.Tensor,
    i1: int,
    i2: int,
    group_size: int,
    int_zero: bool = False,
) -> None:
    """Visit columns i1..i2 of `w` (out, in; fp32, contiguous) in place of the PyTorch loop:
    writes their codes (uint8, out x in), the parameters of the groups that start there (fp32,
    out x in/group) and the scaled errors into `err` (out x block, block a power of two >= i2 - i1).
    Groups must not cross the block (block a multiple of the group size)."""
    block = err.shape[1]
    for t in (w, hinv, scale, zero, err, qmax):
        assert t.dtype == torch.float32 and t.is_contiguous()
    assert codes.dtype == torch.uint8 and codes.is_contiguous() and block % group_size == 0 and i2 - i1 <= block
    n_rows, n_in = w.shape
    grid = ((n_rows + ROWS - 1) // ROWS,)
    gptq_block_kernel[grid](
        w, hinv, codes, scale, zero, err, qmax,
        n_rows, n_in, scale.shape[1], i1, i2 - i1,
        BLOCK=block, GROUP=group_size, ROWS=ROWS, INT_ZERO=int_zero, enable_fp_fusion=False, num_warps=4,
    )  # fmt: skip
