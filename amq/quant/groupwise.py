"""Group-wise asymmetric weight quantization: round-to-nearest and HQQ's data-free zero-point solver.

A weight W of shape (out, in) is split into groups of `group_size` consecutive inputs per
output row. Each group g gets a scale s_g and a zero z_g; codes q = clamp(round(W / s + z), 0,
2^b - 1) and the dequantized weight is (q - z) * s. Scales and zeros are rounded to fp16,
because that is what the packed format stores.

HQQ (Badri & Shaji, 2023) keeps the min-max scale and refines the zero by half-quadratic
splitting with a sparsity-promoting l_p (p < 1) error: alternate a generalized soft-threshold of
the residual W_e = shrink(W - W_r) and the closed-form zero z = mean(q - (W - W_e) / s), with the
penalty weight beta growing by kappa each step. No data is needed, and a 4096x11008 layer takes
milliseconds on a GPU, which is why it is the search proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass
class GroupQuant:
    """Codes (out, in) uint8 and per-group scale/zero (out, in // group_size) in fp16."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int

    def dequantize(self, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        out, n_in = self.codes.shape
        g = self.group_size
        q = self.codes.view(out, n_in // g, g).to(torch.float32)
        w = (q - self.zero.float().unsqueeze(-1)) * self.scale.float().unsqueeze(-1)
        return w.view(out, n_in).to(dtype)


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    out, n_in = w.shape
    if n_in % group_size:
        raise ValueError(f"group size {group_size} does not divide input width {n_in}")
    return w.float().view(out, n_in // group_size, group_size)


def _minmax_params(wg: torch.Tensor, bits: int | torch.Tensor, int_zero: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero; `int_zero` rounds the zero to an integer code (GPTQ's original
    choice, and what serving formats with packed integer zero-points can store). `bits` may be
    a tensor that broadcasts against `wg` (a bit-width per row)."""
    qmax = 2**bits - 1
    if isinstance(qmax, torch.Tensor):
        qmax = qmax.to(wg.dtype)
    lo = wg.amin(-1, keepdim=True)
    hi = wg.amax(-1, keepdim=True)
    scale = ((hi - lo) / qmax).clamp_min(1e-8).half().float()
    # a (near-)constant group: its fp16 scale would round to 0 and every code to NaN. Stretch its
    # range to include 0 and keep the scale at least fp16's smallest step (other groups unchanged)
    flat = scale == 0
    if bool(flat.any()):
        lo, hi = torch.where(flat, lo.clamp_max(0), lo), torch.where(flat, hi.clamp_min(0), hi)
        scale = torch.where(flat, ((hi - lo) / qmax).half().float().clamp_min(2**-24), scale)
    zero = -lo / scale
    zero = torch.minimum(torch.round(zero).clamp_min(0), torch.as_tensor(qmax, dtype=zero.dtype)) if int_zero else zero.half().float()
    return scale, zero


def _codes(wg: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(torch.round(wg / scale + zero), 0, 2**bits - 1)


def quantize_rtn(w: torch.Tensor, bits: int, group_size: int, int_zero: bool = False) -> GroupQuant:
    """Min-max round-to-nearest."""
    wg = _grouped(w, group_size)
    scale, zero = _minmax_params(wg, bits, int_zero)
    q = _codes(wg, scale, zero, bits)
    return GroupQuant(q.to(torch.uint8).view(w.shape), scale.squeeze(-1).half(), zero.squeeze(-1).half(), bits, group_size)


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Generalized soft-thresholding: the proximal step of the l_p (p < 1) penalty."""
    mag = x.abs()
    return torch.sign(x) * torch.relu(mag - (1.0 / beta) * mag.clamp_min(1e-12).pow(p - 1))


def quantize_hqq(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    iters: int = 20,
    lp_norm: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    int_zero: bool = False,
) -> GroupQuant:
    """HQQ: min-max scale, zero refined by half-quadratic splitting; keeps the best zero seen
    (rounded to an integer code at the end with `int_zero`)."""
    wg = _grouped(w, group_size)
    scale, zero = _minmax_params(wg, bits)
    best_zero = zero.clone()
    best_err = torch.full_like(zero, float("inf"))
    for _ in range(iters):
        q = _codes(wg, scale, zero, bits)
        w_r = (q - zero) * scale
        err = (wg - w_r).abs().mean(-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_zero = torch.where(better, zero, best_zero)
        w_e = _shrink_lp(wg - w_r, beta, lp_norm)
        zero = (q - (wg - w_e) / scale).mean(-1, keepdim=True).half().float()
        beta *= kappa
    if int_zero:
        best_zero = torch.round(best_zero).clamp(0, 2**bits - 1)
    q = _codes(wg, scale, best_zero, bits)
    return GroupQuant(q.to(torch.uint8).view(w.shape), scale.squeeze(-1).half(), best_zero.squeeze(-1).half(), bits, group_size)


def quantize(
    w: torch.Tensor, bits: int, group_size: int, method: str = "hqq", *, int_zero: bool = False, hqq: Mapping[str, float] | None = None
) -> GroupQuant:
    """Quantize with the named data-free method (hqq | rtn)."""
    if method == "rtn":
        return quantize_rtn(w, bits, group_size, int_zero)
    if method == "hqq":
        return quantize_hqq(w, bits, group_size, int_zero=int_zero, **(hqq or {}))  # type: ignore[arg-type]
    raise ValueError(f"unknown proxy quantizer {method!r}")
