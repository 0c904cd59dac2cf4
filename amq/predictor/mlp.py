"""MLP quality predictor as a LightningModule, trained full-batch by a Lightning Trainer."""

from __future__ import annotations

import itertools
import logging
import warnings

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from amq.config import PredictorConfig


class PlanRegressor(L.LightningModule):
    """features (n, layers) -> standardized target (n,)."""

    def __init__(self, n_features: int, hidden: int, layers: int, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        dims = [n_features] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(dims[-1], 1)
        self.skip = nn.Linear(n_features, 1)  # linear path: divergence is close to additive per layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.head(self.body(x)) + self.skip(x)).squeeze(-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


class MLPPredictor:
    """Standardizes the target (log-divergence by default) and fits a PlanRegressor."""

    def __init__(self, cfg: PredictorConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.model: PlanRegressor | None = None

    def _target(self, y: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(y, 1e-12)) if self.cfg.log_target else y

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        t = self._target(y)
        self.mu, self.sigma = float(t.mean()), float(t.std() + 1e-8)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor((t - self.mu) / self.sigma, dtype=torch.float32)
        torch.manual_seed(self.seed)
        self.model = PlanRegressor(x.shape[1], self.cfg.hidden, self.cfg.layers, self.cfg.lr, self.cfg.weight_decay)
        loader = DataLoader(TensorDataset(xt, yt), batch_size=len(xt), shuffle=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")
            # one small CPU fit, inside the search's own process, also when that runs under SLURM
            warnings.filterwarnings("ignore", ".*`srun` command is available.*")
            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
            trainer = L.Trainer(
                max_epochs=self.cfg.epochs,
                accelerator="cpu",
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                deterministic=True,
            )
            trainer.fit(self.model, loader)
        self.model.eval()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.model is not None, "fit first"
        out = self.model(torch.as_tensor(x, dtype=torch.float32)).numpy() * self.sigma + self.mu
        return np.exp(out) if self.cfg.log_target else out
