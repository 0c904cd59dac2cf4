"""RBF quality predictor: scipy's RBFInterpolator with a linear tail and smoothing."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.interpolate import RBFInterpolator

from amq.config import PredictorConfig


class RBFPredictor:
    def __init__(self, cfg: PredictorConfig) -> None:
        self.cfg = cfg
        self.rbf: RBFInterpolator | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        t = np.log(np.maximum(y, 1e-12)) if self.cfg.log_target else y
        # a linear tail needs more points than dimensions; early archives may be smaller
        degree = 1 if len(x) > x.shape[1] else 0
        with warnings.catch_warnings():  # scipy warns about degree 0; with smoothing > 0 it still solves
            warnings.filterwarnings("ignore", ".*should not be below.*")
            self.rbf = RBFInterpolator(x.astype(np.float64), t, kernel=self.cfg.kernel, smoothing=self.cfg.smoothing, degree=degree)

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.rbf is not None, "fit first"
        out = self.rbf(x.astype(np.float64))
        return np.exp(out) if self.cfg.log_target else out
