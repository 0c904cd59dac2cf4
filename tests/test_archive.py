"""Archive reads that race with a worker filling in its trial (the CI failure of 2026-11-23)."""

from __future__ import annotations

import importlib.util
import time

import optuna
import pytest

from amq.config import AMQConfigError
from amq.search.archive import Archive, open_storage

NAMES = ["a", "b", "c"]


def _archive(storage) -> Archive:
    return Archive(storage, NAMES, [2, 3, 4])


def test_a_trial_half_way_through_its_suggests_reads_as_its_queued_plan():
    storage = optuna.storages.InMemoryStorage()
    driver, worker = _archive(storage), _archive(storage)
    driver.enqueue([(2, 3, 4), (4, 4, 4)], iteration=0, source="random", avg_bits=lambda p: sum(p) / len(p))
    trial = worker.study.ask()  # the worker took the first plan and has suggested one layer so far
    trial.suggest_categorical("p0", [2, 3, 4])
    assert driver.known_plans() == {(2, 3, 4), (4, 4, 4)}
    assert driver.enqueue([(2, 3, 4), (3, 3, 3)], iteration=1, source="nsga2", avg_bits=lambda p: 3.0) == 1
    assert driver.known_plans(before=1) == {(2, 3, 4), (4, 4, 4)}  # what iteration 1's proposals had to avoid
    assert driver.known_plans() == {(2, 3, 4), (4, 4, 4), (3, 3, 3)}


def test_an_iteration_counts_as_queued_only_once_marked():
    """A driver killed half-way through queuing an iteration: resume must queue the rest."""
    storage = optuna.storages.InMemoryStorage()
    driver = _archive(storage)
    driver.enqueue([(2, 3, 4)], iteration=0, source="random", avg_bits=lambda p: 3.0)
    assert not driver.queued(0)
    driver.mark_queued(0)
    again = _archive(storage)  # the resumed driver
    assert again.queued(0) and not again.queued(1)


def test_a_trial_asked_with_nothing_queued_has_no_plan_and_is_not_requeued():
    storage = optuna.storages.InMemoryStorage()
    driver, worker = _archive(storage), _archive(storage)
    trial = worker.study.ask()  # another worker was faster: no fixed params, no iteration
    trial.suggest_categorical("p0", [2, 3, 4])
    assert driver.known_plans() == set() and driver.known_plans(before=0) == set()
    assert driver.requeue_stale() == 0 and driver.waiting() == 0


def test_a_killed_trial_is_requeued_with_its_whole_plan():
    storage = optuna.storages.InMemoryStorage()
    driver, worker = _archive(storage), _archive(storage)
    driver.enqueue([(3, 2, 4)], iteration=0, source="random", avg_bits=lambda p: 3.0)
    trial = worker.study.ask()
    trial.set_user_attr("lease_until", time.time() + 60)  # (what take_one's lease sets)
    trial.suggest_categorical("p0", [2, 3, 4])  # killed here
    assert driver.requeue_stale() == 0  # its lease still runs: it may be evaluating
    trial.set_user_attr("lease_until", time.time() - 1)  # no renewal came
    assert driver.requeue_stale() == 1
    rec = driver.take_one(lambda plan: (0.5, 100, 0.1))
    assert rec is not None and rec.plan == (3, 2, 4)


def test_an_unreachable_or_malformed_storage_is_a_clear_error():
    with pytest.raises(AMQConfigError, match="expected a journal file"):
        open_storage(None, "postgresql:/no-host")
    with pytest.raises(AMQConfigError, match="cannot open it"):
        open_storage(None, "postgresql://nobody@127.0.0.1:1/x")
    if importlib.util.find_spec("MySQLdb") is None:  # SQLAlchemy's default MySQL driver
        with pytest.raises(AMQConfigError, match="no database driver"):
            open_storage(None, "mysql://nobody@127.0.0.1:1/x")


def test_a_journal_file_is_a_storage_for_the_driver_too(tmp_path):
    """search.storage=<file>.journal (documented for workers on a shared filesystem) opens a journal, not an SQL URL."""
    storage = open_storage(None, str(tmp_path / "shared" / "l2.journal"))
    archive = _archive(storage)
    archive.enqueue([(3, 2, 4)], iteration=0, source="random", avg_bits=lambda p: 3.0)
    assert (tmp_path / "shared" / "l2.journal").stat().st_size > 0


def test_a_trial_failed_as_stale_while_evaluating_is_given_up_not_raised(tmp_path):
    """A worker whose heartbeat was late (a loaded machine) has its trial failed and re-queued by
    the driver mid-evaluation: the worker drops its result and goes on (it used to exit 1 from
    `set_user_attr` on the finished trial, CI 2026-11-24)."""
    storage = open_storage(None, f"sqlite:///{tmp_path / 'db.sqlite'}", heartbeat_s=60)
    driver, worker = _archive(storage), _archive(storage)
    driver.enqueue([(3, 2, 4)], iteration=0, source="random", avg_bits=lambda p: 3.0)

    def evaluate(plan):
        (running,) = driver.study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        driver.study.tell(running.number, state=optuna.trial.TrialState.FAIL)  # what a stale heartbeat does
        driver.study.enqueue_trial(dict(running.system_attrs["fixed_params"]), user_attrs=dict(running.user_attrs))
        return 0.5, 100, 0.1

    assert worker.take_one(evaluate, worker="w1") is None
    rec = driver.take_one(lambda plan: (0.25, 100, 0.1))  # the retry copy is evaluated once, elsewhere
    assert rec is not None and rec.plan == (3, 2, 4) and rec.divergence == 0.25
    assert [r.divergence for r in driver.records()] == [0.25]
