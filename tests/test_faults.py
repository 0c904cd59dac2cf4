"""Faults a run dir meets (issue 18): each is one clear line and exit code 2 before any model
is loaded, or a clean resume; never a silent restart that loses evaluations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amq.config import AMQConfigError
from amq.rundir import check_run_dir, check_writable, journal_completed, write_json_atomic

SMALL = ["logger=none", "search.initial_random=8", "search.iterations=1", "search.candidates=4", "optimizer.generations=3", "final=none"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_model_dir) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    r = subprocess.run(
        [sys.executable, "-m", "amq.run", f"model.path={small_model_dir}", *SMALL, f"hydra.run.dir={run}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _resume(run: Path):
    """The run's own command line again (its model included), with resume=true."""
    overrides = [o for o in (run / ".hydra" / "overrides.yaml").read_text().splitlines() if o.startswith("- ")]
    model = next(o[2:] for o in overrides if o.startswith("- model.path="))
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "amq.run", model, *SMALL, f"hydra.run.dir={run}", "resume=true"], capture_output=True, text=True, timeout=600
    )
    return r, time.perf_counter() - t0


def _one_line_error(r, *needles: str) -> None:
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for n in needles:
        assert n in last, last


def test_an_emptied_journal_is_refused_and_the_archive_kept(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = (run / "archive.jsonl").read_text()
    (run / "optuna.journal").write_text("")
    r, _ = _resume(run)
    _one_line_error(r, "optuna.journal: holds 0 finished evaluations but archive.jsonl lists", "start a new run dir")
    assert (run / "archive.jsonl").read_text() == before  # nothing overwritten
    assert not list(run.glob("*.tmp"))


def test_a_truncated_journal_is_refused(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    data = (run / "optuna.journal").read_bytes()
    (run / "optuna.journal").write_bytes(data[: len(data) // 3])  # cut mid-line: fewer trials than the archive lists
    r, _ = _resume(run)
    _one_line_error(r, "optuna.journal: holds", "emptied or truncated")


def test_a_garbled_journal_line_is_refused(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    lines = (run / "optuna.journal").read_text().splitlines(keepends=True)
    lines[3] = "{garbage\n"
    (run / "optuna.journal").write_text("".join(lines))
    r, _ = _resume(run)
    _one_line_error(r, "optuna.journal: line 4 is not valid JSON")


def test_a_garbled_state_file_is_refused(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    (run / "state.json").write_text("{not json")
    r, _ = _resume(run)
    _one_line_error(r, "state.json: not valid JSON", "delete state.json")


def test_a_missing_journal_with_an_archive_is_refused(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    (run / "optuna.journal").unlink()
    r, _ = _resume(run)
    _one_line_error(r, "archive.jsonl lists", "optuna.journal is missing")


def test_an_intact_run_resumes_cleanly(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = (run / "archive.jsonl").read_text().splitlines()
    r, _ = _resume(run)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "archive.jsonl").read_text().splitlines() == before  # finished: nothing evaluated again or lost


def test_a_journal_whose_last_line_was_cut_mid_write_still_resumes(finished_run, tmp_path):
    """What a crash while appending leaves: Optuna skips the partial line; so do we."""
    run = _copy(finished_run, tmp_path)
    with (run / "optuna.journal").open("a") as f:
        f.write('{"op_code":9,"worker_id":"x","trial_id":0,"system_')
    assert journal_completed(run / "optuna.journal") == len((run / "archive.jsonl").read_text().splitlines())
    r, _ = _resume(run)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_run_dir_with_only_an_archive_needs_resume(tmp_path):
    (tmp_path / "archive.jsonl").write_text('{"plan": [2]}\n')
    with pytest.raises(AMQConfigError, match="already holds a search"):
        check_run_dir(tmp_path, resume=False, shared_storage=False)


def test_atomic_write_leaves_no_stray_file_when_it_cannot_write(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if (ro / "probe").exists() or _writable(ro):
            pytest.skip("running as a user that can write into a read-only directory (root)")
        with pytest.raises(AMQConfigError, match="cannot write it"):
            write_json_atomic(ro / "x.json", {"a": 1})
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o700)


def test_atomic_write_leaves_no_stray_file_when_the_rename_fails(tmp_path, monkeypatch):
    """The same as root, who can write into a read-only directory: the rename itself refused."""
    import errno

    def refuse(self, target):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(AMQConfigError, match=r"cannot write it \(Read-only file system\)"):
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert not list(tmp_path.iterdir())


def test_a_run_dir_that_cannot_be_created_is_one_line_before_hydra(tmp_path):
    (tmp_path / "a-file").write_text("")
    r = subprocess.run(
        [sys.executable, "-m", "amq.run", "logger=none", f"hydra.run.dir={tmp_path / 'a-file' / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_line_error(r, "a-file is not a directory", "hydra.run.dir")


def test_a_read_only_run_dir_is_one_line(tmp_path, monkeypatch):
    """What a read-only directory does to a process that may not write there (a non-root user)."""
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(AMQConfigError, match=r"cannot write there \(Permission denied\)"):
        check_writable(tmp_path / "outputs" / "run")
    monkeypatch.undo()
    check_writable(tmp_path / "fine" / "run")  # a missing dir under a writable one is fine


def _writable(d: Path) -> bool:
    try:
        (d / "probe").write_text("")
    except OSError:
        return False
    (d / "probe").unlink()
    return True


def test_write_json_atomic_round_trips(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_worker_that_opened_the_journal_first_does_not_block_the_driver(tmp_path):
    """`amq.worker storage=<run dir>/optuna.journal` started before the driver creates the file, empty."""
    from amq.search.archive import open_storage

    open_storage(None, str(tmp_path / "optuna.journal"))
    assert (tmp_path / "optuna.journal").exists()
    check_run_dir(tmp_path, resume=False, shared_storage=False)  # no error: nothing was searched there


def test_a_killed_worker_on_a_journal_file_has_its_trial_queued_again(tmp_path):
    """Journal storage has no heartbeat: a worker killed mid-evaluation leaves a RUNNING trial.
    The driver re-queues it when its holder is a dead process of this host, or when its lease
    runs out (another host); a live lease is left alone. Every plan ends evaluated exactly once."""
    import multiprocessing as mp

    from amq.search.archive import Archive, open_storage

    url = str(tmp_path / "shared.journal")
    names = ["a", "b", "c"]
    driver = Archive(open_storage(None, url), names, [2, 3, 4], tmp_path / "archive.jsonl", "s")
    plans = [(2, 2, 2), (3, 3, 3), (4, 4, 4), (2, 3, 4)]
    driver.enqueue(plans, 0, "test", lambda p: sum(p) / 3)

    def taken_by_a_process_that_dies() -> None:  # ask a trial in a child process, which then exits
        ctx = mp.get_context("spawn")
        proc = ctx.Process(target=_take_and_die, args=(url,))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0

    taken_by_a_process_that_dies()
    assert driver.running() == 1
    other_host = driver.study.ask()  # as if another machine holds it: only its lease can tell
    driver.study._storage.set_trial_user_attr(other_host._trial_id, "holder", "elsewhere:1")
    driver.study._storage.set_trial_user_attr(other_host._trial_id, "lease_until", time.time() + 3600)
    assert driver.requeue_stale() == 1  # the dead local holder's, at once; the live lease stays
    assert driver.running() == 1
    driver.study._storage.set_trial_user_attr(other_host._trial_id, "lease_until", time.time() - 1)
    scored = []
    driver.drain(lambda p: (scored.append(p) or float(sum(p)), 100 * sum(p), 0.01), poll_s=0.05)
    assert sorted(scored) == sorted(plans) and len(driver.records()) == len(plans)
    assert driver.running() == 0 and driver.waiting() == 0


def _take_and_die(url: str) -> None:
    from amq.search.archive import Archive, open_storage

    worker = Archive(open_storage(None, url), ["a", "b", "c"], [2, 3, 4], None, "s")
    worker.take_one(lambda p: os._exit(0))  # killed mid-evaluation: no tell, its lease stays RUNNING


def test_a_full_disk_while_mirroring_the_archive_is_one_line_and_leaves_no_stray_file(tmp_path, monkeypatch):
    """archive.jsonl is rewritten through archive.tmp: a write that fails (disk full) removes the
    temporary file, keeps the old mirror and the study, and says so in one line."""
    import errno

    from amq.search.archive import Archive, open_storage

    archive = Archive(open_storage(tmp_path), ["a", "b"], [2, 3, 4], tmp_path / "archive.jsonl")
    archive.enqueue([(2, 3), (4, 4)], 0, "test", lambda p: sum(p) / 2)
    archive.evaluate_waiting(lambda p: (float(sum(p)), 10 * sum(p), 0.0))
    before = (tmp_path / "archive.jsonl").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Archive, "_row", full)
    with pytest.raises(AMQConfigError, match=r"archive.jsonl: cannot write it \(No space left on device\)") as err:
        archive.rewrite_jsonl()
    assert "\n" not in str(err.value)
    assert not (tmp_path / "archive.tmp").exists() and (tmp_path / "archive.jsonl").read_text() == before
    assert len(archive.records()) == 2  # the study keeps every evaluation
