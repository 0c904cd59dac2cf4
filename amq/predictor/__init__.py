"""Quality predictors: plan features -> divergence, so NSGA-II can score millions of plans.

Three kinds: `additive` (the sensitivity table refitted to the archive), `rbf` and `mlp`
(free-form, on log divergence: a layer's damage scales the others' roughly multiplicatively).
`auto` picks, at every fit, the one that ranks the archive best by k-fold cross-validation:
Kendall tau of the out-of-fold predictions, pooled over the folds. The search acts on that tau:
below `predictor.min_tau` the predictor is not trusted to propose (amq.search.loop).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np
from scipy.stats import kendalltau

from amq.config import PredictorConfig
from amq.search.space import SearchSpace


class Predictor(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray) -> None: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def make_predictor(cfg: PredictorConfig, seed: int, space: SearchSpace | None = None, prior: np.ndarray | None = None) -> Predictor:
    """Registry lookup by `predictor.name` (not `auto`: see `select`). `additive` needs the
    search space and the sensitivity table (`prior`)."""
    if cfg.name == "mlp":
        from amq.predictor.mlp import MLPPredictor

        return MLPPredictor(cfg, seed)
    if cfg.name == "additive":
        from amq.predictor.additive import AdditivePredictor

        if space is None or prior is None:
            raise ValueError("the additive predictor needs the search space and the sensitivity table")
        return AdditivePredictor(cfg, space, prior)
    if cfg.name == "rbf":
        from amq.predictor.rbf import RBFPredictor

        return RBFPredictor(cfg)
    raise ValueError(f"make_predictor: {cfg.name!r} is not a single predictor")


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Kendall tau (rank agreement, what selection needs) and RMSE (on the divergence)."""
    tau = kendalltau(y_true, y_pred).statistic
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
    return {"kendall_tau": float(np.nan_to_num(tau)), "rmse": rmse}


def cross_validate(make, x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict[str, float]:
    """Out-of-fold predictions of `make()` over `folds` random folds, scored together."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    pred = np.empty(len(y))
    for part in np.array_split(order, min(folds, len(y))):
        train = np.setdiff1d(order, part)
        p = make()
        p.fit(x[train], y[train])
        pred[part] = p.predict(x[part])
    return score(y, pred)


def select(
    cfg: PredictorConfig, x: np.ndarray, y: np.ndarray, seed: int, space: SearchSpace | None = None, prior: np.ndarray | None = None
) -> tuple[Predictor, str, dict[str, float]]:
    """Cross-validate the configured predictor (every one of `cfg.candidates` for `auto`), refit
    the best on all points. Returns it, its name, and metrics: its CV `kendall_tau` and `rmse`,
    and `tau_<name>` of each candidate. With fewer than 8 points nothing is scored."""
    names = list(cfg.candidates) if cfg.name == "auto" else [cfg.name]
    if prior is None:
        names = [n for n in names if n != "additive"] or ["rbf"]
    metrics: dict[str, float] = {}
    best, best_tau = names[0], -np.inf
    if len(y) >= 8:
        for name in names:
            one = replace(cfg, name=name)
            m = cross_validate(lambda one=one: make_predictor(one, seed, space, prior), x, y, cfg.folds, seed)
            metrics[f"tau_{name}"] = m["kendall_tau"]
            if m["kendall_tau"] > best_tau:
                best, best_tau = name, m["kendall_tau"]
                metrics.update(m)
    final = make_predictor(replace(cfg, name=best), seed, space, prior)
    final.fit(x, y)
    return final, best, metrics
