"""The latency table on this GPU for Llama-2-7B's linear shapes (amq.latency): measured, then read from the cache."""

import time

import torch

from amq.latency import latency_for, step_us
from amq.models import LayerInfo

shapes = {"q/k/v/o": (4096, 4096), "gate/up": (11008, 4096), "down": (4096, 11008)}
layers = [LayerInfo(n, *s) for n, s in shapes.items()]
t = time.perf_counter()
table = latency_for(layers, (2, 3, 4), 128, torch.device("cuda"), show_progress=False)
print(f"measured {len(table.us)} entries in {time.perf_counter() - t:.1f} s on {table.device} ({table.software})")
for k, v in sorted(table.us.items()):
    print(f"| {k} | {v:.1f} |")
t = time.perf_counter()
table2 = latency_for(layers, (2, 3, 4), 128, torch.device("cuda"), show_progress=False)
print(f"second call (cache): {time.perf_counter() - t:.2f} s, same table: {table2.us == table.us}")
blk = [LayerInfo(f"{i}", *s) for i, s in enumerate([(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)])]
for b in (2, 3, 4):
    print(
        f"7B block at {b} bits: {step_us(table, blk, [b] * 7):.1f} us, x32 layers = {32 * step_us(table, blk, [b] * 7) / 1000:.2f} ms a step"
    )
