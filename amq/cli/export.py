"""`python -m amq.export DIR`: what an export holds (amq.export)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from amq.cli import compose_tool, fail, one_line_errors
from amq.config import AMQConfigError, ExportInfoConfig
from amq.export import WEIGHTS, payload_bytes, read_quant_config


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """`python -m amq.export DIR` (or path=DIR): what an export holds (format, bits per layer, bytes),
    read from its JSON and safetensors header only. Exports are written by `amq.evaluate export=true`."""
    cfg: ExportInfoConfig = compose_tool(
        "amq.export", "export_schema", sys.argv[1:] if argv is None else argv, "what an export holds", "path"
    )
    try:
        doc = read_quant_config(cfg.path)
    except (AMQConfigError, json.JSONDecodeError) as exc:
        fail(exc)
    layers = doc.get("layers", {})
    by_bits = Counter(int(spec["bits"]) for spec in layers.values())
    weights = Path(cfg.path) / WEIGHTS
    size = f", {payload_bytes(weights) / 1e6:.2f} MB of tensors" if weights.is_file() else ""
    mix = ", ".join(f"{n} at {b} bits" for b, n in sorted(by_bits.items()))
    print(f"{cfg.path}: {doc['format']} v{doc.get('version')}, {doc.get('method')}, {len(layers)} quantized layers ({mix}){size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
