"""The archive of real evaluations, kept in an Optuna study on disk so that nothing is lost.

Each candidate plan is enqueued as a WAITING trial (with its iteration and source as user
attributes), taken with `ask`, scored, and completed with `tell(divergence, bytes)`. The study
lives in a Journal file in the run dir: a killed search resumes from it, re-running only the
evaluation that was in flight. `archive.jsonl` is a readable mirror, rewritten from the study.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from amq.search.space import Plan

log = logging.getLogger(__name__)
STUDY_NAME = "archive"


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


def open_storage(run_dir: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))


class Archive:
    """Optuna-backed archive of (plan, divergence, bytes); param `p{i}` is layer i's bits."""

    def __init__(
        self, storage: optuna.storages.BaseStorage | str, names: Sequence[str], choices: Sequence[int], jsonl: Path | None = None
    ) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            study_name=STUDY_NAME,
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
    def _plan_of(self, t: optuna.trial.FrozenTrial) -> Plan:
        params = t.params if t.params else t.system_attrs.get("fixed_params", {})
        return tuple(int(params[f"p{i}"]) for i in range(len(self.names)))

    def records(self) -> list[Record]:
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            ua = t.user_attrs
            out.append(
                Record(
                    self._plan_of(t),
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

    def known_plans(self) -> set[Plan]:
        """Plans completed, waiting or running: never enqueue these again."""
        states = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
        return {self._plan_of(t) for t in self.study.get_trials(deepcopy=False, states=states)}

    def waiting(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def iterations_started(self) -> set[int]:
        states = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
        return {int(t.user_attrs["iteration"]) for t in self.study.get_trials(deepcopy=False, states=states)}

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
        """Trials left RUNNING by a killed process are failed and their plans queued again."""
        stale = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in stale:
            self.study.tell(t.number, state=TrialState.FAIL)
            self.study.enqueue_trial(dict(t.params) or dict(t.system_attrs.get("fixed_params", {})), user_attrs=dict(t.user_attrs))
        if stale:
            log.info("re-queued %d evaluation(s) interrupted by the previous run", len(stale))
        return len(stale)

    def evaluate_waiting(
        self, evaluate: Callable[[Plan], tuple[float, int, float]], progress: Callable[[Record], None] | None = None
    ) -> list[Record]:
        """Take and score every waiting trial; `evaluate(plan) -> (divergence, bytes, seconds)`."""
        done = []
        while self.waiting():
            trial = self.study.ask()
            plan = tuple(int(trial.suggest_categorical(f"p{i}", self.choices)) for i in range(len(self.names)))
            div, nbytes, secs = evaluate(plan)
            trial.set_user_attr("seconds", secs)
            self.study.tell(trial, [div, nbytes])
            ua = trial.user_attrs
            rec = Record(plan, div, nbytes, float(ua["avg_bits"]), int(ua["iteration"]), str(ua["source"]), trial.number, secs)
            self._append_jsonl(rec)
            done.append(rec)
            if progress:
                progress(rec)
        return done

    # --- mirror --------------------------------------------------------------------------
    def _append_jsonl(self, rec: Record) -> None:
        if self.jsonl is None:
            return
        with self.jsonl.open("a") as f:
            f.write(json.dumps(self._row(rec)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _row(self, rec: Record) -> dict:
        row = asdict(rec)
        row["plan"] = list(rec.plan)
        return row

    def rewrite_jsonl(self) -> None:
        """Make archive.jsonl exactly the study's completed trials (after a resume, say)."""
        if self.jsonl is None:
            return
        tmp = self.jsonl.with_suffix(".tmp")
        with tmp.open("w") as f:
            for rec in self.records():
                f.write(json.dumps(self._row(rec)) + "\n")
        tmp.replace(self.jsonl)
