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


def test_every_relative_markdown_link_resolves():
    """README, benchmarks' pages and their results: a moved file leaves no dead link behind."""
    import subprocess

    import pytest

    r = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=False)
    files = r.stdout.split()
    if r.returncode or not files:
        pytest.skip("not a git checkout")
    link = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
    dead = [
        f"{f} -> {target}"
        for f in files
        if (ROOT / f).exists()
        for target in link.findall((ROOT / f).read_text())
        if "://" not in target and not target.startswith("mailto:") and not (ROOT / f).parent.joinpath(target).exists()
    ]
    assert not dead, dead
