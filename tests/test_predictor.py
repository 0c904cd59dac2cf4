import numpy as np
import pytest

from amq.config import PredictorConfig
from amq.predictor import holdout_split, make_predictor, score


@pytest.mark.parametrize("name", ["mlp", "rbf"])
def test_predictor_ranks_an_additive_log_divergence(name):
    # divergence of a plan ~ exp(sum of per-layer damages), as quantization behaves
    rng = np.random.default_rng(0)
    n_layers = 20
    weight = rng.random(n_layers) * 2
    x = rng.integers(0, 3, size=(240, n_layers)) / 2.0
    y = 1e-3 * np.exp((1 - x) @ weight / 4) * np.exp(rng.normal(0, 0.02, 240))
    tr, te = holdout_split(len(x), 0.25, rng)
    p = make_predictor(PredictorConfig(name=name, epochs=200), seed=0)
    p.fit(x[tr], y[tr])
    m = score(y[te], p.predict(x[te]))
    assert m["kendall_tau"] > 0.85, m
    assert m["rmse"] < y.std()


def test_rbf_fits_fewer_points_than_dimensions():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(20, 56)) / 2.0
    y = np.exp(-x.sum(1) / 10)
    p = make_predictor(PredictorConfig(name="rbf"), seed=0)
    p.fit(x, y)
    assert np.isfinite(p.predict(x)).all()
