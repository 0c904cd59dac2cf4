"""The search end to end on a small trained Llama, and kill-and-resume through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import random
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


def _chosen(run_dir: Path) -> dict[str, dict]:
    return {p.name: PlanDocument.load(p).layers for p in sorted((run_dir / "plans").glob("*.json"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_model_dir) -> Path:
    """The search the killed ones must end up equal to."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    r = subprocess.run(_cmd(small_model_dir, run), capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def _kill_when(run: Path, point: int | str, proc: subprocess.Popen, delay: float) -> None:
    """Wait until the archive holds `point` evaluations ("final": until the final step has scored a
    plan), then a little more, then kill -9 the driver's process group."""
    deadline = time.time() + 600
    jsonl, final = run / "archive.jsonl", run / "final.json"

    def reached() -> bool:
        if point == "final":
            return final.exists()
        return jsonl.exists() and sum(1 for line in jsonl.read_text().splitlines() if line.endswith("}")) >= int(point)

    while time.time() < deadline and not reached() and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["journal", "sqlite", "postgres"])
def test_driver_killed_at_a_random_point_resumes_to_the_uninterrupted_result(request, tmp_path, small_model_dir, uninterrupted, storage):
    """kill -9 of the driver at a random point of the run (from model loading to the final step; the
    seed is in the failure message, AMQ_KILL_SEED=... replays it), on the run dir's journal and on an
    SQLite database and on PostgreSQL (heartbeats): the resumed run evaluates every plan exactly once, keeps what was
    done before the kill, and ends with the uninterrupted run's archive and chosen plans."""
    seed = int(os.environ.get("AMQ_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    total = len(_archive(uninterrupted))
    point: int | str = rng.choice([*range(total), "final"])
    delay = rng.uniform(0.0, 0.5)
    why = f"AMQ_KILL_SEED={seed}: killed at {point} evaluations + {delay:.2f} s, {storage}"
    run = tmp_path / "run"
    shared: list[str] = []
    if storage == "sqlite":
        shared = [f"search.storage=sqlite:///{tmp_path / 'search.db'}", "search.heartbeat_s=1"]
    elif storage == "postgres":
        shared = [f"search.storage={request.getfixturevalue('postgres')}", f"search.study=kill-{tmp_path.name}", "search.heartbeat_s=1"]
    proc = subprocess.Popen(
        _cmd(small_model_dir, run, *shared), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    _kill_when(run, point, proc, delay)
    before = _archive(run) if (run / "archive.jsonl").exists() else []

    r = subprocess.run(_cmd(small_model_dir, run, *shared, "resume=true"), capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, f"{why}: {r.stderr[-3000:]}"
    after = _archive(run)
    plans = [tuple(a["plan"]) for a in after]
    assert len(plans) == len(set(plans)) == total, why  # every evaluation exactly once, none lost
    kept = {(tuple(a["plan"]), a["trial"], a["divergence"]) for a in after}
    assert all((tuple(a["plan"]), a["trial"], a["divergence"]) in kept for a in before), why  # done before the kill: kept, not redone
    reference = {tuple(a["plan"]): a["divergence"] for a in _archive(uninterrupted)}
    assert {tuple(a["plan"]): a["divergence"] for a in after} == reference, why
    assert _chosen(run) == _chosen(uninterrupted), why


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
