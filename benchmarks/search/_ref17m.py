"""What the 17M-model benchmarks share: the reference assets (AMQ_SHARED), the search config
they run under, and "best evaluated plan under a budget"."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from amq.config import Config, register_configs, to_object

ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """AMQ_SHARED, checked: the folder holding models/amq-llama-17m and data/."""
    shared = Path(os.environ.get("AMQ_SHARED", ""))
    if not (shared / "models" / "amq-llama-17m").is_dir():
        sys.exit("set AMQ_SHARED to the folder holding models/amq-llama-17m and data/linuxdoc")
    return shared


def search_config(*extra: str) -> Config:
    """`+experiment=small_cpu` on the 17M model with linuxdoc calibration, plus `extra` overrides."""
    shared = shared_dir()
    overrides = [
        "+experiment=small_cpu",
        f"model.path={shared / 'models' / 'amq-llama-17m'}",
        "model.name=amq-llama-17m",
        f"data.path={shared / 'data' / 'linuxdoc' / 'calib.txt'}",
        "logger=none",
        *extra,
    ]
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_object(compose(config_name="config", overrides=overrides))


def best_under(rows: list[dict], cap_bits: float) -> dict | None:
    """The lowest-divergence archive row at or under `cap_bits` average bits."""
    fits = [r for r in rows if r["avg_bits"] <= cap_bits + 1e-9]
    return min(fits, key=lambda r: r["divergence"]) if fits else None
