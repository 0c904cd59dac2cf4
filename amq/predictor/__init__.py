"""Quality predictors: plan features -> divergence, so NSGA-II can score millions of plans.

Both predictors fit log(divergence) by default: a layer's damage scales the others' roughly
multiplicatively, and the log spreads the low-divergence end where the front lives.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy.stats import kendalltau

from amq.config import PredictorConfig


class Predictor(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray) -> None: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def make_predictor(cfg: PredictorConfig, seed: int) -> Predictor:
    """Registry lookup by `predictor.name`."""
    if cfg.name == "mlp":
        from amq.predictor.mlp import MLPPredictor

        return MLPPredictor(cfg, seed)
    from amq.predictor.rbf import RBFPredictor

    return RBFPredictor(cfg)


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Kendall tau (rank agreement, what selection needs) and RMSE (on the divergence)."""
    tau = kendalltau(y_true, y_pred).statistic
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
    return {"kendall_tau": float(tau), "rmse": rmse}


def holdout_split(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, test) index split with at least 2 points on each side."""
    perm = rng.permutation(n)
    k = min(max(2, round(n * share)), n - 2)
    return perm[k:], perm[:k]
