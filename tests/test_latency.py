"""Speed as a budget (amq.latency, `python -m amq.plan unit=tok_s|us`): the per-device latency table,
its cache, and plans chosen under a decode-speed target instead of a memory one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_plan import _exit_code, _fake_run

from amq import latency
from amq.cli.plan import main
from amq.config import AMQConfigError
from amq.latency import LatencyTable, budget_to_ns, cost_table_ns, latency_for, step_us
from amq.models import LayerInfo
from amq.plan import replan
from amq.plan_document import PlanDocument


def _layers(shapes):
    return [LayerInfo(f"l{i}", n_out, n_in) for i, (n_out, n_in) in enumerate(shapes)]


def test_table_round_trips_and_a_broken_file_is_one_line(tmp_path):
    t = LatencyTable(device="cpu", software="x", rows=1, group_size=128, us={LatencyTable.key(64, 128, 3): 1.5})
    t.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json") == t and t.get(64, 128, 3) == 1.5 and t.get(64, 128, 2) is None
    (tmp_path / "bad.json").write_text("{garbled")
    with pytest.raises(AMQConfigError, match=r"bad\.json: not a latency table"):
        LatencyTable.load(tmp_path / "bad.json")


def test_measure_caches_per_device_and_measures_again_on_other_software(tmp_path, monkeypatch):
    monkeypatch.setenv("AMQ_CACHE_DIR", str(tmp_path))
    calls = []
    real = latency.time_call

    def counting(*args):
        calls.append(args[:3])
        return real(*args)

    monkeypatch.setattr(latency, "time_call", counting)
    layers = _layers([(64, 128), (128, 128), (64, 128)])  # two distinct shapes
    cpu = torch.device("cpu")
    t = latency_for(layers, (2, 3, 4), 128, cpu, show_progress=False)
    assert len(calls) == 6 and all(v > 0 for v in t.us.values())
    assert latency.cache_path(cpu, 128, 1).is_file()
    latency_for(layers, (2, 3, 4), 128, cpu, show_progress=False)
    assert len(calls) == 6  # read from the cache
    latency_for(_layers([(256, 128)]), (2, 3, 4), 128, cpu, show_progress=False)
    assert len(calls) == 9  # only the new shape
    monkeypatch.setattr(latency, "software", lambda: "other kernels")
    latency_for(layers, (2, 3, 4), 128, cpu, show_progress=False)
    assert len(calls) == 15  # other kernels: measured again


def test_budget_units():
    assert budget_to_ns(120.0, "us") == 120_000
    assert budget_to_ns(400.0, "tok_s", overhead_us=1000.0) == 1_500_000  # 2500 us a step, 1000 elsewhere
    with pytest.raises(AMQConfigError, match="leaves no time"):
        budget_to_ns(2000.0, "tok_s", overhead_us=600.0)
    with pytest.raises(AMQConfigError, match="not a speed budget"):
        budget_to_ns(3.0, "bits")


def _table_where_3_bits_is_slowest(layers) -> LatencyTable:
    """As on the H200 at M = 1: 3 bits slower than 4, 2 bits the fastest."""
    us = {}
    for lay in layers:
        base = lay.out_features * lay.in_features / 1e4
        us.update({LatencyTable.key(lay.out_features, lay.in_features, b): base * f for b, f in ((2, 1.0), (3, 1.6), (4, 1.4))})
    return LatencyTable(device="test GPU", software="x", rows=1, group_size=128, us=us)


def test_replan_under_a_speed_budget(tmp_path, small_model_dir):
    from amq.models import load_config, shapes_from_config

    run, rows, _, names = _fake_run(tmp_path, small_model_dir)
    layers, _ = shapes_from_config(load_config(str(small_model_dir)))
    table = _table_where_3_bits_is_slowest(layers)
    ns = cost_table_ns(table, layers, (2, 3, 4))
    fastest, slowest = ns.min(axis=1).sum() / 1000, ns.max(axis=1).sum() / 1000
    for budget in (fastest * 1.1, (fastest + slowest) / 2):
        doc = replan(run, budget, "us", table)
        plan = [doc.layers[n] for n in names]
        assert doc.budget.unit == "us" and doc.budget.device == "test GPU"
        assert step_us(table, layers, plan) == pytest.approx(doc.budget.step_us) and doc.budget.step_us <= budget
        fitting = [r["divergence"] for r in rows if step_us(table, layers, r["plan"]) <= budget]
        assert doc.predicted_divergence <= min(fitting, default=np.inf) + 1e-12
    # a tight budget: 3 bits costs more time than 4 here, so the plan holds no 3-bit layer
    tight = replan(run, fastest * 1.1, "us", table)
    assert 3 not in tight.layers.values()
    with pytest.raises(AMQConfigError, match="out of reach on test GPU"):
        replan(run, fastest * 0.9, "us", table)
    with pytest.raises(AMQConfigError, match="needs a latency table"):
        replan(run, 400.0, "tok_s")


def test_plan_cli_speed_budget(tmp_path, small_model_dir, capsys, monkeypatch):
    from amq.models import load_config, shapes_from_config

    run, *_ = _fake_run(tmp_path, small_model_dir)
    layers, _ = shapes_from_config(load_config(str(small_model_dir)))
    table = _table_where_3_bits_is_slowest(layers)
    table.save(tmp_path / "h200.json")
    fastest = cost_table_ns(table, layers, (2, 3, 4)).min(axis=1).sum() / 1000
    rate = 1e6 / (fastest * 1.5 + 100.0)  # tok/s with 100 us of the step elsewhere
    assert main([f"run_dir={run}", f"budget={rate:.3f}", "unit=tok_s", f"latency={tmp_path / 'h200.json'}", "overhead_us=100"]) == 0
    out = capsys.readouterr().out
    assert "us a step on test GPU" in out
    doc = PlanDocument.load(next((run / "plans").glob("*tok_s.json")))
    assert doc.budget.step_us <= fastest * 1.5 + 1e-6
    assert _exit_code([f"run_dir={run}", "budget=400", "unit=tok_s"]) == 2
    assert "needs latency=measure" in capsys.readouterr().err
    assert _exit_code([f"run_dir={run}", "budget=1e9", "unit=tok_s", f"latency={tmp_path / 'h200.json'}"]) == 2
    assert "out of reach" in capsys.readouterr().err
    # latency=measure: our kernels timed on the given device (here the CPU's reference path), cached
    monkeypatch.setenv("AMQ_CACHE_DIR", str(tmp_path / "cache"))
    assert main([f"run_dir={run}", "budget=1", "unit=tok_s", "latency=measure", "device=cpu"]) == 0
    cached = json.loads(next((tmp_path / "cache" / "latency").glob("cpu-g128-m1.json")).read_text())
    assert len(cached["us"]) == 3 * len({(lay.out_features, lay.in_features) for lay in layers})
