"""The only module that talks to Weights & Biases. Offline by default: no account, no network."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from amq.config import LoggerConfig

log = logging.getLogger(__name__)


class Tracker:
    """Logs metrics, tables and images per iteration; a no-op when disabled."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any], name: str, resume_id: str | None = None) -> None:
        self.run = None
        if cfg.name == "none" or cfg.mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            group=cfg.group,
            tags=list(cfg.tags),
            name=name,
            dir=str(run_dir),
            mode=cfg.mode,  # type: ignore[arg-type]  # (one of wandb's modes: checked in LoggerConfig)
            config=config,
            id=resume_id,
            resume="allow" if resume_id else None,
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run else None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run:
            self.run.log(metrics, step=step)

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int | None = None) -> None:
        if self.run:
            self.run.log({key: self.wandb.Table(columns=list[str | int](columns), data=rows)}, step=step)

    def image(self, key: str, path: Path, step: int | None = None) -> None:
        if self.run:
            self.run.log({key: self.wandb.Image(str(path))}, step=step)

    def artifact(self, name: str, kind: str, files: list[Path], metadata: dict[str, Any] | None = None) -> None:
        """Files as one versioned W&B artifact (e.g. the plan documents a search chose)."""
        if self.run:
            art = self.wandb.Artifact(name, type=kind, metadata=metadata)
            for f in files:
                art.add_file(str(f), name=f.name)
            self.run.log_artifact(art)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run:
            self.run.finish()
            self.run = None
