"""The built wheel, installed apart from the source tree, runs the README's command from another
directory: its configs ship inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_installed_wheel_runs_from_another_directory(tmp_path, small_model_dir):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)]
    r = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = wheels.glob("amq-*.whl")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def amq_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "amq.run", *args], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=900)

    where = subprocess.run(
        [sys.executable, "-c", "import amq; print(amq.__file__)"], capture_output=True, text=True, cwd=elsewhere, env=env
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel's copy, not the source tree
    r = amq_run("--cfg", "job")
    assert r.returncode == 0 and "builtin:tiny-llama" in r.stdout, r.stderr[-2000:]
    small = [
        f"model.path={small_model_dir}",
        "logger=none",
        "search.initial_random=6",
        "search.iterations=1",
        "search.candidates=4",
        "optimizer.generations=3",
    ]
    r = amq_run(*small, "hydra.run.dir=run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (elsewhere / "run" / "plans" / "3bits.json").exists()
