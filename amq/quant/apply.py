"""Apply a per-layer plan to a model with a real quantizer: GPTQ, AWQ, HQQ or RTN.

GPTQ and AWQ need calibration activations. They go block by block ("sequential by block"):
the inputs of block k are the outputs of blocks 0..k-1 *already quantized*, so each block
corrects for the error upstream of it. Block inputs are captured once by stopping the model's
forward at the first block, then carried from block to block; no architecture-specific
forward code is needed. HQQ and RTN are data-free and quantize each layer on its own.

The result: every planned layer becomes a `QuantLinear` holding its packed weight.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn
from tqdm import tqdm

from amq.config import AMQConfigError, QuantizerConfig
from amq.models import decoder_blocks, searchable_linears, shared_input_groups
from amq.quant.awq import clip_weight, search_scale
from amq.quant.gptq import HessianAccumulator, gptq_quantize_shared
from amq.quant.groupwise import GroupQuant, quantize, quantize_rtn
from amq_kernels.linear import QuantLinear
from amq_kernels.packing import pack

log = logging.getLogger(__name__)


class _StopForward(Exception):
    pass


@torch.no_grad()
def capture_block_inputs(model: nn.Module, ids: torch.Tensor, batch_size: int) -> list[tuple[tuple, dict]]:
    """(args, kwargs) the first decoder block receives, per calibration batch."""
    first = decoder_blocks(model)[0]
    device = next(model.parameters()).device
    seen: list[tuple[tuple, dict]] = []

    def grab(_mod, args, kwargs):
        seen.append((args, kwargs))
        raise _StopForward

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for batch in ids.split(batch_size):
            with contextlib.suppress(_StopForward):
                model(input_ids=batch.to(device), use_cache=False)
    finally:
        handle.remove()
    return seen


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, h: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


@torch.no_grad()
def _run_block(block: nn.Module, inputs: list[tuple[tuple, dict]]) -> list[tuple[tuple, dict]]:
    """The block's outputs, as the next block's (args, kwargs)."""
    out = []
    for args, kwargs in inputs:
        h = block(*args, **kwargs)
        out.append(_with_hidden(args, kwargs, h[0] if isinstance(h, tuple) else h))
    return out


@torch.no_grad()
def _collect(block: nn.Module, linears: dict[str, nn.Linear], inputs, on_input) -> None:
    """Run the block once, handing each linear's input to `on_input(name, x)`."""
    handles = [lin.register_forward_hook(lambda m, a, o, n=name: on_input(n, a[0])) for name, lin in linears.items()]
    try:
        for args, kwargs in inputs:
            block(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()


class BlockHessians:
    """Hessians of each searchable layer's inputs, from the full-precision model's own
    activations on the calibration set, one decoder block at a time: what a GPTQ proxy bank
    needs. Layers must be asked for in block order; a block's Hessians are dropped when the
    next block's are computed, so memory stays at one block's worth."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, batch_size: int) -> None:
        self.blocks = decoder_blocks(model)
        self.prefix = next(n for n, m in model.named_modules() if m is self.blocks)
        self.linears = searchable_linears(model)
        self.inputs = capture_block_inputs(model, ids, batch_size)
        self.block = -1
        self.h: dict[str, torch.Tensor] = {}

    def __call__(self, name: str) -> torch.Tensor:
        k = int(name.removeprefix(self.prefix + ".").split(".", 1)[0])
        if k < self.block:
            raise ValueError(f"{name}: layers must be asked for in block order (at block {self.block})")
        while self.block < k:
            if self.block >= 0:
                self.inputs = _run_block(self.blocks[self.block], self.inputs)
            self.block += 1
            bp = f"{self.prefix}.{self.block}."
            mine = {n: lin for n, lin in self.linears.items() if n.startswith(bp)}
            self.h = _hessians(self.blocks[self.block], mine, self.inputs)
        return self.h[name]


def _hessians(block: nn.Module, linears: dict[str, nn.Linear], inputs) -> dict[str, torch.Tensor]:
    """GPTQ's Hessian of each of the block's `linears`' inputs, from one run of the block."""
    acc = {n: HessianAccumulator(lin.in_features, lin.weight.device) for n, lin in linears.items()}
    _collect(block, linears, inputs, lambda n, x: acc[n].add(x))
    return {n: a.h for n, a in acc.items()}


def _set(lin: nn.Linear, gq: GroupQuant) -> None:
    lin.weight.data = gq.dequantize(lin.weight.dtype).to(lin.weight.device)


def _awq_groups(block: Any, prefix: str, planned: set[str]) -> list[tuple[nn.Module, list[str]]]:
    """(op producing the input, consumer layer names) for a Llama-family block."""
    need = ("input_layernorm", "post_attention_layernorm", "self_attn", "mlp")
    if not all(hasattr(block, n) for n in need):
        raise AMQConfigError(f"AWQ needs Llama-family blocks (input_layernorm, self_attn, mlp); {type(block).__name__} is not one")
    at, mlp = block.self_attn, block.mlp
    groups = [
        (block.input_layernorm, [f"{prefix}.self_attn.{p}_proj" for p in "qkv"]),
        (block.post_attention_layernorm, [f"{prefix}.mlp.gate_proj", f"{prefix}.mlp.up_proj"]),
        (mlp.up_proj, [f"{prefix}.mlp.down_proj"]),
    ]
    if at.v_proj.out_features == at.o_proj.in_features:  # not with grouped-query attention
        groups.insert(1, (at.v_proj, [f"{prefix}.self_attn.o_proj"]))
    return [(op, names) for op, names in groups if all(n in planned for n in names)]


@torch.no_grad()
def _fold_scale(op: nn.Module, layers: list[nn.Linear], s: torch.Tensor) -> None:
    """x -> x / s at the producer, W -> W * s at the consumers: the float model is unchanged."""
    if isinstance(op, nn.Linear):
        op.weight.div_(s.to(op.weight.dtype).unsqueeze(1))
        if op.bias is not None:
            op.bias.div_(s.to(op.bias.dtype))
    else:  # a norm
        weight = cast(torch.Tensor, op.weight)
        weight.div_(s.to(weight.dtype))
    for lin in layers:
        lin.weight.mul_(s.to(lin.weight.dtype).unsqueeze(0))


def quantize_model(
    model: nn.Module,
    plan: Mapping[str, int],
    cfg: QuantizerConfig,
    calib_ids: torch.Tensor | None = None,
    show_progress: bool = True,
    pack_layers: bool = True,
) -> dict[str, GroupQuant]:
    """Quantize every layer in `plan` at its bits with `cfg.method`; swap in QuantLinear layers.

    With `pack_layers=False` the layers stay nn.Linear holding the dequantized weights: the
    same numbers as QuantLinear's CPU path, without unpacking bit planes at every call
    (what evaluation on a CPU wants)."""
    linears = searchable_linears(model)
    missing = sorted(set(plan) - set(linears))
    if missing:
        raise AMQConfigError(f"the plan names layers the model does not have: {', '.join(missing[:3])}")
    if cfg.method in ("gptq", "awq") and calib_ids is None:
        raise AMQConfigError(f"{cfg.method} needs calibration data")
    quants: dict[str, GroupQuant] = {}
    if cfg.method in ("hqq", "rtn"):
        for name in tqdm(list(plan), desc=cfg.method, unit="layer", disable=not show_progress):
            quants[name] = quantize(linears[name].weight.data, int(plan[name]), cfg.group_size, cfg.method, int_zero=cfg.integer_zeros)
            _set(linears[name], quants[name])
    else:
        assert calib_ids is not None  # (checked above for gptq and awq)
        blocks = decoder_blocks(model)
        prefix = next(n for n, m in model.named_modules() if m is blocks)
        inputs = capture_block_inputs(model, calib_ids, cfg.batch_size)
        siblings = shared_input_groups(model)
        for k, block in enumerate(tqdm(blocks, desc=cfg.method, unit="block", disable=not show_progress)):
            bp = f"{prefix}.{k}"
            mine = {n: lin for n, lin in linears.items() if n.startswith(bp + ".") and n in plan}
            if cfg.method == "gptq":
                quants.update(_gptq_block(block, mine, plan, inputs, cfg, siblings))
            else:
                quants.update(_awq_block(block, bp, mine, plan, inputs, cfg))
            inputs = _run_block(block, inputs)
    if pack_layers:
        replace_with_quant_linears(model, quants)
    return quants


def _gptq_block(block, mine: dict[str, nn.Linear], plan, inputs, cfg: QuantizerConfig, siblings: list[list[str]]) -> dict[str, GroupQuant]:
    """GPTQ of the block's planned layers; siblings that read one input (q/k/v, gate/up:
    `models.shared_input_groups`) share its Hessian and go through GPTQ together."""
    grouped = [g for g in siblings if all(n in mine for n in g)]
    in_group = {n for g in grouped for n in g}
    groups = grouped + [[n] for n in mine if n not in in_group]
    hess = _hessians(block, {g[0]: mine[g[0]] for g in groups}, inputs)
    out = {}
    for group in groups:
        ws = [mine[n].weight.data for n in group]
        quants = gptq_quantize_shared(
            ws,
            hess.pop(group[0]),
            [int(plan[n]) for n in group],
            cfg.group_size,
            cfg.damp,
            cfg.act_order,
            cfg.block_size,
            cfg.integer_zeros,
        )
        for n, gq in zip(group, quants, strict=True):
            out[n] = gq
            _set(mine[n], gq)
    return out


def _awq_block(block, bp: str, mine: dict[str, nn.Linear], plan, inputs, cfg: QuantizerConfig) -> dict[str, GroupQuant]:
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in mine}
    _collect(block, mine, inputs, lambda n, x: feats[n].append(x.reshape(-1, x.shape[-1]).float()))
    x_of = {n: torch.cat(v) for n, v in feats.items()}
    for op, names in _awq_groups(block, bp, set(mine)):
        x = x_of[names[0]]
        s = search_scale(x, [(mine[n].weight.data, int(plan[n])) for n in names], cfg.group_size, cfg.awq_grid)
        _fold_scale(op, [mine[n] for n in names], s)
        for n in names:  # the consumers now read x / s
            x_of[n] = x_of[n] / s
    out = {}
    for n, lin in mine.items():
        w = lin.weight.data
        if cfg.awq_clip:
            w = clip_weight(w, x_of[n], int(plan[n]), cfg.group_size, cfg.awq_grid)
        out[n] = quantize_rtn(w, int(plan[n]), cfg.group_size, cfg.integer_zeros)
        _set(lin, out[n])
    return out


def replace_with_quant_linears(model: nn.Module, quants: Mapping[str, GroupQuant]) -> nn.Module:
    """Swap each named nn.Linear for a QuantLinear holding its packed weight (bias kept)."""
    for name, gq in quants.items():
        lin = cast(nn.Linear, model.get_submodule(name))
        bias = lin.bias.data if lin.bias is not None else None
        ql = QuantLinear(pack(gq.codes, gq.scale, gq.zero, gq.bits, gq.group_size), bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, ql.to(lin.weight.device))
    return model
