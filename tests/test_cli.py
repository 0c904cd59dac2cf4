"""What a newcomer meets at the command line: --help everywhere, Ctrl-C that says how to go on,
and a cache build that two processes do not repeat."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amq import tiny
from amq.run import interrupted_message

ROOT = Path(__file__).resolve().parents[1]
CLIS = ["amq.run", "amq.evaluate", "amq.plan", "amq.report", "amq.worker", "amq.export"]


@pytest.mark.parametrize("module", CLIS)
def test_every_cli_prints_help_and_exits_0(module, tmp_path):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout.lower()
    assert "usage" in out or "powered by hydra" in out, r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("module,args", [("amq.plan", ["run_dir=x"]), ("amq.plan", ["nope=1"]), ("amq.worker", []), ("amq.export", [])])
def test_bad_cli_arguments_exit_2_with_usage(module, args, tmp_path):
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert "usage" in r.stderr.lower() and "Traceback" not in r.stderr


def test_interrupted_message_names_what_is_saved_and_the_resume_command(tmp_path):
    (tmp_path / "archive.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    line = interrupted_message(tmp_path, ["search.iterations=3", "hydra.run.dir=old", "resume=false", "data.path=my file.txt"])
    assert "\n" not in line
    assert line.startswith(f"interrupted: 2 evaluated plans are saved in {tmp_path}")
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[:3] == ["python", "-m", "amq.run"]
    assert command[3:] == ["search.iterations=3", "data.path=my file.txt", f"hydra.run.dir={tmp_path}", "resume=true"]


def _archive_lines(run_dir: Path) -> int:
    p = run_dir / "archive.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


SMALL = ["logger=none", "search.initial_random=10", "search.iterations=2", "search.candidates=6", "optimizer.generations=4"]


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_the_resume_finishes(tmp_path, small_model_dir):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "amq.run", f"model.path={small_model_dir}", *SMALL, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _archive_lines(run_dir) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: ") and f"hydra.run.dir={run_dir} resume=true" in line
    saved = _archive_lines(run_dir)
    assert saved >= 3 and f"interrupted: {saved} evaluated plans" in line

    resume = shlex.split(line.split("continue with: ", 1)[1])
    assert resume[:3] == ["python", "-m", "amq.run"]
    r = subprocess.run([sys.executable, *resume[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (run_dir / "archive.jsonl").read_text().splitlines()]
    assert len(rows) > saved and (run_dir / "pareto.json").exists()
    assert len({row["trial"] for row in rows}) == len(rows)  # nothing evaluated twice


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path, small_model_dir):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "amq.run", f"model.path={small_model_dir}", *SMALL, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _archive_lines(run_dir) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert time.time() - t0 < 30
    assert "Traceback" not in err


def test_a_second_process_waits_for_the_cache_build_instead_of_repeating_it(tmp_path, monkeypatch, caplog):
    """Two first runs at once: one builds the embedded model, the other waits for it and says so."""
    recipe = tiny.TinyRecipe(steps=1, seed=12345)
    monkeypatch.setitem(tiny.BUILTIN_RECIPES, "lock-test", recipe)
    monkeypatch.setenv("AMQ_CACHE_DIR", str(tmp_path))
    builds = []

    def slow_build(out_dir, recipe):
        builds.append(out_dir)
        time.sleep(1.5)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(tiny, "build_tiny_model", slow_build)
    results = []

    def resolve():
        results.append(tiny.resolve_builtin("builtin:lock-test"))

    with caplog.at_level(logging.WARNING, logger="amq.tiny"):
        threads = [threading.Thread(target=resolve) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.3)
        for t in threads:
            t.join(timeout=60)
    assert len(builds) == 1
    assert results[0] == results[1] == tmp_path / f"lock-test-{recipe.key()}"
    assert any("another process is building lock-test; waiting" in r.message for r in caplog.records)
