"""`python -m amq.worker storage=<url> study=<name> model=<path or id>`: evaluate a search's
candidates on this device (amq.worker.run_worker; that module's docstring says how)."""

from __future__ import annotations

import argparse
import logging
import sys

from amq.cli import one_line_errors
from amq.worker import __doc__ as WORKER_DOC
from amq.worker import run_worker


def parse(argv: list[str]) -> argparse.Namespace:
    """key=value arguments, as Hydra users type them."""
    ap = argparse.ArgumentParser(prog="python -m amq.worker", description=(WORKER_DOC or "").splitlines()[0])
    ap.add_argument(
        "args",
        nargs="*",
        help="storage=<url or .journal file> study=<name> model=<path, hub id or builtin:name> [trust_remote_code=false] "
        "[device=cuda:0] [poll_s=1] [heartbeat_s=30] [wait_s=600]",
    )
    ns = ap.parse_args(argv)
    opts = {
        "storage": None,
        "study": None,
        "model": None,
        "trust_remote_code": "false",
        "device": None,
        "poll_s": "1.0",
        "heartbeat_s": None,
        "wait_s": "600",
    }
    for a in ns.args:
        key, sep, value = a.partition("=")
        if not sep or key not in opts:
            ap.error(f"unknown argument {a!r}; expected key=value with key in {sorted(opts)}")
        opts[key] = value
    if not opts["storage"] or not opts["study"] or not opts["model"]:
        ap.error("storage=<url>, study=<name> and model=<the driver's model> are required")
    if opts["trust_remote_code"] not in ("true", "false"):
        ap.error("trust_remote_code must be true or false")
    return argparse.Namespace(**opts)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse(sys.argv[1:] if argv is None else argv)
    hb = int(args.heartbeat_s) if args.heartbeat_s else None
    run_worker(
        args.storage, args.study, args.model, args.device, float(args.poll_s), hb, float(args.wait_s), args.trust_remote_code == "true"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
