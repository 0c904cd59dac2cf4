"""`python -m amq.run`: the AMQ search, composed by Hydra. Prints the run dir's outputs."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from amq.cli import fail
from amq.config import AMQConfigError, register_configs, to_object
from amq.rundir import check_writable

register_configs()


def _default_run_root() -> Path:
    """The fixed part of conf/config.yaml's hydra.run.dir (before its first interpolation)."""
    import yaml

    raw = str(yaml.safe_load((Path(__file__).parents[1] / "conf" / "config.yaml").read_text())["hydra"]["run"]["dir"])
    return Path(raw.split("${")[0] or ".")


def cli() -> None:
    """The entry point: the run dir checked first (one line, exit 2), then Hydra and `main`."""
    argv = sys.argv[1:]
    other = ("-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "-sc", "--shell-completion")
    if not any(a.split("=", 1)[0] in other for a in argv):  # a sweep, or Hydra only printing
        given = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+") == "hydra.run.dir"]
        try:
            check_writable(Path(given[-1]) if given else _default_run_root())
        except AMQConfigError as exc:
            fail(exc)
    main()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> float | None:
    """Run one search; returns the first budget's plan divergence (after the final quantizer; for sweepers)."""
    from amq.search.loop import run_search

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    signal.signal(signal.SIGINT, _first_interrupt)
    try:
        cfg = to_object(dcfg)
        result = run_search(cfg, run_dir)
    except AMQConfigError as exc:
        fail(exc)
    except OSError as exc:  # disk full, read-only or vanished run dir, from any library writing into it
        where = exc.filename or run_dir
        fail(f"{where}: {exc.strerror or exc}; what was evaluated is kept in {run_dir}; fix this and continue with resume=true")
    except KeyboardInterrupt:
        _close_progress_bars()  # else they redraw after the message, at exit
        print(interrupted_message(run_dir, sys.argv[1:]), file=sys.stderr)
        sys.exit(130)
    for choice in result.choices:
        best = choice.best
        if best is not None:
            after = f", {best.final:.4g} after {cfg.final.method}" if best.final is not None else ""
            logging.getLogger("amq").info(
                "budget %g: %.3f bits from %s, divergence %.4g by the proxy%s -> %s",
                choice.budget, best.avg_bits, "+".join(best.sources), best.proxy, after, result.run_dir / "plans",
            )  # fmt: skip
    first = result.choices[0].best if result.choices else None
    if first is None:
        return None
    return first.final if first.final is not None else first.proxy


def _first_interrupt(signum, frame) -> None:
    """Ctrl-C: unwind (what is saved stays saved) and say how to resume; a second one exits at once."""
    signal.signal(signal.SIGINT, _exit_now)
    raise KeyboardInterrupt


def _exit_now(signum, frame) -> None:
    print("interrupted again: exiting now", file=sys.stderr)
    os._exit(130)


def _close_progress_bars() -> None:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def interrupted_message(run_dir: Path, argv: list[str]) -> str:
    """One line: what the run dir keeps and the exact command that continues the search."""
    archive = run_dir / "archive.jsonl"
    saved = sum(1 for line in archive.read_text().splitlines() if line.strip()) if archive.exists() else 0
    args = [a for a in argv if not a.startswith(("hydra.run.dir=", "resume=", "++resume=", "+resume="))]
    command = shlex.join(["python", "-m", "amq.run", *args, f"hydra.run.dir={run_dir}", "resume=true"])
    return f"interrupted: {saved} evaluated plans are saved in {run_dir}; continue with: {command}"


if __name__ == "__main__":
    cli()
