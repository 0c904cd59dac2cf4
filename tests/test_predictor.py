import numpy as np
import pytest

from amq.config import AMQConfigError, PredictorConfig
from amq.predictor import cross_validate, make_predictor, score, select
from amq.search.space import SearchSpace


@pytest.mark.parametrize("name", ["mlp", "rbf"])
def test_predictor_ranks_an_additive_log_divergence(name):
    # divergence of a plan ~ exp(sum of per-layer damages), as quantization behaves
    rng = np.random.default_rng(0)
    n_layers = 20
    weight = rng.random(n_layers) * 2
    x = rng.integers(0, 3, size=(240, n_layers)) / 2.0
    y = 1e-3 * np.exp((1 - x) @ weight / 4) * np.exp(rng.normal(0, 0.02, 240))
    te, tr = np.arange(60), np.arange(60, 240)
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


def _small_archive(n_plans: int, n_layers: int = 56, seed: int = 0):
    """What a second-family search sees early: ~60 plans over 56 layers; each layer's damage
    (a wide spread, as real sensitivities are) compounds a little with the total."""
    rng = np.random.default_rng(seed)
    space = SearchSpace(tuple(f"l{i}" for i in range(n_layers)), (2, 3, 4))
    scale = rng.lognormal(0, 1.0, n_layers)
    true = np.stack([scale * 1e-2, scale * 2.5e-3, scale * 6e-4], axis=1)  # 2, 3, 4 bits
    prior = true * rng.lognormal(0, 0.3, true.shape)  # the sensitivity pass: right in shape, noisy
    plans = space.random_plans(n_plans, rng)
    cols = np.array(plans) - 2
    add = true[np.arange(n_layers)[None, :], cols].sum(1)
    y = add * (1 + 2 * add) * rng.lognormal(0, 0.05, n_plans)
    return space, prior, plans, y


@pytest.mark.parametrize("name, floor", [("additive", 0.8), ("rbf", 0.75)])
def test_predictors_rank_an_archive_with_fewer_plans_than_layers(name, floor):
    # 48 training plans over 56 layers: the thin-plate RBF was fitted ill-posed here (tau 0.18)
    space, prior, plans, y = _small_archive(60)
    cv = cross_validate(lambda: make_predictor(PredictorConfig(name=name), 0, space, prior), space.encode(plans), y, 5, 0)
    assert cv["kendall_tau"] > floor, cv
    assert cv["rmse"] < 10 * y.std(), cv


def test_auto_selects_by_cross_validation_and_reports_every_candidate():
    space, prior, plans, y = _small_archive(60, seed=1)
    cfg = PredictorConfig(name="auto", candidates=["additive", "rbf"])
    predictor, name, metrics = select(cfg, space.encode(plans), y, 0, space, prior)
    assert name == "additive"
    assert set(metrics) >= {"tau_additive", "tau_rbf", "kendall_tau", "rmse"}
    assert metrics["kendall_tau"] == metrics["tau_additive"] == max(metrics["tau_additive"], metrics["tau_rbf"])
    pred = predictor.predict(space.encode(plans))
    assert score(y, pred)["kendall_tau"] > 0.8


def test_select_without_a_sensitivity_table_skips_additive_and_scores_nothing_below_8_points():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(6, 10)) / 2.0
    _, name, metrics = select(PredictorConfig(name="auto", candidates=["additive", "rbf"]), x, x.sum(1) + 1, 0)
    assert name == "rbf" and metrics == {}


def test_space_decode_inverts_encode():
    space = SearchSpace(tuple("abcde"), (2, 3, 4), restricted={1: (4,)}, ties=((2, 3),))
    plans = space.random_plans(20, np.random.default_rng(0))
    assert space.decode(space.encode(plans)) == plans


@pytest.mark.parametrize(
    "kw, msg",
    [({"name": "gbm"}, "predictor.name"), ({"candidates": ["rbf", "x"]}, "predictor.candidates"), ({"folds": 1}, "predictor.folds")],
)
def test_predictor_config_refuses_bad_values(kw, msg):
    with pytest.raises(AMQConfigError, match=msg):
        PredictorConfig(**kw)
