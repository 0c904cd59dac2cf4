"""GPTQ (GPTQModel's layout): qweight / qzeros / scales / g_idx per layer, and a
`quantize_config.json` whose `dynamic` map gives each layer that differs from the base bit-width
its own bits (GPTQModel's per-module override syntax, `+:<regex>`). Integer zero-points only, as
in compressed_tensors.py."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from amq.config import AMQConfigError
from amq.export.bitplane import integer_zeros, quantized_layers
from amq_kernels.linear import QuantLinear
from amq_kernels.packing import unpack_codes

log = logging.getLogger(__name__)
GPTQ_FORMATS = ("gptq", "gptq_v2")  # v1 stores zero - 1 (what most readers expect); v2 the zero itself


def pack_dense(values: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack b-bit values along `dim` as a little-endian bit stream: every 32 values fill exactly
    `bits` int32 words (value j at stream bit j * bits). GPTQ's qweight (dim 0) and qzeros
    (dim 1) layout, 3-bit words included."""
    v = values.to(torch.int64)
    if dim == 1:
        v = v.t()
    rows, cols = v.shape
    if rows % 32:
        raise ValueError(f"packed dimension {rows} must be a multiple of 32")
    v = v.reshape(rows // 32, 32, cols)
    pos = torch.arange(32, dtype=torch.int64) * bits  # stream bit of each value
    words = torch.zeros(rows // 32, bits, cols, dtype=torch.int64)
    for j in range(32):
        w, off = divmod(int(pos[j]), 32)
        words[:, w] |= (v[:, j] << off) & 0xFFFFFFFF
        if off + bits > 32:  # spills into the next word
            words[:, w + 1] |= v[:, j] >> (32 - off)
    words = words.reshape(rows // 32 * bits, cols)
    packed = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return packed.t().contiguous() if dim == 1 else packed


def unpack_dense(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Inverse of `pack_dense`: int64 values."""
    p = packed.to(torch.int64) & 0xFFFFFFFF
    if dim == 1:
        p = p.t()
    rows_w, cols = p.shape
    p = p.reshape(rows_w // bits, bits, cols)
    out = torch.zeros(rows_w // bits, 32, cols, dtype=torch.int64)
    mask = (1 << bits) - 1
    for j in range(32):
        w, off = divmod(j * bits, 32)
        val = p[:, w] >> off
        if off + bits > 32:
            val = val | (p[:, w + 1] << (32 - off))
        out[:, j] = val & mask
    out = out.reshape(rows_w // bits * 32, cols)
    return out.t().contiguous() if dim == 1 else out


def gptq_config(layers: dict[str, QuantLinear], checkpoint_format: str) -> dict:
    """GPTQModel's quantize_config: base bits (the most common) and a `dynamic` override per
    layer that differs."""
    base_bits = Counter(q.bits for q in layers.values()).most_common(1)[0][0]
    sizes = {q.group_size for q in layers.values()}
    if len(sizes) != 1:
        raise AMQConfigError(f"the GPTQ export needs one group size, the model has {sorted(sizes)}")
    dynamic = {f"+:^{re.escape(n)}$": {"bits": q.bits} for n, q in layers.items() if q.bits != base_bits}
    return {
        "bits": base_bits,
        "group_size": sizes.pop(),
        "desc_act": False,  # act-order is applied with static groups: codes stay in column order
        "sym": False,
        "lm_head": False,
        "quant_method": "gptq",
        "checkpoint_format": checkpoint_format,
        "pack_dtype": "int32",
        "dynamic": dynamic,
        "meta": {"quantizer": ["amq"]},
    }


def layer_bits_from_gptq_config(cfg: dict, names: list[str]) -> dict[str, int]:
    """Each layer's bits under a GPTQ config: the first matching `+:` rule, else the base."""
    rules = [(re.compile(k[2:]), v) for k, v in cfg.get("dynamic", {}).items() if k.startswith("+:")]
    out = {}
    for n in names:
        out[n] = int(next((v.get("bits", cfg["bits"]) for rx, v in rules if rx.match(n)), cfg["bits"]))
    return out


def save_gptq(
    model: PreTrainedModel, out_dir: str | Path, tokenizer=None, dtype: torch.dtype = torch.float16, checkpoint_format: str = "gptq"
) -> Path:
    """Write a GPTQ checkpoint with per-module bits (GPTQModel's `dynamic`) to `out_dir`."""
    if checkpoint_format not in GPTQ_FORMATS:
        raise AMQConfigError(f"checkpoint_format must be one of {GPTQ_FORMATS}, got {checkpoint_format!r}")
    layers = quantized_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    for n, q in layers.items():
        zeros = integer_zeros(n, q).cpu()  # (G, N)
        if checkpoint_format == "gptq":
            if (zeros == 0).any():
                raise AMQConfigError(
                    f"{n}: a zero-point of 0 cannot be stored in the v1 GPTQ format (it stores zero - 1); "
                    "use checkpoint_format=gptq_v2 or the compressed-tensors export"
                )
            zeros = zeros - 1
        codes = unpack_codes(q.packed).t().cpu()  # (K, N)
        tensors[f"{n}.qweight"] = pack_dense(codes, q.bits, 0)
        tensors[f"{n}.qzeros"] = pack_dense(zeros, q.bits, 1)
        tensors[f"{n}.scales"] = q.scales.half().cpu().contiguous()
        tensors[f"{n}.g_idx"] = (torch.arange(q.in_features) // q.group_size).to(torch.int32)
        if q.bias is not None:
            tensors[f"{n}.bias"] = q.bias.data.half().cpu().contiguous()
    skip = {f"{n}.{b}" for n in layers for b in ("bias",)}
    seen: dict[int, str] = {}
    for key, t in model.state_dict().items():
        mod = key.rpartition(".")[0]
        if mod in layers or key in skip:
            continue
        if t.data_ptr() in seen:  # tied weights once (transformers re-ties them on load)
            continue
        seen[t.data_ptr()] = key
        tensors[key] = (t.to(dtype) if t.is_floating_point() else t).cpu().contiguous()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    qcfg = gptq_config(layers, checkpoint_format)
    (out / "quantize_config.json").write_text(json.dumps(qcfg, indent=1))
    model.config.save_pretrained(out)
    conf = json.loads((out / "config.json").read_text())
    conf["quantization_config"] = qcfg
    (out / "config.json").write_text(json.dumps(conf, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    log.info("GPTQ export (%s) of %d layers to %s", checkpoint_format, len(layers), out)
    return out


def load_gptq(path: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Read a GPTQ checkpoint written by `save_gptq` (or any GPTQModel checkpoint with
    trivial g_idx) into a plain HF model with dequantized weights: the check that the file
    holds what we meant, without GPTQModel installed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    p = Path(path)
    qcfg = json.loads((p / "quantize_config.json").read_text())
    config = AutoConfig.from_pretrained(p)
    config.__dict__.pop("quantization_config", None)  # built plain; we dequantize ourselves
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tensors = load_file(str(p / "model.safetensors"))
    names = sorted({k.rpartition(".")[0] for k in tensors if k.endswith(".qweight")})
    bits = layer_bits_from_gptq_config(qcfg, names)
    state = {}
    for n in names:
        b = bits[n]
        codes = unpack_dense(tensors[f"{n}.qweight"], b, 0).float()  # (K, N)
        zeros = unpack_dense(tensors[f"{n}.qzeros"], b, 1).float()  # (G, N)
        if qcfg.get("checkpoint_format", "gptq") == "gptq":
            zeros = zeros + 1
        gi = tensors[f"{n}.g_idx"].long()
        w = (codes - zeros[gi]) * tensors[f"{n}.scales"].float()[gi]
        state[f"{n}.weight"] = w.t().to(dtype)
        if f"{n}.bias" in tensors:
            state[f"{n}.bias"] = tensors[f"{n}.bias"].to(dtype)
    for k, t in tensors.items():
        if k.rpartition(".")[0] not in bits:
            state[k] = t.to(dtype) if t.is_floating_point() else t
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise AMQConfigError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    return model.eval()


def _tied_keys(model: nn.Module) -> set[str]:
    return set(getattr(model, "_tied_weights_keys", None) or ())  # a list or a dict of key -> source
