"""benchmarks/kernels/gpu_check.py, the GPU correctness sweep, run end to end on the CPU under Triton's
interpreter with small shapes, so that the script's own code (its configs, case loop and checks)
cannot rot between the rare GPU calls. Every config it names runs here; the inline-PTX variants
take the interpreter's exact loop, their PTX is covered by test_pair_ptx and test_compile_sm90."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_every_path_on_cpu_without_a_failure():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT / "kernels")}
    cmd = [
        sys.executable,
        "benchmarks/kernels/gpu_check.py",
        "--device",
        "cpu",
        "--shapes",
        "128x256g128,72x256g64",
        "--group-nk",
        "128x256",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cases, failed = map(int, re.search(r"(\d+) cases, (\d+) failed", r.stdout).groups())
    assert failed == 0, r.stdout[-3000:]
    assert cases > 300  # every bit-width, dtype, input scale and path of the GPU run
    for path in (
        "M=1 serial",
        "M=1 fp32-loop",
        "M=1 no-guard",
        "M=1 subnormal",
        "M=4 rows4",
        "M=16 pairs-swap",
        "M=64 pairs",
        "M=300 default",
        "group 3",
    ):
        assert path in r.stdout, path
