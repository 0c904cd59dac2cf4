"""The run directory: the names of the files a search keeps there, atomic JSON writes, and the
check made before a run starts, so that a bad run dir is one line and never a silent restart.

A search's source of truth is its Optuna study (`optuna.journal` in the run dir, or a shared
database); `archive.jsonl` is the same evaluations as plain JSON lines, rewritten from the study.
If the study lost evaluations that `archive.jsonl` still lists (an emptied or truncated journal),
resuming would re-run them and overwrite the archive: `check_run_dir` refuses that before any
model is loaded.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from amq.config import AMQConfigError

log = logging.getLogger(__name__)

JOURNAL = "optuna.journal"
ARCHIVE = "archive.jsonl"
STATE = "state.json"

# Optuna's journal operation that finishes a trial, and the COMPLETE state (optuna.storages.journal, optuna.trial.TrialState)
_SET_TRIAL_STATE_VALUES = 6
_COMPLETE = 1


def check_writable(run_dir: Path) -> None:
    """Before Hydra creates `run_dir` (its failure there is a traceback): the run dir, or the nearest of its
    parents that exists, must be a directory this process can create files in."""
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise AMQConfigError(f"{run_dir}: cannot create the run dir, {probe} is not a directory; pick another hydra.run.dir")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise AMQConfigError(f"{run_dir}: cannot write there ({exc.strerror or exc}); pick another hydra.run.dir") from None


def write_json_atomic(path: Path, doc: dict) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AMQConfigError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def read_json(path: Path, what: str) -> dict:
    """A JSON document the run wrote; a garbled one is a one-line error naming the file."""
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AMQConfigError(f"{path}: not valid JSON ({what})") from None
    if not isinstance(doc, dict):
        raise AMQConfigError(f"{path}: expected a JSON object ({what})")
    return doc


def archive_rows(run_dir: Path) -> int:
    """Evaluations listed in archive.jsonl (0 when there is none)."""
    path = run_dir / ARCHIVE
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if line.strip())


def drop_cut_last_line(path: Path) -> None:
    """A crash while appending leaves a journal's last line cut short. Optuna skips it when
    reading but appends after it, garbling the next line: cut it off before resuming."""
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    if path.read_bytes().endswith(b"\n") or path.stat().st_size == 0:
        return
    with get_lock_file(JournalFileSymlinkLock(str(path))):  # Optuna's own lock: no worker appends meanwhile
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[: data.rfind(b"\n") + 1]
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(keep)
            tmp.replace(path)
            log.warning("%s: dropped its last line, cut short by a crash while writing (%d bytes)", path, len(data) - len(keep))


def journal_completed(path: Path) -> int:
    """Finished evaluations in an Optuna journal file; a garbled line is a one-line error. A last
    line cut short (a crash mid-write) is what Optuna itself skips, so it is allowed."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    complete = 0
    for i, line in enumerate(lines, start=1):
        try:
            op = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if i == len(lines) and not data.endswith(b"\n"):
                log.warning("%s: its last line was cut short (a crash while writing); Optuna skips it", path)
                break
            raise AMQConfigError(
                f"{path}: line {i} is not valid JSON (garbled or truncated); the search cannot resume from it. "
                f"Its evaluations are in {ARCHIVE}; start a new run dir"
            ) from None
        if isinstance(op, dict) and op.get("op_code") == _SET_TRIAL_STATE_VALUES and op.get("state") == _COMPLETE:
            complete += 1
    return complete


def check_run_dir(run_dir: Path, resume: bool, shared_storage: bool) -> None:
    """Before any model is loaded: a run dir holding a search needs resume=true, and one to be
    resumed must hold a study that still has every evaluation its archive.jsonl lists."""
    journal, state = run_dir / JOURNAL, run_dir / STATE
    rows = archive_rows(run_dir)
    started = journal.exists() and journal.stat().st_size > 0  # a worker opening the journal first leaves it empty
    if not resume:
        if started or rows:
            raise AMQConfigError(f"{run_dir} already holds a search; pass resume=true to continue it")
        return
    if state.exists():
        read_json(state, f"the W&B run id; delete {STATE} to log the resumed search into a new W&B run")
    if shared_storage:  # the study lives in the database; its evaluations are checked against the archive once it is open
        return
    if not journal.exists():
        if rows:
            raise AMQConfigError(
                f"{run_dir}: {ARCHIVE} lists {rows} evaluations but {JOURNAL} is missing; the search cannot resume. "
                "Restore the journal, or start a new run dir"
            )
        log.warning("resume=true, but %s holds no search (no %s): starting a new one there", run_dir, JOURNAL)
        return
    done = journal_completed(journal)
    if done < rows:
        raise AMQConfigError(
            f"{journal}: holds {done} finished evaluations but {ARCHIVE} lists {rows} (emptied or truncated?); resuming would "
            f"re-run them and overwrite the archive. Restore the journal, or start a new run dir"
        )
    drop_cut_last_line(journal)
