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
    """Run one search; returns the first budget's plan divergence (after the final quantizer; for sweepers)."""
    from amq.search.loop import run_search

    try:
        cfg = to_object(dcfg)
        result = run_search(cfg, Path(HydraConfig.get().runtime.output_dir))
    except AMQConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    for choice in result.choices:
        best = choice.best
        if best is not None:
            after = f", {best.final:.4g} after {cfg.final.method}" if best.final is not None else ""
            logging.getLogger("amq").info(
                "budget %g: %.3f bits from %s, divergence %.4g by the proxy%s -> %s",
                choice.budget, best.avg_bits, "+".join(best.sources), best.proxy, after, result.run_dir / "plans",
            )  # fmt: skip
    first = result.choices[0].best if result.choices else None
    if first is None:
        return None
    return first.final if first.final is not None else first.proxy


if __name__ == "__main__":
    main()
