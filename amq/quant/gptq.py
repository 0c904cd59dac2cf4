"""GPTQ (Frantar et al., 2023): column-by-column quantization with second-order error feedback.

For a layer y = x W^T with calibration inputs X, GPTQ minimizes ||X W^T - X Q^T||^2 one input
column at a time: each column is rounded, and its rounding error, scaled by the inverse
Hessian H^-1 = (2 X^T X + damp I)^-1, is pushed onto the columns not yet quantized. The upper
Cholesky factor of H^-1 gives the update rows; columns go in blocks so the rank-1 updates
stay in a small slab and the rest of the matrix gets one GEMM per block.

Group-wise scales and zeros (min-max, fp16 as stored) are taken from the error-updated weights
when each group's first column is reached. With `act_order`, columns are visited in order of
decreasing Hessian diagonal; group parameters are then computed up front from the original
weights ("static groups"), so groups stay contiguous input ranges as the packed format needs.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from amq.quant.groupwise import GroupQuant, _minmax_params


class HessianAccumulator:
    """Running H = 2/n sum x x^T over the rows of a layer's calibration inputs (fp32 sums).

    On a GPU, 16-bit activations go to the tensor cores as they are, summed in fp32
    (`addmm(..., out_dtype=float32)`): their products are exact in fp32 either way, and a 13B
    model's Hessians (128 x 2048 tokens, 13824 wide for down_proj) cost 2 minutes per plan on the
    fp32 cores. Elsewhere, or where that op is missing, the fp32 product."""

    def __init__(self, in_features: int, device: torch.device) -> None:
        self.h = torch.zeros(in_features, in_features, device=device, dtype=torch.float32)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        m = x.shape[0]
        self.h.mul_(self.n / (self.n + m))
        self.n += m
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _half_products(x.device, x.dtype):
            self.h = torch.addmm(self.h, x.T, x, alpha=2.0 / self.n, out_dtype=torch.float32)
            return
        x = x.float() * (2.0 / self.n) ** 0.5
        self.h.addmm_(x.T, x)


@functools.cache
def _half_products(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch and GPU have addmm with 16-bit inputs and an fp32 result."""
    a = torch.ones(2, 2, device=device, dtype=dtype)
    try:
        torch.addmm(torch.zeros(2, 2, device=device), a, a, out_dtype=torch.float32)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True


def gptq_quantize(
    w: torch.Tensor,
    h: torch.Tensor,
    bits: int,
    group_size: int,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    int_zero: bool = False,
) -> GroupQuant:
    """Quantize weight `w` (out, in) given the Hessian `h` (in, in) of its inputs."""
    return gptq_quantize_shared([w], h, [bits], group_size, damp, act_order, block_size, int_zero)[0]


def gptq_quantize_shared(
    ws: list[torch.Tensor],
    h: torch.Tensor,
    bits: list[int],
    group_size: int,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    int_zero: bool = False,
    use_kernel: bool | None = None,
) -> list[GroupQuant]:
    """GPTQ of several layers that read the same input (q/k/v, gate/up), each at its own bits,
    in one pass: GPTQ treats every output row on its own given H, so the layers' rows are
    stacked and walked through the columns once (a third of the column steps for q/k/v).

    On a GPU the column loop runs as one Triton launch per block of columns (`use_kernel`: None
    picks it where it applies, see `_use_kernel`); the numbers are the same bit for bit."""
    w = torch.cat([x.detach() for x in ws]) if len(ws) > 1 else ws[0].detach()
    if w.shape[1] % group_size:
        raise ValueError(f"group size {group_size} does not divide input width {w.shape[1]}")
    row_bits = torch.cat([torch.full((x.shape[0],), b, device=w.device) for x, b in zip(ws, bits, strict=True)])
    W, hinv, scale, zero, perm = _prepared(w, h, row_bits, group_size, damp, act_order, int_zero)
    codes = torch.empty(w.shape, device=W.device, dtype=torch.uint8)
    qmax = (2**row_bits - 1).float()
    if _use_kernel(W, act_order, block_size, group_size) if use_kernel is None else use_kernel:
        _column_blocks_kernel(W, hinv, codes, scale, zero, qmax, block_size, group_size, int_zero)
    else:
        _column_blocks_torch(W, hinv, codes, scale, zero, row_bits, perm, block_size, group_size, act_order, int_zero)
    return _split(ws, bits, codes, scale, zero, group_size)


