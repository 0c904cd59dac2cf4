"""`python -m amq.plan run_dir=DIR budget=2.75 [unit=bits|gb]`: a plan for a new memory target
from a finished search, in seconds, with no new evaluation (amq.plan.replan); or for a speed target,
`budget=400 unit=tok_s latency=measure`: the best plan whose GEMMs decode at that rate on this GPU
(our kernels timed per layer shape and bit-width, cached per device: amq.latency). `--schema` prints
the plan document's JSON schema."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from amq.cli import compose_tool, one_line_errors
from amq.config import AMQConfigError, ReplanConfig
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
    latency = _latency(cfg) if cfg.latency is not None else None
    doc = replan(Path(cfg.run_dir), cfg.budget, cfg.unit, latency, cfg.overhead_us)
    out = Path(cfg.run_dir) / "plans" / f"{cfg.budget:g}{cfg.unit}.json"
    out.parent.mkdir(exist_ok=True)
    doc.save(out)
    measured = f"measured {doc.divergence:.4g}" if doc.divergence is not None else f"estimated {doc.predicted_divergence:.4g}"
    speed = f", our GEMMs {doc.budget.step_us:.1f} us a step on {doc.budget.device}" if doc.budget and doc.budget.step_us else ""
    print(
        f"{out}: {doc.avg_bits:.3f} bits, {doc.model_gb:.4f} GB{speed}, divergence {measured} ({doc.source}), {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _latency(cfg: ReplanConfig):
    """The latency table `cfg.latency` names: measured on cfg.device for the run's model (cached per device), or read."""
    import torch

    from amq.latency import LatencyTable, latency_for
    from amq.models import load_config, shapes_from_config
    from amq.plan_document import PlanDocument
    from amq.rundir import read_json

    if cfg.latency != "measure":
        return LatencyTable.load(Path(str(cfg.latency)))
    front = read_json(Path(cfg.run_dir) / "pareto.json", "the search's front").get("front") or []
    if not front:
        raise AMQConfigError(f"run_dir {cfg.run_dir!r}: no front in pareto.json to read the model from")
    first = PlanDocument.from_json(front[0], "pareto.json (front[0])")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AMQConfigError("latency=measure times our kernels on a GPU, and CUDA is not available (device=cpu for a dry run)")
    layers, _ = shapes_from_config(load_config(first.model))
    return latency_for(layers, first.choices, first.group_size, device)


if __name__ == "__main__":
    sys.exit(main())
