"""`python -m amq.worker storage=<url> study=<name> model=<path or id>`: evaluate a search's candidates on this device.

A worker reads the driver's plan-evaluation settings from the study (so it scores plans exactly
as the driver does), but what code it loads comes from its own command line: `model=` (a local
directory, hub id or builtin:<name>) and `trust_remote_code=` (default false). The model must be
the one the driver searches (same HF config, checked by fingerprint), else the worker refuses:
whoever can write the shared database cannot make a worker load another model or run its code.
It builds its own model, reference outputs and proxy bank, then takes waiting trials one at
a time until the driver marks the study done. Start as many as there are GPUs (SLURM array
tasks, or local processes with `device=cuda:1` ...). With a database storage, a worker sends
heartbeats while it evaluates; if it dies, its trial is failed and queued again (Optuna's
RetryHeartbeatStaleTrialCallback) and another worker takes it: only that evaluation's time is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import optuna

from amq.config import AMQConfigError, config_from_dict
from amq.cost import build_cost_model
from amq.models import load_config, model_fingerprint, resolve_model_path, shapes_from_config
from amq.search.archive import Archive, open_storage
from amq.search.loop import build_scorer, scorer

log = logging.getLogger("amq.worker")


def run_worker(
    storage_url: str,
    study: str,
    model: str,
    device: str | None = None,
    poll_s: float = 1.0,
    heartbeat_s: int | None = None,
    wait_s: float = 600,
    trust_remote_code: bool = False,
) -> int:
    """Evaluate until the driver says done; returns how many plans this worker scored."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(None, storage_url, heartbeat_s or 30)
    deadline = time.monotonic() + wait_s
    while True:  # workers may start before the driver has created the study
        try:
            attrs = optuna.load_study(study_name=study, storage=storage).user_attrs
            if "config" in attrs:
                break
        except KeyError:
            pass
        if time.monotonic() > deadline:
            raise AMQConfigError(f"no search study {study!r} in {storage_url} after {wait_s:.0f}s")
        time.sleep(poll_s)
    cfg = config_from_dict(attrs["config"])
    # what code runs is this command line's, never the study's
    cfg.model.path, cfg.model.trust_remote_code = model, trust_remote_code
    if device:
        cfg.model.device = device
    model_path = resolve_model_path(model)
    hf_config = load_config(model_path, trust_remote_code)
    if model_fingerprint(hf_config) != attrs.get("model_fingerprint"):
        raise AMQConfigError(
            f"model={model} is not the model study {study!r} searches ({attrs.get('model_path')}): their configs differ; "
            "give the driver's model"
        )
    layers, total = shapes_from_config(hf_config, trust_remote_code)
    cost = build_cost_model(layers, cfg.bits.choices, cfg.bits.group_size, total)
    bank, evaluator, _ = build_scorer(cfg, model_path, show_progress=False)
    archive = Archive(storage, bank.names, cfg.bits.choices, None, study)
    evaluate = scorer(bank, evaluator, cost)
    name = f"{socket.gethostname()}:{os.getpid()}"
    n = 0
    log.info("worker %s on study %s", name, study)
    while True:
        rec = archive.take_one(evaluate, worker=name)
        if rec is not None:
            n += 1
            log.info("plan %d: %.3f bits, divergence %.4g (%.2fs)", rec.trial, rec.avg_bits, rec.divergence, rec.seconds)
            continue
        if archive.study.user_attrs.get("done"):
            log.info("study done; %d plans evaluated here", n)
            return n
        time.sleep(poll_s)


if __name__ == "__main__":  # python -m amq.worker: the command line lives in amq.cli.worker
    import runpy

    runpy.run_module("amq.cli.worker", run_name="__main__")
