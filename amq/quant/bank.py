"""The proxy bank: every searchable layer quantized at every bit-width once, swapped in by plan.

Evaluating a plan must cost one forward pass, so nothing is re-quantized when a plan changes.
Two layouts (`proxy.storage`):

- `dense`: each (layer, bits) is kept dequantized in the model's dtype. Swapping sets the
  layer's weight to that tensor: no copy, no arithmetic. Memory: 16 bits x weights x choices.
- `codes`: each (layer, bits) is kept as uint8 codes + fp16 scales/zeros (about 8.3 bits a
  weight) and dequantized into the layer's own weight buffer when swapped in; the
  full-precision weight is then kept on the CPU (pinned when the model is on a GPU).

Only layers whose bit-width changes are touched by `apply`. `bank_device=cpu` keeps the bank in
(pinned) host memory and copies a layer's codes in on swap (dequantized on the GPU), for models whose
bank exceeds the GPU; `auto` (the default) does so only when the bank would leave less than a quarter
of the GPU free (13B on an 80 GB GPU: 3.84 s a candidate instead of 3.64 s, benchmarks/search).
The memory plan for 7B/13B/70B is in the README.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from amq.config import ProxyConfig
from amq.quant.gptq import gptq_quantize
from amq.quant.groupwise import GroupQuant, quantize

log = logging.getLogger(__name__)

FULL = 16  # marker for "full precision" in a plan


class ProxyBank:
    """Holds every layer at every choice and swaps a plan into the model in place."""

    def __init__(
        self,
        linears: dict[str, nn.Linear],
        choices: Sequence[int],
        group_size: int,
        cfg: ProxyConfig,
        show_progress: bool = True,
        hessians: Callable[[str], torch.Tensor] | None = None,
    ) -> None:
        """`hessians(name)` (proxy gptq only): the Hessian of a layer's inputs, asked for in
        `linears` order (amq.quant.apply.BlockHessians)."""
        if cfg.name == "gptq" and hessians is None:
            raise ValueError("the gptq proxy needs the layers' input Hessians (calibration data)")
        self.names = list(linears)
        self.linears = linears
        self.choices = tuple(choices)
        self.cfg = cfg
        first = next(iter(linears.values())).weight
        self.device, self.dtype = first.device, first.dtype
        bank_dev = bank_device(cfg, self.device, bank_bytes(linears, len(self.choices), group_size, cfg.storage))
        pin = bank_dev.type == "cpu" and self.device.type == "cuda"

        self.original: dict[str, torch.Tensor] = {}
        self.dense: dict[tuple[str, int], torch.Tensor] = {}
        self.codes: dict[tuple[str, int], GroupQuant] = {}
        hqq_kwargs: dict[str, float] = {"iters": cfg.iters, "lp_norm": cfg.lp_norm, "beta": cfg.beta, "kappa": cfg.kappa}
        kwargs = hqq_kwargs if cfg.name == "hqq" else {}

        total = len(self.names) * len(self.choices)
        bar = tqdm(total=total, desc=f"proxy bank ({cfg.name})", unit="layer", disable=not show_progress)
        for name in self.names:
            w = linears[name].weight.data
            h = hessians(name) if hessians is not None and cfg.name == "gptq" else None
            for b in self.choices:
                gq = (
                    gptq_quantize(w, h, b, group_size, damp=cfg.damp) if h is not None else quantize(w, b, group_size, cfg.name, hqq=kwargs)
                )
                if cfg.storage == "dense":
                    t = gq.dequantize(self.dtype).to(bank_dev)
                    self.dense[(name, b)] = t.pin_memory() if pin else t
                else:
                    self.codes[(name, b)] = _move(gq, bank_dev, pin)
                bar.update()
            if cfg.storage == "codes":
                # the weight buffer becomes the swap target; keep the original off the GPU
                orig = w.to("cpu", copy=True)
                self.original[name] = orig.pin_memory() if pin else orig
                linears[name].weight.data = w.clone()
            else:
                self.original[name] = w
        bar.close()
        self.current: dict[str, int] = {n: FULL for n in self.names}

    def nbytes(self) -> int:
        """Bytes held by the bank (not counting the original weights)."""
        if self.dense:
            return sum(t.numel() * t.element_size() for t in self.dense.values())
        return sum(q.codes.numel() + 2 * (q.scale.numel() + q.zero.numel()) for q in self.codes.values())

    def _weight_for(self, name: str, bits: int) -> torch.Tensor:
        if bits == FULL:
            return self.original[name]
        if self.dense:
            return self.dense[(name, bits)]
        q = self.codes[(name, bits)]
        if q.codes.device != self.device:  # bank_device=cpu: copy the codes in (1 byte a weight), dequantize there
            q = _move(q, self.device, pin=False)
        return q.dequantize(self.dtype)

    def sq_error(self, name: str, bits: int) -> float:
        """||W - Q_bits(W)||^2 of one layer: how far the proxy moves its weights."""
        orig = self.original[name].to(self.device, non_blocking=True).float()
        return float((self._weight_for(name, bits).to(self.device).float() - orig).pow(2).sum())

    def apply(self, plan: Sequence[int]) -> None:
        """Swap in `plan` (bits per layer, in `self.names` order; 16 = full precision)."""
        if len(plan) != len(self.names):
            raise ValueError(f"plan has {len(plan)} entries, model has {len(self.names)} searchable layers")
        for name, bits in zip(self.names, plan, strict=True):
            bits = int(bits)
            if self.current[name] == bits:
                continue
            if bits != FULL and bits not in self.choices:
                raise ValueError(f"{name}: {bits} bits is not in the bank's choices {self.choices}")
            src = self._weight_for(name, bits)
            lin = self.linears[name]
            if self.cfg.storage == "dense" and src.device == self.device:
                lin.weight.data = src
            else:
                if lin.weight.data.data_ptr() == self.original.get(name, src).data_ptr():
                    lin.weight.data = torch.empty_like(lin.weight.data)
                lin.weight.data.copy_(src, non_blocking=True)
            self.current[name] = bits

    def restore(self) -> None:
        """Put every layer back to full precision."""
        self.apply([FULL] * len(self.names))

    def release(self) -> None:
        """Put every layer back to full precision and drop the quantized copies, for when no
        plan will be swapped in again (the final step needs the memory: 39 GB of codes at 13B)."""
        self.restore()
        self.dense.clear()
        self.codes.clear()


def bank_bytes(linears: dict[str, nn.Linear], n_choices: int, group_size: int, storage: str) -> int:
    """What the bank will hold (`ProxyBank.nbytes`): per choice, a weight in the model's dtype each for
    dense, a byte each plus an fp16 scale and zero per group for codes."""
    weights = sum(lin.weight.numel() for lin in linears.values())
    size = next(iter(linears.values())).weight.element_size()
    per_choice = size * weights if storage == "dense" else weights + 4 * (weights // group_size)
    return n_choices * per_choice


def bank_device(cfg: ProxyConfig, model_device: torch.device, nbytes: int) -> torch.device:
    """Where the bank lives: `proxy.bank_device`, with `auto` resolved against the GPU's free memory."""
    if cfg.bank_device == "cpu":
        return torch.device("cpu")
    if cfg.bank_device == "model" or model_device.type != "cuda":
        return model_device
    free, total = torch.cuda.mem_get_info(model_device)
    return bank_placement(nbytes, free, total, model_device)


def bank_placement(nbytes: int, free: int, total: int, model_device: torch.device) -> torch.device:
    """`auto`: on the GPU while it leaves a quarter of the GPU's memory free for activations and the
    reference log-probs, else in pinned host memory (logged)."""
    if nbytes <= free - total // 4:
        return model_device
    log.info(
        "proxy bank: %.1f GB would leave less than a quarter of the GPU free (%.1f of %.1f GB free): keeping it in host memory",
        nbytes / 1e9,
        free / 1e9,
        total / 1e9,
    )
    return torch.device("cpu")


def _move(gq: GroupQuant, device: torch.device, pin: bool) -> GroupQuant:
    def mv(t: torch.Tensor) -> torch.Tensor:
        # host -> GPU from pinned memory: asynchronous, ordered on the stream before the dequantization that
        # reads it; GPU -> host (building a host bank) stays synchronous, its result is read at once
        t = t.to(device, non_blocking=device.type == "cuda")
        return t.pin_memory() if pin else t

    return GroupQuant(mv(gq.codes), mv(gq.scale), mv(gq.zero), gq.bits, gq.group_size)
