"""The archive of real evaluations, kept in an Optuna study on disk so that nothing is lost.

Each candidate plan is enqueued as a WAITING trial (with its iteration and source as user
attributes), taken with `ask`, scored, and completed with `tell(divergence, bytes)`. The study
lives in a Journal file in the run dir: a killed search resumes from it, re-running only the
evaluation that was in flight. `archive.jsonl` is a readable mirror, rewritten from the study.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from amq.config import AMQConfigError, storage_kind
from amq.search.space import Plan

log = logging.getLogger(__name__)
STUDY_NAME = "archive"
LEASE_S = 60.0  # journal storages: a trial whose lease was not renewed for this long is failed and queued again


@dataclass(frozen=True)
class Record:
    """One real evaluation."""

    plan: Plan
    divergence: float
    bytes: int
    avg_bits: float
    iteration: int
    source: str
    trial: int
    seconds: float


def open_storage(run_dir: Path | None, url: str | None = None, heartbeat_s: int = 30) -> optuna.storages.BaseStorage:
    """The run dir's journal file, a journal file elsewhere (`<path>.journal`, e.g. on a shared
    filesystem), or a shared database (PostgreSQL/MySQL/SQLite URL) with heartbeats: a worker that
    stops beating has its trial failed and re-queued (Optuna's RetryHeartbeatStaleTrialCallback),
    so another worker evaluates it. The one opener of driver and workers alike."""
    if url is None:
        assert run_dir is not None
        return JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    if storage_kind(url) == "journal":
        Path(url).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(Path(url).expanduser())))
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=2 * heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=None),
            )
    except SQLAlchemyError as exc:  # unreachable server, bad URL, wrong password
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise AMQConfigError(f"search storage {url!r}: cannot open it ({reason})") from None
    except ImportError:  # Optuna's wrapping of a missing database driver
        raise AMQConfigError(
            f"search storage {url!r}: no database driver for it (PostgreSQL's comes with pip install -e '.[distributed]')"
        ) from None


def _round(value: float) -> float:
    """Divergences are kept to 7 significant digits: the same plan scored in another process
    (another worker, a resumed run) then gives the same number, so the search decides the same."""
    return float(f"{value:.6e}")


class Archive:
    """Optuna-backed archive of (plan, divergence, bytes); param `p{i}` is layer i's bits."""

    def __init__(
        self,
        storage: optuna.storages.BaseStorage | str,
        names: Sequence[str],
        choices: Sequence[int],
        jsonl: Path | None = None,
        study_name: str = STUDY_NAME,
    ) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.heartbeat = isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
        self.study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            directions=["minimize", "minimize"],
            sampler=optuna.samplers.RandomSampler(seed=0),
            load_if_exists=True,
        )
        self.names = list(names)
        self.choices = list(choices)
        self.jsonl = jsonl
        self.dist = CategoricalDistribution(self.choices)

    # --- reading -------------------------------------------------------------------------
    @staticmethod
    def _params_of(t: optuna.trial.FrozenTrial) -> dict:
        return dict(t.system_attrs.get("fixed_params") or t.params)

    def _plan_of(self, t: optuna.trial.FrozenTrial) -> Plan | None:
        """The trial's plan; None for a trial that has none yet. A queued trial's plan is its
        fixed params, read first: a running trial's own params fill in one suggest at a time,
        so another process can see them half set."""
        params = self._params_of(t)
        if any(f"p{i}" not in params for i in range(len(self.names))):
            return None
        return tuple(int(params[f"p{i}"]) for i in range(len(self.names)))

    def records(self) -> list[Record]:
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            ua = t.user_attrs
            plan = self._plan_of(t)
            if plan is None:  # (a complete trial has every parameter; never the case)
                continue
            out.append(
                Record(
                    plan,
                    float(t.values[0]),
                    int(t.values[1]),
                    float(ua["avg_bits"]),
                    int(ua["iteration"]),
                    str(ua["source"]),
                    t.number,
                    float(ua.get("seconds", 0.0)),
                )
            )
        # canonical order (not trial numbers, which a resume changes), so that everything
        # fitted on the archive is the same whether or not the search was interrupted
        return sorted(out, key=lambda r: (r.iteration, r.plan))

    def _requeueable(self, t: optuna.trial.FrozenTrial) -> bool:
        """A trial that was queued with a whole plan (not one asked when nothing was left)."""
        return t.user_attrs.get("iteration") is not None and self._plan_of(t) is not None

    def known_plans(self, before: int | None = None) -> set[Plan]:
        """Plans completed, waiting or running: never enqueue these again (`before`: only those of
        earlier iterations, what an iteration's proposals avoided when it was first queued)."""
        states = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
        trials = self.study.get_trials(deepcopy=False, states=states)
        if before is not None:
            trials = [t for t in trials if t.user_attrs.get("iteration") is None or int(t.user_attrs["iteration"]) < before]
        plans = (self._plan_of(t) for t in trials)
        return {p for p in plans if p is not None}

    def waiting(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def running(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def queued(self, iteration: int) -> bool:
        """Whether every plan of `iteration` was queued. Queuing is one trial at a time: a driver
        killed in the middle leaves part of an iteration queued, which must not pass for all of it."""
        return bool(self.study.user_attrs.get(f"queued_{iteration}"))

    def mark_queued(self, iteration: int) -> None:
        self.study.set_user_attr(f"queued_{iteration}", True)

    # --- writing -------------------------------------------------------------------------
    def enqueue(self, plans: Sequence[Plan], iteration: int, source: str, avg_bits: Callable[[Plan], float]) -> int:
        """Queue plans not seen before; returns how many were queued."""
        known = self.known_plans()
        n = 0
        for plan in plans:
            if plan in known:
                continue
            known.add(plan)
            params = {f"p{i}": b for i, b in enumerate(plan)}
            self.study.enqueue_trial(params, user_attrs={"iteration": iteration, "source": source, "avg_bits": avg_bits(plan)})
            n += 1
        return n

    def requeue_stale(self) -> int:
        """Trials left RUNNING by a killed process are failed and their plans queued again: with
        heartbeats (DB storages) those whose process stopped beating, else (journal files) those
        whose lease ran out (a live worker renews its lease while it evaluates)."""
        if self.heartbeat:
            fail_stale_trials(self.study)
            return self._requeue_unbeaten()
        return self._requeue_expired()

    def _requeue_expired(self) -> int:
        now = time.time()
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            lease, holder = t.user_attrs.get("lease_until"), t.user_attrs.get("holder")
            if lease is None:  # no lease (yet): alive only while it was just asked (its lease follows at once)
                alive = t.datetime_start is not None and t.datetime_start.timestamp() > now - 10
            else:
                alive = lease > now and _holder_alive(holder)
            if alive:
                continue  # its process is (or may still be) evaluating it
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):  # finished meanwhile
                continue
            if self._requeueable(t):
                attrs = {k: v for k, v in t.user_attrs.items() if k not in ("lease_until", "holder")}
                self.study.enqueue_trial(self._params_of(t), user_attrs=attrs)
                n += 1
        if n:
            log.info("re-queued %d evaluation(s) whose process stopped (lease expired)", n)
        return n

    def take_one(self, evaluate: Callable[[Plan], tuple[float, int, float]], worker: str = "driver") -> Record | None:
        """Take one waiting trial (if any), score it, record it. Heartbeats are sent while it runs.

        With heartbeats, the driver may fail this trial as stale at any point (this process was
        starved for longer than the grace period) and queue a copy for another worker; then the
        result here is dropped and None returned: the copy is scored once, elsewhere."""
        if not self.waiting():
            return None
        with warnings.catch_warnings():  # we send the heartbeats ourselves (_keep_alive), not through optimize
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            trial = self.study.ask()
        beat = self._keep_alive(trial._trial_id)  # first: a trial with no beat (or lease) is never taken for dead
        try:
            if self.heartbeat:
                trial.set_user_attr("beating", True)
            plan = tuple(int(trial.suggest_categorical(f"p{i}", self.choices)) for i in range(len(self.names)))
            if trial.user_attrs.get("iteration") is None:  # asked with no waiting trial left (another worker was faster)
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                return None
            trial.set_user_attr("worker", worker)
            div, nbytes, secs = evaluate(plan)
            div = _round(div)
            trial.set_user_attr("seconds", secs)
            state = self.study.tell(trial, [div, nbytes], skip_if_finished=True).state
        except UpdateFinishedTrialError:
            state = TrialState.FAIL
        finally:
            beat.stop()
        if state != TrialState.COMPLETE:
            log.warning("trial %d was failed as stale and given to another worker; dropping this result", trial.number)
            return None
        ua = trial.user_attrs
        rec = Record(plan, div, nbytes, float(ua["avg_bits"]), int(ua["iteration"]), str(ua["source"]), trial.number, secs)
        self._append_jsonl(rec)
        return rec

    def _keep_alive(self, trial_id: int) -> _KeepAlive:
        """While this process evaluates the trial: heartbeats (database storages), else a lease
        (`lease_until`, renewed every third of LEASE_S) under this process's name (`holder`)."""
        storage = self.study._storage
        if self.heartbeat:
            rdb = cast(RDBStorage, storage)
            return _KeepAlive(lambda: rdb.record_heartbeat(trial_id), rdb.get_heartbeat_interval() or 30)
        storage.set_trial_user_attr(trial_id, "holder", f"{socket.gethostname()}:{os.getpid()}")  # a dead one here is seen at once
        return _KeepAlive(lambda: storage.set_trial_user_attr(trial_id, "lease_until", time.time() + LEASE_S), LEASE_S / 3)

    def _requeue_unbeaten(self) -> int:
        """A process killed between taking a trial and its first heartbeat leaves a RUNNING trial
        that heartbeats can never mark stale: fail and re-queue those once they are older than
        the grace period."""
        grace = 2 * (cast(RDBStorage, self.study._storage).get_heartbeat_interval() or 30)  # (heartbeats: database storage)
        now = datetime.datetime.now()
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not t.user_attrs.get("beating") and t.datetime_start and (now - t.datetime_start).total_seconds() > 2 * grace:
                try:
                    self.study.tell(t.number, state=TrialState.FAIL)
                except (RuntimeError, ValueError):
                    continue
                if self._requeueable(t):
                    self.study.enqueue_trial(self._params_of(t), user_attrs={k: v for k, v in t.user_attrs.items() if k != "beating"})
                    n += 1
        return n

    def evaluate_waiting(
        self, evaluate: Callable[[Plan], tuple[float, int, float]], progress: Callable[[Record], None] | None = None
    ) -> list[Record]:
        """Take and score every waiting trial; `evaluate(plan) -> (divergence, bytes, seconds)`."""
        done: list[Record] = []
        while True:
            rec = self.take_one(evaluate)  # checks for a waiting trial itself
            if rec is None:
                if not self.waiting():
                    return done
                continue  # lost a race for a trial; others wait
            done.append(rec)
            if progress:
                progress(rec)

    def drain(self, evaluate, progress=None, driver_evaluates: bool = True, poll_s: float = 0.5) -> None:
        """Until nothing is waiting or running: evaluate here (unless the driver only waits), and
        fail the trials of workers that stopped beating so that they are queued again."""
        while True:
            if driver_evaluates:
                self.evaluate_waiting(evaluate, progress)
            self.requeue_stale()
            if not self.waiting() and not self.running():
                return
            time.sleep(poll_s)

    # --- mirror --------------------------------------------------------------------------
    def _append_jsonl(self, rec: Record) -> None:
        if self.jsonl is None:
            return
        try:
            with self.jsonl.open("a") as f:
                f.write(json.dumps(self._row(rec)) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # the study holds the evaluation; the mirror is rewritten from it on resume
            raise AMQConfigError(
                f"{self.jsonl}: cannot write it ({exc.strerror or exc}); the search's study keeps every evaluation"
            ) from None

    def _row(self, rec: Record) -> dict:
        row = asdict(rec)
        row["plan"] = list(rec.plan)
        return row

    def rewrite_jsonl(self) -> None:
        """Make archive.jsonl exactly the study's completed trials (after a resume, say)."""
        if self.jsonl is None:
            return
        tmp = self.jsonl.with_suffix(".tmp")
        try:
            with tmp.open("w") as f:
                for rec in self.records():
                    f.write(json.dumps(self._row(rec)) + "\n")
            tmp.replace(self.jsonl)
        except OSError as exc:  # disk full, read-only: the study and the old mirror are intact
            tmp.unlink(missing_ok=True)
            raise AMQConfigError(
                f"{self.jsonl}: cannot write it ({exc.strerror or exc}); the search's study keeps every evaluation"
            ) from None


def _holder_alive(holder: str | None) -> bool:
    """False only when the holder is a process of this host that no longer exists."""
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's (or unknown): only its lease can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _KeepAlive:
    """Calls `beat` now and then every `interval` seconds in a thread until stopped, or until the
    trial was taken back (failed as stale by the driver) and `beat` is refused."""

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self.beat, self.interval = beat, interval
        self.stopped = threading.Event()
        beat()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except (UpdateFinishedTrialError, RuntimeError):
                return

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