def _prepared(
    w: torch.Tensor, h: torch.Tensor, row_bits: torch.Tensor, group_size: int, damp: float, act_order: bool, int_zero: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weights (fp32, dead inputs zeroed, permuted by act_order), the upper Cholesky factor of the
    damped inverse Hessian, scale and zero per group (static ones filled for act_order) and the
    column order."""
    out_f, in_f = w.shape
    W = w.float().clone()
    H = h.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    n_groups = in_f // group_size
    scale = torch.empty(out_f, n_groups, device=W.device)
    zero = torch.empty(out_f, n_groups, device=W.device)
    perm = torch.arange(in_f, device=W.device)
    if act_order:
        s, z = _minmax_params(W.view(out_f, n_groups, group_size), row_bits.view(-1, 1, 1), int_zero)  # static groups
        scale, zero = s.squeeze(-1), z.squeeze(-1)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))
    L = torch.linalg.cholesky(H)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    return W, hinv, scale, zero, perm


def _column_blocks_torch(
    W: torch.Tensor,
    hinv: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    row_bits: torch.Tensor,
    perm: torch.Tensor,
    block_size: int,
    group_size: int,
    act_order: bool,
    int_zero: bool,
) -> None:
    """GPTQ's column loop in PyTorch (the reference the Triton kernel matches): quantize a column,
    spread its error over the block's later columns, then the block's over the rest."""
    in_f = W.shape[1]
    qmax = (2**row_bits - 1).float()
    order = perm.tolist()  # column indices on the host: reading them from a GPU tensor would wait for the GPU at every column
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        W1 = W[:, i1:i2].clone()
        err1 = torch.zeros_like(W1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = order[i1 + i]
            g = col // group_size
            if not act_order and col % group_size == 0:
                s, z = _minmax_params(W1[:, i : i + group_size].unsqueeze(1), row_bits.view(-1, 1, 1), int_zero)
                scale[:, g], zero[:, g] = s.view(-1), z.view(-1)
            w_col = W1[:, i]
            q = torch.minimum(torch.round(w_col / scale[:, g] + zero[:, g]).clamp_min(0), qmax)
            codes[:, col] = q.to(torch.uint8)
            err = (w_col - (q - zero[:, g]) * scale[:, g]) / hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        W[:, i2:] -= err1 @ hinv[i1:i2, i2:]


def _use_kernel(w: torch.Tensor, act_order: bool, block_size: int, group_size: int) -> bool:
    """The Triton column loop where it applies: a CUDA tensor, Triton installed, groups that
    do not cross blocks, columns in their own order (act_order permutes them: the loop then)."""
    if not w.is_cuda or act_order or block_size & (block_size - 1) or block_size % group_size:
        return False
    return importlib.util.find_spec("triton") is not None


def _column_blocks_kernel(W, hinv, codes, scale, zero, qmax, block_size: int, group_size: int, int_zero: bool) -> None:
    """The same column blocks as the loop, each visited by one launch (amq_kernels.gptq)."""
    from amq_kernels.gptq import gptq_block

    in_f = W.shape[1]
    rows = hinv.contiguous()  # the kernel reads rows; the GEMM below keeps the loop's operand (same layout, same sums)
    qmax = qmax.contiguous()
    err1 = torch.empty(W.shape[0], block_size, device=W.device, dtype=torch.float32)
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        gptq_block(W, rows, codes, scale, zero, err1, qmax, i1, i2, group_size, int_zero)
        if i2 < in_f:
            W[:, i2:] -= err1[:, : i2 - i1] @ hinv[i1:i2, i2:]


def _split(ws: list[torch.Tensor], bits: list[int], codes, scale, zero, group_size: int) -> list[GroupQuant]:
    """The stacked rows back into one GroupQuant per layer."""
    out, row = [], 0
    for x, b in zip(ws, bits, strict=True):
        rows = slice(row, row + x.shape[0])
        out.append(GroupQuant(codes[rows].contiguous(), scale[rows].half(), zero[rows].half(), b, group_size))
        row += x.shape[0]
    return out
