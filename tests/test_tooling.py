"""The linters a developer runs (pre-commit) are the ones CI runs (.ci/run, from pyproject.toml)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_pre_commit_runs_the_ruff_that_ci_installs():
    (pin,) = re.findall(r'^test = \[.*"ruff==([\d.]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M)  # no tomllib on 3.10
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    (rev,) = [r["rev"] for r in hooks if r["repo"].endswith("/ruff-pre-commit")]
    assert rev == f"v{pin}"
    constraints = (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
    assert f"ruff=={pin}" in constraints
