"""amq.plan: a plan for a new budget from a finished search, without evaluating anything."""

from __future__ import annotations

import json

import numpy as np

from amq.cli.plan import main
from amq.cost import build_cost_model
from amq.models import layer_infos
from amq.plan import replan
from amq.plan_document import PlanDocument


def _fake_run(tmp_path, model_dir):
    tmp_path.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    layers = layer_infos(model)
    names = [lay.name for lay in layers]
    cost = build_cost_model(layers, [2, 3, 4], 128, sum(p.numel() for p in model.parameters()))
    rng = np.random.default_rng(0)
    per_bits = {n: {2: 0.05 + 0.1 * rng.random(), 3: 0.01 * rng.random(), 4: 0.001} for n in names}
    run = tmp_path / "run"
    run.mkdir()
    (run / "sensitivity.json").write_text(json.dumps({"per_bits": per_bits}))
    rows = []
    for _ in range(40):
        plan = [int(b) for b in rng.choice([2, 3, 4], len(names))]
        div = sum(per_bits[n][b] for n, b in zip(names, plan, strict=True)) * 1.2
        rows.append({"plan": plan, "divergence": div, "avg_bits": cost.avg_bits(plan)})
    (run / "archive.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    best = min(rows, key=lambda r: r["divergence"])
    doc = PlanDocument(
        model=str(model_dir),
        layers=dict(zip(names, best["plan"], strict=True)),
        group_size=128,
        choices=[2, 3, 4],
        source="search",
        avg_bits=cost.avg_bits(best["plan"]),
        bytes=cost.plan_bytes(best["plan"]),
        model_gb=cost.model_gb(best["plan"]),
        divergence=best["divergence"],
    )
    (run / "pareto.json").write_text(json.dumps({"front": [doc.to_json()]}))
    return run, rows, cost, names


def _exit_code(argv: list[str]) -> int:
    """What `python -m amq.plan ...` exits with: bad input is one line and exit code 2."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_replan_fits_the_budget_and_is_no_worse_than_the_archive(tmp_path, small_model_dir):
    run, rows, cost, names = _fake_run(tmp_path, small_model_dir)
    for budget in (2.6, 3.1):
        doc = replan(run, budget)
        plan = [doc.layers[n] for n in names]
        assert cost.avg_bits(plan) <= budget + 1e-9 and doc.bytes <= doc.budget.bytes
        fitting = [r["divergence"] for r in rows if cost.plan_bytes(r["plan"]) <= doc.budget.bytes]
        assert doc.predicted_divergence <= min(fitting, default=np.inf) + 1e-12
        assert doc.source in ("amq.plan:archive", "amq.plan:ilp", "amq.plan:repair")


def test_plan_cli_writes_the_plan_and_refuses_bad_budgets(tmp_path, small_model_dir, capsys):
    run, *_ = _fake_run(tmp_path, small_model_dir)
    assert main([f"run_dir={run}", "budget=2.75"]) == 0
    assert PlanDocument.load(run / "plans" / "2.75bits.json").budget.value == 2.75
    assert _exit_code([f"run_dir={run}", "budget=12"]) == 2
    assert "outside the achievable range" in capsys.readouterr().err
    assert _exit_code([f"run_dir={tmp_path / 'nope'}", "budget=3"]) == 2


def test_plan_cli_names_the_broken_file(tmp_path, small_model_dir, capsys):
    """Garbled or wrong-shaped run-dir files: one line naming the file, exit 2 (never a traceback)."""
    cases = [
        ("pareto.json", "{garbled", "pareto.json: not valid JSON"),
        ("pareto.json", '{"plans": []}', "pareto.json: has no 'front' list"),
        ("pareto.json", '{"front": [{"layers": {}}]}', "pareto.json (front[0]): not a valid plan document: model: Field required"),
        ("archive.jsonl", "", "archive.jsonl: 0 evaluated plans"),
        ("archive.jsonl", '{"x": 1}\n', "archive.jsonl: not the archive of a search"),
    ]
    for i, (name, text, message) in enumerate(cases):
        run, *_ = _fake_run(tmp_path / str(i), small_model_dir)
        (run / name).write_text(text)
        capsys.readouterr()  # the fake run's own loading output
        assert _exit_code([f"run_dir={run}", "budget=3"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
