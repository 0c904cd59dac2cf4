"""Packed checkpoints: safetensors weights + a JSON quantization config, reloadable into the HF
model class with QuantLinear layers.

Layout of an export directory:

    config.json            the model's HF config (unchanged)
    model.safetensors      every tensor: 16-bit rest of the model, and per quantized layer its
                           bit planes (plane0, plane1, ...), scales and zeros (kernels/README.md)
    quantization.json      format, method, group size, and every layer's bits
    tokenizer files        when a tokenizer is given

Nothing is pickled: safetensors for tensors, JSON for the rest. Tied weights (embeddings and
lm_head) are stored once.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_model, save_model
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from amq.config import AMQConfigError
from amq.models import shared_input_groups
from amq_kernels.linear import QuantLinear, group_shared_inputs
from amq_kernels.packing import dequantize, empty_packed, pack_planes, unpack_codes

log = logging.getLogger(__name__)
FORMAT = "amq-bitplane"
FORMAT_VERSION = 2  # 2: codes paired inside words (kernels/README.md); 1 is converted on load
WEIGHTS = "model.safetensors"
QCONFIG = "quantization.json"


def quantized_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """Name -> QuantLinear of every quantized layer; refuses a model that has none."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not layers:
        raise ValueError("the model has no QuantLinear layers; quantize it first")
    return layers


def save_quantized(
    model: PreTrainedModel,
    out_dir: str | Path,
    method: str,
    extra: Mapping | None = None,
    tokenizer=None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write `model` (with QuantLinear layers) to `out_dir`; returns the directory.

    The unquantized rest (embeddings, norms, lm_head) is cast to `dtype` in place first, so a
    model evaluated in float32 on a CPU is still stored at 16 bits, as the cost model counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = quantized_layers(model)
    for mod in model.modules():
        if not isinstance(mod, QuantLinear):
            for p in mod.parameters(recurse=False):
                if p.is_floating_point():
                    p.data = p.data.to(dtype)
    model.config.save_pretrained(out)
    tmp = out / (WEIGHTS + ".tmp")
    save_model(model, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / WEIGHTS)
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "method": method,
        "group_size": sorted({q.group_size for q in layers.values()}),
        "dtype": str(dtype).removeprefix("torch."),
        "layers": {n: {"bits": q.bits, "group_size": q.group_size, "method": method} for n, q in layers.items()},
        **(dict(extra) if extra else {}),
    }
    (out / QCONFIG).write_text(json.dumps(doc, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    log.info("exported %d quantized layers to %s (%.1f MB)", len(layers), out, (out / WEIGHTS).stat().st_size / 1e6)
    return out


def payload_bytes(path: str | Path) -> int:
    """Tensor bytes of a safetensors file: its size less the 8-byte length and the JSON header."""
    p = Path(path)
    with p.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
    return p.stat().st_size - 8 - header_len


def read_quant_config(path: str | Path) -> dict:
    p = Path(path) / QCONFIG
    if not p.is_file():
        raise AMQConfigError(f"{path}: no {QCONFIG}; not an amq export")
    doc = json.loads(p.read_text())
    if doc.get("format") != FORMAT or doc.get("version", 0) > FORMAT_VERSION:
        raise AMQConfigError(f"{p}: format {doc.get('format')!r} v{doc.get('version')} is not one this amq reads")
    return doc


def load_quantized(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, group_inputs: bool = True
) -> nn.Module:
    """Rebuild the HF model from its config, put QuantLinear layers where the export has them,
    and load every tensor (strict: a missing or extra tensor is an error). group_inputs: link
    q/k/v and gate/up so that decode runs each group in one kernel launch (kernels_group.md)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    doc = read_quant_config(path)
    config = AutoConfig.from_pretrained(path)  # no remote code: a plain HF architecture
    dtype = dtype or getattr(torch, doc.get("dtype", "float16"))
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for name, spec in doc["layers"].items():
        lin = model.get_submodule(name)
        packed = empty_packed(lin.out_features, lin.in_features, int(spec["bits"]), int(spec["group_size"]))
        bias = torch.zeros_like(lin.bias) if lin.bias is not None else None
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, QuantLinear(packed, bias))
    missing, unexpected = load_model(model, str(Path(path) / WEIGHTS), strict=False)
    if missing or unexpected:
        raise AMQConfigError(
            f"{path}: checkpoint does not match the model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    if doc.get("version", 1) == 1:  # plain code order inside words: re-pack into today's layout
        for q in quantized_layers(model).values():
            codes = unpack_codes(q.packed, layout=1)
            for i, plane in enumerate(pack_planes(codes, q.bits)):
                getattr(q, f"plane{i}").copy_(plane)
    if group_inputs:
        group_shared_inputs(model, shared_input_groups(model))
    return model.to(device).eval()


# --- what the engines' formats need from a quantized layer -----------------------------------


def integer_zeros(name: str, layer: QuantLinear) -> torch.Tensor:
    """The layer's zero-points as int64 (K // g, N); refuses fractional ones."""
    z = layer.zeros.float()
    zi = torch.round(z)
    if not torch.equal(z, zi) or zi.min() < 0 or zi.max() > 2**layer.bits - 1:
        raise AMQConfigError(
            f"{name}: zero-points are not integer codes, which this export format needs; quantize with quantizer.integer_zeros=true"
        )
    return zi.to(torch.int64)


def dequantized_copy(model: PreTrainedModel, dtype: torch.dtype = torch.float16) -> PreTrainedModel:
    """A plain HF model: every QuantLinear back to nn.Linear holding its dequantized weight."""
    out = copy.deepcopy(model)
    for name, q in quantized_layers(out).items():
        lin = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None, dtype=torch.float32)
        lin.weight.data = dequantize(q.packed, torch.float32)
        if q.bias is not None:
            lin.bias.data = q.bias.data.float()
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, lin)
    return out.to(dtype)  # type: ignore[arg-type]  # (transformers types `to` by its wrapper)
