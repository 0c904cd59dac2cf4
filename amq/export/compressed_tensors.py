"""compressed-tensors, `pack-quantized` format: what vLLM and transformers read. One config group
per bit-width, its targets the exact module names, so every layer keeps its own bits. The schema
and the packing are the `compressed-tensors` package's own; we hand it scales and integer
zero-points and let it quantize and pack. Integer zero-points only: a model quantized with float
zeros (our default, a little more accurate) is refused with the option that fixes it
(`quantizer.integer_zeros=true`)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from amq.export.bitplane import dequantized_copy, integer_zeros, quantized_layers

log = logging.getLogger(__name__)


def save_compressed_tensors(model: PreTrainedModel, out_dir: str | Path, tokenizer=None, dtype: torch.dtype = torch.float16) -> Path:
    """Write a compressed-tensors `pack-quantized` checkpoint (per-layer bits) to `out_dir`."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )

    layers = quantized_layers(model)
    zeros = {n: integer_zeros(n, q) for n, q in layers.items()}
    plain = dequantized_copy(model, torch.float32)  # exact (q - z) * s; the package re-derives q
    by_bits: dict[tuple[int, int], list[str]] = {}
    for n, q in layers.items():
        by_bits.setdefault((q.bits, q.group_size), []).append(n)
    groups = {
        f"amq_{bits}bit_g{gs}": QuantizationScheme(
            targets=[f"re:^{re.escape(n)}$" for n in names],
            weights=QuantizationArgs(num_bits=bits, type="int", symmetric=False, strategy="group", group_size=gs),
        )
        for (bits, gs), names in sorted(by_bits.items())
    }
    qcfg = QuantizationConfig(config_groups=groups, quantization_status=QuantizationStatus.FROZEN)
    apply_quantization_config(plain, qcfg)
    for n, q in layers.items():
        mod: Any = plain.get_submodule(n)  # with compressed-tensors' weight_scale and weight_zero_point
        mod.weight_scale.data = q.scales.t().to(mod.weight_scale.dtype).contiguous()
        # the package's codes are signed: q - 2^(b-1), zero-point likewise
        mod.weight_zero_point.data = (zeros[n].t() - 2 ** (q.bits - 1)).to(mod.weight_zero_point.dtype).contiguous()
    for mod in plain.modules():  # the unquantized rest at 16 bits, as the cost model counts it
        if not hasattr(mod, "quantization_scheme"):
            for p in mod.parameters(recurse=False):
                p.data = p.data.to(dtype)
    compressor = ModelCompressor.from_pretrained_model(plain, quantization_format="pack-quantized")
    compressor.compress_model(plain)
    out = Path(out_dir)
    plain.save_pretrained(out)
    compressor.update_config(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    log.info("compressed-tensors export of %d layers to %s", len(layers), out)
    return out
