"""One search, many evaluating processes: a driver and 3 workers on a real PostgreSQL server
(launchers/postgres_local.sh; .ci/run installs Debian's postgresql) or on a journal file (a shared
filesystem), one worker SIGKILLed in the middle of an evaluation. The final archive must equal a
single-process run's."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("psycopg")
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "logger=none",
    "predictor=rbf",
    "search.initial_random=8",
    "search.iterations=2",
    "search.candidates=6",
    "optimizer.population=24",
    "optimizer.generations=5",
    "data.num_samples=48",  # slow enough per evaluation that a worker can be killed in the middle of one
    "data.seq_len=128",
    "search.budgets=[2.5,3.0,3.5]",
]


@functools.cache
def _storage(url: str):
    """One storage (one connection pool) per server for the test's own reads: a new one for every
    poll leaves pooled connections open until the server refuses more ("too many clients")."""
    from amq.search.archive import open_storage

    return open_storage(None, url)


def _archive(run_dir: Path) -> dict[tuple, float]:
    rows = [json.loads(line) for line in (run_dir / "archive.jsonl").read_text().splitlines()]
    return {tuple(r["plan"]): r["divergence"] for r in rows}


def _running_of(url: str, study: str, worker_pid: int) -> bool:

    import optuna
    from optuna.trial import TrialState

    st = optuna.load_study(study_name=study, storage=_storage(url))
    return any(t.user_attrs.get("worker", "").endswith(f":{worker_pid}") for t in st.get_trials(states=(TrialState.RUNNING,)))


@pytest.mark.slow
def test_driver_and_three_workers_with_one_killed_equal_a_single_process_run(tmp_path, small_model_dir, postgres):
    _driver_and_three_workers_one_killed(tmp_path, small_model_dir, postgres, ["heartbeat_s=2"], ["search.heartbeat_s=2"])


@pytest.mark.slow
def test_the_same_on_a_journal_file_without_heartbeats(tmp_path, small_model_dir):
    """Journal storage has no heartbeat: the killed worker's trial is found by its dead holder (a lease)."""
    _driver_and_three_workers_one_killed(tmp_path, small_model_dir, str(tmp_path / "shared" / "search.journal"), [], [])


@pytest.mark.slow
def test_the_same_on_a_sqlite_file(tmp_path, small_model_dir):
    """SQLite: Optuna's RDB storage on one file (heartbeats as on PostgreSQL)."""
    (tmp_path / "shared").mkdir()
    url = f"sqlite:///{tmp_path / 'shared' / 'search.db'}"
    _driver_and_three_workers_one_killed(tmp_path, small_model_dir, url, ["heartbeat_s=2"], ["search.heartbeat_s=2"])


