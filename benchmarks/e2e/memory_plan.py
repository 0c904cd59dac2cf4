"""Memory plan of the proxy bank for Llama-2-7B/13B/70B, computed from the architectures.

    python benchmarks/e2e/memory_plan.py > benchmarks/e2e/results/memory_plan.md

Shapes come from transformers' LlamaConfig built on the meta device (no weights, no download);
bytes follow amq.quant.bank's two layouts and amq.metrics' cached reference.
"""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from amq.models import layer_infos

ARCHS = {
    "Llama-2-7B": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "Llama-2-13B": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40),
    "Llama-2-70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8),
}
CHOICES, GROUP = (2, 3, 4), 128
TOKENS, VOCAB = 128 * 2048, 32000
GB = 1e9


def main() -> None:
    print("# Proxy bank memory plan ({2,3,4} bits, group 128, 128 x 2048 calibration tokens)\n")
    print("Command: `python benchmarks/e2e/memory_plan.py > benchmarks/e2e/results/memory_plan.md`\n")
    print(
        "| model | searchable layers | linear weights (fp16) | dense bank (fp16 x 3) | codes bank (uint8 + fp16 scale/zero, x 3) | reference log-probs (bf16) | dense plan on one GPU | codes plan on one GPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, arch in ARCHS.items():
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, **arch))
        layers = layer_infos(model)
        n = sum(lay.numel for lay in layers)
        rest = sum(p.numel() for p in model.parameters()) - n
        groups = sum(lay.out_features * math.ceil(lay.in_features / GROUP) for lay in layers)
        linear = 2 * n
        dense = len(CHOICES) * 2 * n
        codes = len(CHOICES) * (n + 4 * groups)
        ref = TOKENS * VOCAB * 2
        # dense: originals + bank + the 16-bit rest + reference on the GPU
        dense_gpu = linear + dense + 2 * rest + ref
        # codes: originals in pinned host memory; one working fp16 buffer per layer on the GPU
        codes_gpu = linear + codes + 2 * rest + ref
        print(
            f"| {name} | {len(layers)} | {linear / GB:.1f} GB | {dense / GB:.1f} GB | {codes / GB:.1f} GB | {ref / GB:.1f} GB |"
            f" {dense_gpu / GB:.1f} GB | {codes_gpu / GB:.1f} GB (+{linear / GB:.1f} GB pinned host) |"
        )


if __name__ == "__main__":
    main()
