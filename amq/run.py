"""`python -m amq.run`: the AMQ search, composed by Hydra. Prints the run dir's outputs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from amq.config import AMQConfigError, register_configs, to_object

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> float | None:
    """Run one search; returns the archive's best divergence at the first budget (for sweepers)."""
    from amq.search.loop import run_search

    try:
        cfg = to_object(dcfg)
        result = run_search(cfg, Path(HydraConfig.get().runtime.output_dir))
    except AMQConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    for budget, rec in result.budget_plans.items():
        if rec is not None:
            logging.getLogger("amq").info(
                "budget %g: %.3f bits, divergence %.4g -> %s", budget, rec.avg_bits, rec.divergence, result.run_dir / "plans"
            )
    first = next(iter(result.budget_plans.values()), None)
    return first.divergence if first else None


if __name__ == "__main__":
    main()
