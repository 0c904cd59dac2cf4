"""Shared fixtures: a small trained Llama built on the fly, and the optional ../shared assets.

The reference model and data of the workplace are reached only through `--shared DIR` or the
AMQ_SHARED environment variable; tests that need them skip cleanly without.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# before torch loads OpenMP (as amq/__init__.py does for the CLIs): spinning threads made the
# suite many times slower on a loaded 2-core machine; subprocesses inherit it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shared", default=os.environ.get("AMQ_SHARED"), help="folder with models/ and data/ for reference tests")


@pytest.fixture(scope="session")
def shared_dir(request: pytest.FixtureRequest) -> Path:
    value = request.config.getoption("--shared")
    if not value or not Path(value).is_dir():
        pytest.skip("reference assets not given (--shared or AMQ_SHARED)")
    return Path(value)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block Llama (hidden 128) trained for a few steps: real enough that bits matter."""
    from amq.tiny import TinyRecipe, build_tiny_model

    out = tmp_path_factory.mktemp("models") / "small-llama"
    return build_tiny_model(out, TinyRecipe(num_layers=2, steps=150, batch_size=8, vocab_size=1024))


@pytest.fixture(scope="session")
def small_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second family: a 2-block Qwen2 (grouped-query attention, q/k/v biases), trained like the Llama."""
    from amq.tiny import TinyRecipe, build_tiny_model

    out = tmp_path_factory.mktemp("models") / "small-qwen2"
    return build_tiny_model(out, TinyRecipe(num_layers=2, steps=150, batch_size=8, vocab_size=1024, arch="qwen2", num_kv_heads=2))


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _free_port() -> int:
    """A port nothing listens on now (a fixed one collides with a server another run left behind)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the test session (launchers/postgres_local.sh; .ci/run installs Debian's
    postgresql); its URL. Skips where there is none or no psycopg."""
    pytest.importorskip("psycopg")
    script = ROOT / "launchers" / "postgres_local.sh"
    state = Path(tempfile.mkdtemp(prefix="amq-pg-"))  # outside pytest's private tmp: the server runs as user postgres
    r = subprocess.run(["bash", str(script), "start", str(state), str(_free_port())], capture_output=True, text=True, timeout=120)
    if r.returncode == 3:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    yield r.stdout.strip()
    subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)
    shutil.rmtree(state, ignore_errors=True)
