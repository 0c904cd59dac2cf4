"""Quantized checkpoints, one module per format; each carries the plan's bits per layer.

- bitplane.py: ours (safetensors bit planes + quantization.json), what our kernels serve;
  `load_quantized` rebuilds the HF model with QuantLinear layers.
- compressed_tensors.py: compressed-tensors `pack-quantized`, for vLLM and transformers.
- gptq.py: GPTQModel's layout with per-layer `dynamic` bits (v1 and v2 zero-points).

`python -m amq.export DIR` says what an export holds (amq.cli.export).
"""

from amq.export.bitplane import WEIGHTS, load_quantized, payload_bytes, quantized_layers, read_quant_config, save_quantized

__all__ = ["WEIGHTS", "load_quantized", "payload_bytes", "quantized_layers", "read_quant_config", "save_quantized"]
