"""The command line: every `python -m amq.<command>` entry point, each only wiring a library
function to its arguments. `python -m amq.run` (the search), `amq.evaluate`, `amq.plan`,
`amq.report`, `amq.worker` and `amq.export` are thin aliases of the modules here.

One convention for bad input (`one_line_errors`): a single line `error: ...` on stderr and exit
code 2, never a traceback; argument-syntax errors print usage and exit 2 as argparse does.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from amq.config import AMQConfigError

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
