"""Evaluation throughput of one search with 1, 2 and 4 worker processes on this machine.

    python benchmarks/search/workers_throughput.py            # needs Debian's postgresql (launchers/postgres_local.sh)

The driver only enqueues (search.driver_evaluates=false) the initial archive of the embedded
default model; N `amq.worker` processes evaluate it through a PostgreSQL storage. Throughput is
completed plans per second between the first and the last completion (worker start-up, which
loads the model and builds the proxy bank, is not counted). Writes benchmarks/workers_throughput.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]
PLANS = 48


def run(n_workers: int, url: str) -> tuple[float, int]:
    study = f"throughput-{n_workers}"
    run_dir = Path(tempfile.mkdtemp(prefix="amq-tp-"))
    worker = [sys.executable, "-m", "amq.worker", f"storage={url}", f"study={study}", "model=builtin:tiny-llama", "poll_s=0.2"]
    # the machine's cores are shared out: each worker gets cores / N threads (a GPU node gives each its own GPU)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n_workers))}
    workers = [subprocess.Popen(worker, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n_workers)]
    driver = [
        sys.executable, "-m", "amq.run", "logger=none", f"hydra.run.dir={run_dir}", f"search.storage={url}", f"search.study={study}",
        "search.driver_evaluates=false", f"search.initial_random={PLANS}", "search.ilp_seeds=0", "search.iterations=0",
    ]  # fmt: skip
    subprocess.run(driver, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for w in workers:
        w.wait(timeout=600)
    trials = optuna.load_study(study_name=study, storage=url).get_trials(states=(TrialState.COMPLETE,))
    ends = sorted(t.datetime_complete for t in trials if t.user_attrs.get("iteration") == 0)
    shutil.rmtree(run_dir, ignore_errors=True)
    return (len(ends) - 1) / (ends[-1] - ends[0]).total_seconds(), len(ends)


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    state = tempfile.mkdtemp(prefix="amq-pg-")
    script = ROOT / "launchers" / "postgres_local.sh"
    url = subprocess.run(["bash", str(script), "start", state, "55434"], check=True, capture_output=True, text=True).stdout.strip()
    try:
        rows = [(n, *run(n, url)) for n in (1, 2, 4)]
    finally:
        subprocess.run(["bash", str(script), "stop", state])
        shutil.rmtree(state, ignore_errors=True)
    base = rows[0][1]
    lines = [
        "# Evaluation throughput with 1, 2, 4 workers (one search, PostgreSQL storage)",
        "",
        "Command: `python benchmarks/search/workers_throughput.py`",
        "",
        f"Embedded default model, initial archive of {PLANS} random plans + 3 uniform, the driver only enqueues;"
        f" {os.cpu_count()} CPU cores, each worker a separate process with its own model and proxy bank and"
        " cores/N torch threads (OMP_NUM_THREADS). On CPUs the workers share the same cores, so this measures the"
        " mechanism's overhead and scaling up to the core count; on a GPU node each worker has its own device.",
        "",
        "| workers | plans evaluated | plans/s | speed-up vs 1 worker |",
        "|---|---|---|---|",
        *[f"| {n} | {cnt} | {tp:.2f} | {tp / base:.2f}x |" for n, tp, cnt in rows],
        "",
    ]
    (ROOT / "benchmarks" / "search" / "results" / "workers_throughput.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
