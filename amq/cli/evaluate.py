"""`python -m amq.evaluate`: apply a plan with a real quantizer, measure perplexity, export (amq.evaluate.evaluate)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from amq.cli import one_line_errors
from amq.config import register_configs, to_object
from amq.evaluate import evaluate

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@one_line_errors
def main(dcfg: DictConfig) -> float | None:
    """One evaluation; returns the first test set's perplexity (for sweepers)."""
    result = evaluate(to_object(dcfg), Path(HydraConfig.get().runtime.output_dir))
    first = next(iter(result["perplexity"].values()), None)
    return first["ppl"] if first else None


if __name__ == "__main__":
    main()
