"""Shared fixtures: a small trained Llama built on the fly, and the optional ../shared assets.

The reference model and data of the workplace are reached only through `--shared DIR` or the
AMQ_SHARED environment variable; tests that need them skip cleanly without.
"""

from __future__ import annotations

import os
from pathlib import Path

# before torch loads OpenMP (as amq/__init__.py does for the CLIs): spinning threads made the
# suite many times slower on a loaded 2-core machine; subprocesses inherit it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest


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
