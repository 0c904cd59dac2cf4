"""Additive predictor: a plan's divergence as a sum of one term per (layer, bit-width).

The terms start from the sensitivity table (each layer measured alone) and are refitted to the
archive's real evaluations with a ridge pull towards that table (`amq.search.ilp.fit_additive`,
the same fit the ILP refit optimizes). One scale plus shrunk corrections: it ranks well from a
few dozen plans, where a free-form regressor with a parameter per layer or more cannot.
"""

from __future__ import annotations

import numpy as np

from amq.config import PredictorConfig
from amq.search.ilp import fit_additive
from amq.search.space import SearchSpace


class AdditivePredictor:
    def __init__(self, cfg: PredictorConfig, space: SearchSpace, prior: np.ndarray) -> None:
        self.cfg = cfg
        self.space = space
        self.prior = prior  # (layers, choices): each layer's divergence alone at each bit-width
        self.table: np.ndarray | None = None

    def _columns(self, x: np.ndarray) -> np.ndarray:
        col = {b: j for j, b in enumerate(self.space.choices)}
        return np.vectorize(col.__getitem__)(np.asarray(self.space.decode(x)))

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        plans = self.space.decode(x)
        self.table = fit_additive(plans, np.asarray(y, dtype=np.float64), self.prior, self.space.choices, self.cfg.ridge)

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.table is not None, "fit first"
        cols = self._columns(x)
        return self.table[np.arange(cols.shape[1])[None, :], cols].sum(axis=1)
