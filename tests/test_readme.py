"""The README is the first thing a user reads: every link in it resolves, and its table of what a
run writes names exactly the files a run leaves (the run itself is checked in test_search.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "kernels" / "README.md", *sorted((ROOT / "benchmarks").rglob("*.md"))]  # every benchmark page too
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FILE_LIKE = re.compile(r"^[\w.<>/-]+\.(png|json|jsonl|log|yaml)$|^[\w.-]+/$")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    missing = []
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def run_dir_files() -> set[str]:
    """Every file name the README's "What a run writes" table names (first column, and file names in the text)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## What a run writes", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        first, _, rest = row[2:].partition(" | ")
        names.update(n for n in re.findall(r"`([^`]+)`", first))
        names.update(n for n in re.findall(r"`([^`]+)`", rest) if FILE_LIKE.match(n))
    return names


def test_the_run_dir_table_is_parsed():
    names = run_dir_files()
    assert {"archive.jsonl", "front_latest.png", "run.log", "state.json", "plans/<budget>bits.json", "wandb/"} <= names


def check_run_dir_against_readme(run: Path, wandb: bool = True) -> None:
    """Every file the README lists exists in `run`, and every entry of `run` is listed."""
    names = run_dir_files()
    for name in names:
        if name == "wandb/" and not wandb:
            continue
        if "<" in name:  # plans/<budget>bits.json
            folder, pattern = name.split("/", 1)
            glob = re.sub(r"<[^>]+>", "*", pattern)
            assert list((run / folder).glob(glob)), f"README lists {name}; nothing like it in {run}"
        else:
            assert (run / name.rstrip("/")).exists(), f"README lists {name}; {run} has no such file"
    listed = {n.split("/", 1)[0] for n in names} | {n.rstrip("/") for n in names}
    unlisted = sorted(p.name for p in run.iterdir() if p.name not in listed)
    assert not unlisted, f"{run} holds files the README's table does not list: {unlisted}"
