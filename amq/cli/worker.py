"""`python -m amq.worker storage=<url> study=<name> model=<path or id>`: evaluate a search's
candidates on this device (amq.worker.run_worker; that module's docstring says how)."""

from __future__ import annotations

import logging
import sys

from amq.cli import compose_tool, one_line_errors
from amq.config import WorkerConfig
from amq.worker import __doc__ as WORKER_DOC
from amq.worker import run_worker


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    cfg: WorkerConfig = compose_tool(
        "amq.worker", "worker_schema", sys.argv[1:] if argv is None else argv, (WORKER_DOC or "").splitlines()[0]
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker(cfg.storage, cfg.study, cfg.model, cfg.device, cfg.poll_s, cfg.heartbeat_s, cfg.wait_s, cfg.trust_remote_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
