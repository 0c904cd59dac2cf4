"""The search end to end on a small trained Llama, and kill-and-resume through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_readme import check_run_dir_against_readme

from amq.plan_document import PlanDocument

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "logger=none",
    "search.initial_random=10",
    "search.iterations=3",
    "search.candidates=6",
    "optimizer.population=24",
    "optimizer.generations=6",
    "predictor.epochs=80",
    "data.num_samples=8",
    "data.batch_size=8",
    "search.budgets=[2.5,3.0,3.5]",
]


def _cmd(model: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "amq.run", f"model.path={model}", f"hydra.run.dir={run_dir}", *SMALL, *extra]


def _archive(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "archive.jsonl").read_text().splitlines()]


def _iteration_count(jsonl: Path, it: int) -> int:
    """Evaluations of iteration `it` finished so far (a line being written is skipped)."""
    if not jsonl.exists():
        return 0
    n = 0
    for line in jsonl.read_text().splitlines():
        with contextlib.suppress(ValueError):
            n += json.loads(line)["iteration"] == it
    return n


@pytest.mark.slow
def test_search_writes_every_output_and_beats_uniform(tmp_path, small_model_dir):
    run = tmp_path / "run"
    cmd = [a for a in _cmd(small_model_dir, run) if a != "logger=none"]  # W&B offline (conftest): wandb/ too
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    check_run_dir_against_readme(run)  # every file the README's "What a run writes" names, and nothing else
    archive = _archive(run)
    n_ilp = sum(a["source"] == "ilp" for a in archive)  # ILP seeds: one per budget and per cap, duplicates dropped
    assert 1 <= n_ilp <= 3 + 5
    assert len(archive) == 3 + 10 + n_ilp + 3 * 6
    assert len({tuple(a["plan"]) for a in archive}) == len(archive)
    pareto = [PlanDocument.from_json(p, "pareto.json") for p in json.loads((run / "pareto.json").read_text())["front"]]
    assert pareto and all(p.divergence is not None and p.predicted_divergence is not None for p in pareto)
    plan3 = PlanDocument.load(run / "plans" / "3bits.json")
    assert plan3.avg_bits <= 3.0 + 1e-9 and len(plan3.layers) == 14 and plan3.budget.value == 3.0
    assert plan3.group_size == 128 and plan3.model_fingerprint and plan3.search["metric"] == "jsd"
    uniform = {int(k): v for k, v in json.loads((run / "baselines.json").read_text()).items()}
    assert plan3.divergence < uniform[3], (plan3.divergence, uniform)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_killed_search_resumes_with_every_evaluation_exactly_once(tmp_path, small_model_dir, storage):
    """kill -9 of the driver mid-iteration, on the run dir's journal and on an SQLite database (heartbeats)."""
    run = tmp_path / "run"
    shared = [f"search.storage=sqlite:///{tmp_path / 'search.db'}", "search.heartbeat_s=1"] if storage == "sqlite" else []
    proc = subprocess.Popen(
        _cmd(small_model_dir, run, *shared), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    jsonl = run / "archive.jsonl"
    # kill in the middle of iteration 1's evaluations (after the initial archive and 2 more)
    while time.time() < deadline and _iteration_count(jsonl, 1) < 2:
        assert proc.poll() is None, "search ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _archive(run)
    n0 = sum(a["iteration"] == 0 for a in before)
    assert n0 + 2 <= len(before) < n0 + 18

    r = subprocess.run(_cmd(small_model_dir, run, *shared, "resume=true"), capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    after = _archive(run)
    plans = [tuple(a["plan"]) for a in after]
    assert len(plans) == len(set(plans)) == n0 + 18  # every evaluation exactly once, none lost
    # evaluations done before the kill are kept as they were, not redone
    kept = {(tuple(a["plan"]), a["trial"], a["divergence"]) for a in after}
    assert all((tuple(a["plan"]), a["trial"], a["divergence"]) in kept for a in before)
    assert [a["iteration"] for a in after].count(3) == 6  # and the search ran to its end


def test_existing_run_dir_needs_resume(tmp_path, small_model_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "optuna.journal").write_text('{"op_code":0,"worker_id":"w","study_name":"archive","directions":[1,1]}\n')
    r = subprocess.run(_cmd(small_model_dir, run), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "pass resume=true" in r.stderr
    (run / "optuna.journal").write_text("")  # what a worker opening it first leaves: not a search, the run goes ahead
    r = subprocess.run(
        _cmd(small_model_dir, run, "search.budget_unit=gb", "search.budgets=[9.0]"), capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2 and "achievable range" in r.stderr  # stopped later, by the GB budget check, not by the run dir


def test_resume_of_a_dir_without_a_search_says_so(tmp_path, small_model_dir):
    """A mistyped run dir with resume=true must not look like a resumed search."""
    run = tmp_path / "typo"
    r = subprocess.run(
        _cmd(small_model_dir, run, "resume=true", "search.budget_unit=gb", "search.budgets=[9.0]"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 2  # stopped by the GB budget check (needs the model's shapes) right after the warning
    assert "holds no search" in r.stdout + r.stderr and "starting a new one" in r.stdout + r.stderr


@pytest.mark.slow
def test_tied_search_keeps_every_group_at_one_bit_width(tmp_path, small_model_dir):
    from amq.search.ties import tie_groups

    run = tmp_path / "tied"
    extra = ["search.tie=[qkv,gate_up]", "search.iterations=1", "search.ilp_seeds=2"]
    r = subprocess.run(_cmd(small_model_dir, run, *extra), capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    sens = json.loads((run / "sensitivity.json").read_text())
    names = list(sens["per_bits"])
    groups = tie_groups(names, ["qkv", "gate_up"])
    assert len(groups) == 2 * 2  # two blocks
    for g in groups:  # measured together: equal shares
        assert len({sens["per_bits"][names[i]]["2"] for i in g}) == 1
    archive = _archive(run)
    assert archive and all(len({a["plan"][i] for i in g}) == 1 for a in archive for g in groups)
    plan3 = json.loads((run / "plans" / "3bits.json").read_text())
    assert plan3["search"]["tie"] == ["qkv", "gate_up"] and plan3["search"]["metric_context"]["seq_len"] > 0


@pytest.mark.slow
def test_untrusted_predictor_falls_back_and_the_final_choice_beats_every_peer(tmp_path, small_model_dir):
    """predictor.min_tau=1.0: no predictor is trusted, so NSGA-II proposes nothing and the log and
    iterations.jsonl say so; then each budget's plan is the lowest GPTQ divergence among its
    candidates, peers included, and plans/ records that choice."""
    run = tmp_path / "run"
    extra = ["predictor.min_tau=1.0", "search.iterations=2", "final.top_k=2"]
    r = subprocess.run(_cmd(small_model_dir, run, *extra), capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert log.count("the predictor does not rank the archive") == 2, log[-3000:]
    archive = _archive(run)
    later = [a for a in archive if a["iteration"] >= 1]
    assert later and {a["source"] for a in later} <= {"ilp-refit", "local"}
    assert len([a for a in later if a["iteration"] == 1]) == 6  # the refit and local moves fill search.candidates
    iters = [json.loads(line) for line in (run / "iterations.jsonl").read_text().splitlines()]
    assert [it["iteration"] for it in iters] == [0, 1, 2]
    assert all(it["predictor/fallback"] == 1.0 and -1 <= it["predictor/kendall_tau"] <= 1 for it in iters[1:])
    final = json.loads((run / "final.json").read_text())
    assert [b["budget"] for b in final["budgets"]] == [2.5, 3.0, 3.5]
    for b in final["budgets"]:
        cands = b["candidates"]
        sources = {s for c in cands for s in c["sources"]}
        assert {"ilp", "greedy"} <= sources, sources
        assert all(c["bytes"] <= b["bytes"] for c in cands)
        best = cands[0]
        assert best["final_divergence"] == min(c["final_divergence"] for c in cands)
        plan = json.loads((run / "plans" / f"{b['budget']:g}bits.json").read_text())
        assert plan["layers"] == best["layers"] and plan["chosen_by"]["divergence"] == best["final_divergence"]
        assert plan["chosen_by"]["method"] == "gptq" and plan["chosen_by"]["sources"] == best["sources"]
    assert "after gptq" in log and "final choice:" in log
