"""AWQ (Lin et al., 2024): activation-aware per-channel scaling, then weight clipping.

Salient weights are the ones that meet large activations. AWQ scales input channel j of a
layer's weight by s_j = mean|x_j|^alpha (normalized), and divides the op that produces x
(a norm or the previous linear) by s, so the float model is unchanged but the salient
channels lose less to rounding. alpha is grid-searched per layer group to minimize the
groups' output error after quantization. Then each quantization group's range is shrunk
(clipping) where that lowers the output error on calibration inputs.

Both searches quantize with min-max round-to-nearest, as the final quantizer does. Here each
layer of a group may have its own bit-width (mixed plans), and the error is summed over them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from amq.quant.groupwise import quantize_rtn


def _fake_quant(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    return quantize_rtn(w, bits, group_size).dequantize(torch.float32)


@torch.no_grad()
def search_scale(
    x: torch.Tensor, layers: Sequence[tuple[torch.Tensor, int]], group_size: int, grid: int = 20, max_tokens: int = 4096
) -> torch.Tensor:
    """Per-input-channel scale s for the layers (weight, bits) that all read input `x` (n, in).

    Returns ones when no alpha in the grid beats alpha = 0 (no scaling)."""
    x = x.reshape(-1, x.shape[-1]).float()
    if x.shape[0] > max_tokens:
        x = x[torch.linspace(0, x.shape[0] - 1, max_tokens).long()]
    x_mean = x.abs().mean(0)
    refs = [x @ w.float().T for w, _ in layers]
    best_err, best_s = float("inf"), torch.ones_like(x_mean)
    for k in range(grid):
        alpha = k / grid
        s = x_mean.pow(alpha).clamp_min(1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = 0.0
        for (w, bits), ref in zip(layers, refs, strict=True):
            wq = _fake_quant(w.float() * s, bits, group_size) / s
            err += float(((x @ wq.T - ref) ** 2).mean())
        if err < best_err:
            best_err, best_s = err, s
    return best_s


@torch.no_grad()
def clip_weight(
    w: torch.Tensor,
    x: torch.Tensor,
    bits: int,
    group_size: int,
    grid: int = 20,
    max_shrink: float = 0.5,
    n_tokens: int = 512,
    rows_per_chunk: int = 256,
) -> torch.Tensor:
    """Clamp each quantization group of `w` (out, in) to the shrunk range that minimizes its
    output error on (a sample of) inputs `x`; returns the clipped weight."""
    out_f, in_f = w.shape
    ng = in_f // group_size
    x = x.reshape(-1, in_f).float()
    x = x[torch.linspace(0, x.shape[0] - 1, min(n_tokens, x.shape[0])).long()].view(-1, ng, group_size)
    clipped = torch.empty_like(w, dtype=torch.float32)
    for r0 in range(0, out_f, rows_per_chunk):
        wg = w[r0 : r0 + rows_per_chunk].float().view(-1, ng, group_size)
        ref = torch.einsum("ngk,ogk->nog", x, wg)
        org_max = wg.abs().amax(-1, keepdim=True)
        best_err = torch.full(org_max.shape[:2], float("inf"), device=w.device)
        best_max = org_max.clone()
        for k in range(int(max_shrink * grid)):
            max_val = org_max * (1 - k / grid)
            cw = torch.clamp(wg, -max_val, max_val)
            q = _fake_quant(cw.view(-1, in_f), bits, group_size).view_as(wg)
            err = ((torch.einsum("ngk,ogk->nog", x, q) - ref) ** 2).mean(0)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better.unsqueeze(-1), max_val, best_max)
        clipped[r0 : r0 + rows_per_chunk] = torch.clamp(wg, -best_max, best_max).view(-1, in_f)
    return clipped.to(w.dtype)
