"""`python -m amq.export DIR`: what an export holds (amq.export)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from amq.cli import fail
from amq.config import AMQConfigError
from amq.export import WEIGHTS, payload_bytes, read_quant_config


def main(argv: list[str] | None = None) -> int:
    """`python -m amq.export DIR`: what an export holds (format, bits per layer, bytes), read
    from its JSON and safetensors header only. Exports are written by `amq.evaluate export=true`."""
    ap = argparse.ArgumentParser(prog="python -m amq.export", description=(main.__doc__ or "").split("\n")[0].strip("`").strip())
    ap.add_argument("path", help="an export directory (written by python -m amq.evaluate ... export=true)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        doc = read_quant_config(args.path)
    except (AMQConfigError, json.JSONDecodeError) as exc:
        fail(exc)
    layers = doc.get("layers", {})
    by_bits = Counter(int(spec["bits"]) for spec in layers.values())
    weights = Path(args.path) / WEIGHTS
    size = f", {payload_bytes(weights) / 1e6:.2f} MB of tensors" if weights.is_file() else ""
    mix = ", ".join(f"{n} at {b} bits" for b, n in sorted(by_bits.items()))
    print(f"{args.path}: {doc['format']} v{doc.get('version')}, {doc.get('method')}, {len(layers)} quantized layers ({mix}){size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