def _driver_and_three_workers_one_killed(tmp_path, small_model_dir, url: str, worker_extra: list[str], driver_extra: list[str]) -> None:
    base = [sys.executable, "-m", "amq.run", f"model.path={small_model_dir}", *SETTINGS]
    single = tmp_path / "single"
    r = subprocess.run([*base, f"hydra.run.dir={single}"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

    study = "dist-test"
    worker_cmd = [
        sys.executable, "-m", "amq.worker", f"storage={url}", f"study={study}", f"model={small_model_dir}", "poll_s=0.2", *worker_extra,
    ]  # fmt: skip
    workers = [subprocess.Popen(worker_cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    dist = tmp_path / "dist"
    driver = subprocess.Popen(
        [*base, f"hydra.run.dir={dist}", f"search.storage={url}", f"search.study={study}", *driver_extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # at a random point of the search (after `after` evaluations; the seed is in the failure message and
    # AMQ_KILL_SEED=... replays it), the first worker seen holding an evaluation is killed (on a loaded
    # machine any one of them may be starved until the others have taken every trial)
    seed = int(os.environ.get("AMQ_KILL_SEED", time.time_ns() % 10**6))
    after = random.Random(seed).randint(0, 14)
    why = f"AMQ_KILL_SEED={seed}: a worker killed after {after} evaluations"
    victim = None
    deadline = time.time() + 600
    while victim is None and time.time() < deadline and driver.poll() is None:
        with contextlib.suppress(KeyError):  # the study is not created yet
            if _completed(url, study) >= after:
                victim = next((w for w in workers if _running_of(url, study, w.pid)), None)
        if victim is not None and not _frozen_holding(victim, url, study):
            victim = None  # it finished that evaluation between the look and the stop
        time.sleep(0.02)
    assert victim is not None, f"{why}: no worker held an evaluation after that"
    victim.send_signal(signal.SIGKILL)
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, f"{why}: {err[-3000:]}"
    for w in (w for w in workers if w is not victim):
        _, werr = w.communicate(timeout=120)
        assert w.returncode == 0, f"{why}: {werr[-3000:]}"  # the driver marked the study done

    import optuna

    trials = optuna.load_study(study_name=study, storage=_storage(url)).get_trials() if "://" in url else _reload(url, study)
    assert any(t.state.name == "FAIL" and str(t.user_attrs.get("worker", "")).endswith(f":{victim.pid}") for t in trials)
    by_worker = {t.user_attrs.get("worker", "").split(":")[-1] for t in trials if t.state.name == "COMPLETE"}
    assert len(by_worker - {"driver"}) >= 2  # workers did real work

    a, b = _archive(single), _archive(dist)
    assert set(a) == set(b), why  # the same plans, each exactly once
    for plan, div in a.items():
        assert b[plan] == pytest.approx(div, rel=1e-5)


def _frozen_holding(worker: subprocess.Popen, url: str, study: str) -> bool:
    """Stop the worker, let a commit it had already sent reach the server, and look again: True (and
    left stopped) only if it still holds an evaluation, so the SIGKILL that follows lands inside one."""
    worker.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    if _running_of(url, study, worker.pid):
        return True
    worker.send_signal(signal.SIGCONT)
    return False


def _completed(url: str, study: str) -> int:
    import optuna
    from optuna.trial import TrialState

    st = optuna.load_study(study_name=study, storage=_storage(url))
    return len(st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _reload(journal: str, study: str):
    """A journal's trials as they are on disk now (a fresh storage replays the whole file)."""
    import optuna

    from amq.search.archive import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(None, journal)).get_trials()


def _count_iteration(url: str, study: str, it: int) -> int:

    import optuna
    from optuna.trial import TrialState

    try:
        st = optuna.load_study(study_name=study, storage=_storage(url))
    except KeyError:
        return 0
    return sum(t.user_attrs.get("iteration") == it for t in st.get_trials(states=(TrialState.COMPLETE,)))


@pytest.mark.slow
def test_killed_driver_resumes_from_the_database(tmp_path, small_model_dir, postgres):
    study = "driver-kill"
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "amq.run", f"model.path={small_model_dir}", *SETTINGS, "data.num_samples=8",
        f"hydra.run.dir={run}", f"search.storage={postgres}", f"search.study={study}", "search.heartbeat_s=2",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and _count_iteration(postgres, study, 1) < 2:
        assert proc.poll() is None, "search ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    import optuna

    before = {
        t.number: t.values
        for t in optuna.load_study(study_name=study, storage=_storage(postgres)).get_trials()
        if t.state.name == "COMPLETE"
    }

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)  # without resume: refused
    assert again.returncode == 2 and "resume=true" in again.stderr
    r = subprocess.run([*cmd, "resume=true"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = optuna.load_study(study_name=study, storage=_storage(postgres)).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    plans = [tuple(sorted(t.params.items())) for t in done]
    assert len(plans) == len(set(plans))  # every plan evaluated exactly once
    assert all(t.number in before and before[t.number] == t.values for t in done if t.number in before)
    assert len(before) < len(done) and sum(t.user_attrs["iteration"] == 2 for t in done) == 6  # and it ran to the end


def test_a_worker_loads_only_the_model_it_is_given_and_refuses_another(tmp_path, small_model_dir, small_qwen2_dir):
    """The study says which model the driver searches (a fingerprint of its config); the worker
    loads the model of its own command line and refuses one that is not it."""
    import dataclasses

    import optuna
    from hydra import compose, initialize_config_dir

    from amq.config import AMQConfigError, register_configs, to_object
    from amq.models import load_config, model_fingerprint
    from amq.search.archive import open_storage
    from amq.worker import run_worker

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = to_object(compose("config", ["model.path=/driver/only/path", "model.trust_remote_code=true"]))
    url = str(tmp_path / "shared.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(None, url), directions=["minimize", "minimize"])
    study.set_user_attr("model_fingerprint", model_fingerprint(load_config(str(small_model_dir))))
    study.set_user_attr("config", dataclasses.asdict(cfg))
    study.set_user_attr("done", True)
    with pytest.raises(AMQConfigError, match="is not the model study 's' searches"):
        run_worker(url, "s", str(small_qwen2_dir), wait_s=5)
    assert run_worker(url, "s", str(small_model_dir), wait_s=5) == 0  # the right model: it starts, finds the study done, exits
