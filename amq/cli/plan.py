"""`python -m amq.plan run_dir=DIR budget=2.75 [unit=bits|gb]`: a plan for a new memory target
from a finished search, in seconds, with no new evaluation (amq.plan.replan). `--schema` prints
the plan document's JSON schema."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from amq.cli import compose_tool, one_line_errors
from amq.config import ReplanConfig
from amq.plan import replan
from amq.plan_document import schema_json


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--schema" in argv:
        print(schema_json())
        return 0
    cfg: ReplanConfig = compose_tool("amq.plan", "replan_schema", argv, (__doc__ or "").split("\n\n")[0])
    t0 = time.perf_counter()
    doc = replan(Path(cfg.run_dir), cfg.budget, cfg.unit)
    out = Path(cfg.run_dir) / "plans" / f"{cfg.budget:g}{cfg.unit}.json"
    out.parent.mkdir(exist_ok=True)
    doc.save(out)
    measured = f"measured {doc.divergence:.4g}" if doc.divergence is not None else f"estimated {doc.predicted_divergence:.4g}"
    print(f"{out}: {doc.avg_bits:.3f} bits, {doc.model_gb:.4f} GB, divergence {measured} ({doc.source}), {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
