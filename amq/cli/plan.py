"""`python -m amq.plan run_dir=DIR budget=2.75 [unit=bits|gb]`: a plan for a new memory target
from a finished search, in seconds, with no new evaluation (amq.plan.replan)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from amq.cli import one_line_errors
from amq.config import AMQConfigError
from amq.plan import replan
from amq.plan_document import schema_json


def parse(argv: list[str]) -> dict[str, str]:
    """key=value arguments, as Hydra users type them; --help prints usage (exit 0), bad ones exit 2."""
    ap = argparse.ArgumentParser(prog="python -m amq.plan", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("args", nargs="*", metavar="key=value", help="run_dir=<search run dir> budget=<number> [unit=bits|gb]")
    ap.add_argument("--schema", action="store_true", help="print the plan document's JSON schema and exit")
    ns = ap.parse_args(argv)
    if ns.schema:
        print(schema_json())
        raise SystemExit(0)
    args = dict(a.partition("=")[::2] for a in ns.args)
    unknown = sorted(set(args) - {"run_dir", "budget", "unit"})
    if unknown:
        ap.error(f"unknown argument(s) {', '.join(unknown)}; expected run_dir=, budget= and unit=")
    if "run_dir" not in args or "budget" not in args:
        ap.error("run_dir=<search run dir> and budget=<number> are required")
    return args


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    unit = args.get("unit", "bits")
    if unit not in ("bits", "gb"):
        raise AMQConfigError(f"unit must be bits or gb, got {unit!r}")
    try:
        budget = float(args["budget"])
    except ValueError:
        raise AMQConfigError(f"budget must be a number, got {args['budget']!r}") from None
    doc = replan(Path(args["run_dir"]), budget, unit)
    out = Path(args["run_dir"]) / "plans" / f"{budget:g}{unit}.json"
    out.parent.mkdir(exist_ok=True)
    doc.save(out)
    measured = f"measured {doc.divergence:.4g}" if doc.divergence is not None else f"estimated {doc.predicted_divergence:.4g}"
    print(f"{out}: {doc.avg_bits:.3f} bits, {doc.model_gb:.4f} GB, divergence {measured} ({doc.source}), {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
