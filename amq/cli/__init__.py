"""The command line: every `python -m amq.<command>` entry point, each only wiring a library
function to its arguments. `python -m amq.run` (the search), `amq.evaluate`, `amq.plan`,
`amq.report`, `amq.worker` and `amq.export` are thin aliases of the modules here.

One convention for bad input (`one_line_errors`): a single line `error: ...` on stderr and exit
code 2, never a traceback; a bad or missing setting of a small tool prints its usage first.

All are composed by Hydra: `amq.run` and `amq.evaluate` from conf/ with `@hydra.main` (run dirs,
multirun); the small tools (`amq.plan`, `amq.worker`, `amq.report`, `amq.export`), which write no run
dir of their own, with Hydra's compose API from their typed schema in amq.config (`compose_tool`).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from amq.config import TOOL_SCHEMAS, AMQConfigError, register_configs

T = TypeVar("T")


def fail(message: object) -> NoReturn:
    print(f"error: {str(message).splitlines()[0] if str(message) else message}", file=sys.stderr)
    sys.exit(2)


def one_line_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """An entry point whose AMQConfigError (bad input found by the library) is one line, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AMQConfigError as exc:
            fail(exc)

    return wrapper


def compose_tool(prog: str, schema: str, argv: list[str], about: str, positional: str | None = None) -> Any:
    """A small tool's settings: Hydra's compose API over its schema (`amq.config.TOOL_SCHEMAS`), with
    Hydra's override grammar (key=value). `--help` lists the settings with their defaults (exit 0);
    a bad or missing setting prints usage and one line (exit 2). `positional`: the key a lone
    argument without `=` sets (`python -m amq.report DIR`)."""
    from hydra import compose, initialize
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    node = TOOL_SCHEMAS[schema]
    defaults = OmegaConf.structured(node)
    keys = [f.name for f in dataclasses.fields(node)]
    usage = f"usage: python -m {prog} " + " ".join(f"{k}=<{k}>" if OmegaConf.is_missing(defaults, k) else f"[{k}=...]" for k in keys)
    if any(a in ("-h", "--help") for a in argv):
        print(f"{usage}\n\n{about}\n\nsettings (defaults; override with key=value, Hydra's grammar):\n")
        print(OmegaConf.to_yaml(defaults).rstrip())
        print("\nPowered by Hydra (compose API)")
        sys.exit(0)
    overrides = [f"{positional}={a}" if positional and "=" not in a and not a.startswith("-") else a for a in argv]
    register_configs()
    try:
        with initialize(version_base="1.3", config_path=None):
            cfg = compose(config_name=schema, overrides=overrides)
        return OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        print(usage, file=sys.stderr)
        why = [str(e).splitlines()[0].rstrip(".") for e in (exc, exc.__cause__) if e is not None and str(e)]
        fail(": ".join(dict.fromkeys(why)) or type(exc).__name__)
