"""A two-job Hydra multirun through the submitit launcher: on a real one-node SLURM cluster
started here (launchers/slurm_single_node.sh; needs root and Debian's slurm-wlm + munge, which
.ci/run installs), and through submitit's local executor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "logger=none",
    "search.initial_random=6",
    "search.iterations=1",
    "search.candidates=4",
    "optimizer.population=16",
    "optimizer.generations=3",
    "predictor=rbf",
    "data.num_samples=4",
    "search.budgets=[2.5],[3.0]",
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        pytest.skip("needs root and slurm-wlm + munge (apt-get install slurm-wlm munge)")
    state = tmp_path_factory.mktemp("slurm")
    script = ROOT / "launchers" / "slurm_single_node.sh"
    r = subprocess.run(["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    yield {"SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)


def _sweep(model: Path, sweep_dir: Path, launcher: list[str], env: dict) -> None:
    cmd = [sys.executable, "-m", "amq.run", "-m", f"model.path={model}", f"hydra.sweep.dir={sweep_dir}", *launcher, *SMALL]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2
    for run, budget in zip(runs, ("2.5", "3"), strict=True):
        plan = json.loads((run / "plans" / f"{budget}bits.json").read_text())
        assert plan["budget"]["value"] == float(budget) and plan["avg_bits"] <= float(budget) + 1e-9
        assert (run / "archive.jsonl").is_file() and (run / "front.png").is_file()


@pytest.mark.slow
def test_multirun_on_a_real_slurm_cluster(tmp_path, small_model_dir, slurm):
    launcher = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
    _sweep(small_model_dir, tmp_path / "sweep", launcher, slurm)
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # submitit's job folders: it went through sbatch


@pytest.mark.slow
def test_multirun_through_submitit_local_executor(tmp_path, small_model_dir):
    _sweep(small_model_dir, tmp_path / "sweep", ["hydra/launcher=local"], {})
