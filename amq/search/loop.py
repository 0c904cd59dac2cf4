"""The AMQ search end to end: validate, measure, prune, then iterate search-and-update.

No Hydra here: `run_search(cfg, run_dir)` takes the typed config and a directory, so tests,
workers and notebooks call it directly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from amq.config import PREDICTORS, AMQConfigError, Config
from amq.cost import CostModel, build_cost_model
from amq.data import calibration_ids, check_data
from amq.metrics import DivergenceEvaluator
from amq.models import (
    layer_blocks,
    load_config,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_model_path,
    searchable_linears,
    shapes_from_config,
)
from amq.plan_document import PLAN_FORMAT
from amq.predictor import select
from amq.quant.apply import BlockHessians
from amq.quant.bank import ProxyBank
from amq.rundir import ARCHIVE, STATE, check_run_dir, read_json, write_json_atomic
from amq.search.archive import STUDY_NAME, Archive, Record, open_storage
from amq.search.final import final_choice
from amq.search.ilp import loss_table
from amq.search.outputs import SearchResult, flat_config, log_iteration, logged_iterations, uniform_baselines, write_outputs
from amq.search.proposals import ilp_seeds, propose_candidates, random_in_window, search_window
from amq.search.sensitivity import load_or_measure, lowest_column, prune, weight_error_estimate
from amq.search.space import Plan, SearchSpace
from amq.search.ties import tie_groups
from amq.tracking import Tracker

__all__ = ["Prepared", "SearchResult", "build_scorer", "prepare", "run_search", "scorer"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What cheap validation produces: the model path and its cost model."""

    model_path: str
    cost: CostModel
    fingerprint: str  # of the model's architecture and shapes (amq.models.model_fingerprint)


def prepare(cfg: Config) -> Prepared:
    """Every check that needs no weights: path, shapes vs group size, budgets, data file."""
    check_data(cfg.data)
    path = resolve_model_path(cfg.model.path)
    hf_config = load_config(path, cfg.model.trust_remote_code)
    layers, total = shapes_from_config(hf_config, cfg.model.trust_remote_code)
    if not layers:
        raise AMQConfigError(f"{path}: no linear layers found in the decoder blocks")
    cost = build_cost_model(layers, cfg.bits.choices, cfg.bits.group_size, total)
    for b in cfg.search.budgets:
        cost.check_budget(b, cfg.search.budget_unit)
    return Prepared(path, cost, model_fingerprint(hf_config))


def build_scorer(cfg: Config, model_path: str, show_progress: bool = True) -> tuple[ProxyBank, DivergenceEvaluator, dict[str, float]]:
    """Model, cached reference outputs and the proxy bank: what scoring a plan needs (the
    driver and every worker build the same)."""
    timings = {}
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model, model_path)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    ids = calibration_ids(cfg.data, tokenizer)
    evaluator = DivergenceEvaluator(model, ids, cfg.data.batch_size, cfg.search.metric)
    timings["reference"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hessians = BlockHessians(model, ids, cfg.data.batch_size) if cfg.proxy.name == "gptq" else None
    bank = ProxyBank(searchable_linears(model), cfg.bits.choices, cfg.bits.group_size, cfg.proxy, show_progress, hessians)
    timings["bank"] = time.perf_counter() - t0
    return bank, evaluator, timings


def scorer(bank: ProxyBank, evaluator: DivergenceEvaluator, cost: CostModel):
    """plan -> (divergence, bytes, seconds): one forward pass with the plan swapped in."""

    def evaluate(plan: Plan) -> tuple[float, int, float]:
        t = time.perf_counter()
        bank.apply(plan)
        div = evaluator.score()
        return div, cost.plan_bytes(plan), time.perf_counter() - t

    return evaluate


def study_name(cfg: Config, run_dir: Path) -> str:
    return cfg.search.study or (STUDY_NAME if cfg.search.storage is None else f"{cfg.run_name}-{run_dir.name}")


def run_search(cfg: Config, run_dir: Path, show_progress: bool = True) -> SearchResult:
    """Find the front of (memory, divergence) plans; write every output into `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_dir(run_dir, cfg.resume, shared_storage=cfg.search.storage is not None)  # before any model is loaded
    prep = prepare(cfg)
    storage = _shared_storage(cfg, run_dir)
    bank, evaluator, timings = build_scorer(cfg, prep.model_path, show_progress)
    log.info("proxy bank: %d layers x %d bit-widths, %.1f MB", len(bank.names), len(cfg.bits.choices), bank.nbytes() / 1e6)
    ties = tie_groups(bank.names, cfg.search.tie)
    budgets_bytes = {b: prep.cost.budget_to_bytes(b, cfg.search.budget_unit) for b in cfg.search.budgets}
    t0 = time.perf_counter()
    per_bits = _sensitivity(cfg, run_dir, prep, bank, evaluator, ties, show_progress)
    timings["sensitivity"] = time.perf_counter() - t0
    space, loss = _search_space(cfg, prep.cost, bank.names, per_bits, ties, min(budgets_bytes.values()))
    archive = _open_archive(cfg, run_dir, prep, bank.names, storage or open_storage(run_dir))  # the journal: after the model loaded
    tracker = _open_tracker(cfg, run_dir, space)
    try:
        evaluate = scorer(bank, evaluator, prep.cost)
        loop = _Iterations(cfg, run_dir, prep.cost, space, loss, budgets_bytes, archive, tracker, evaluate, show_progress)
        loop.initial(timings)
        for it in range(1, cfg.search.iterations + 1):
            loop.iteration(it)

        # --- outputs ---------------------------------------------------------------------
        records = archive.records()
        archive.rewrite_jsonl()
        final_predictor, final_metrics = _fit_predictor(cfg, space, records, loss, seed=cfg.seed + 10_000)
        predictor_metrics = final_metrics or loop.predictor_metrics
        uniform = uniform_baselines(run_dir, cfg, bank.names, evaluate)
        choices = final_choice(cfg, run_dir, prep, bank, evaluator, ties, records, per_bits, budgets_bytes, tracker, show_progress)
        bank.restore()
        result = write_outputs(cfg, run_dir, prep, space, records, choices, final_predictor, uniform, predictor_metrics)
        tracker.summary({"predictor/kendall_tau": predictor_metrics.get("kendall_tau"), "archive/size": len(records)})
        tracker.image("search/front_plot", run_dir / "front.png")
        plan_files = sorted((run_dir / "plans").glob("*.json"))
        tracker.artifact(f"plans-{tracker.run_id}", "amq-plan", [*plan_files, run_dir / "pareto.json"], {"format": PLAN_FORMAT})
        archive.study.set_user_attr("done", True)  # workers exit
        return result
    finally:
        tracker.finish()


def _shared_storage(cfg: Config, run_dir: Path):
    """`search.storage` (a database or journal shared with workers), checked against resume; None: the run dir's journal."""
    if not cfg.search.storage:
        return None
    storage = open_storage(run_dir, cfg.search.storage, cfg.search.heartbeat_s)
    name = study_name(cfg, run_dir)
    exists = any(s.study_name == name for s in storage.get_all_studies())
    if exists and not cfg.resume:
        raise AMQConfigError(f"study {name!r} already exists in search.storage; pass resume=true to continue it")
    if cfg.resume and not exists:
        log.warning("resume=true, but search.storage has no study %r: starting a new search", name)
    return storage


def _sensitivity(
    cfg: Config, run_dir: Path, prep: Prepared, bank: ProxyBank, evaluator: DivergenceEvaluator, ties, show_progress: bool
) -> dict:
    """Each layer alone at each bit-width (or the lowest, the rest scaled), from cached block
    inputs; kept in sensitivity.json under the settings it was measured with."""
    names = bank.names
    key = {
        "model": prep.model_path,
        "proxy": asdict(cfg.proxy),
        "group_size": cfg.bits.group_size,
        "choices": list(cfg.bits.choices),
        "data": asdict(cfg.data),
        "metric": cfg.search.metric,
        "tie": list(cfg.search.tie),
        "sensitivity_bits": cfg.search.sensitivity_bits,
    }
    sens_evaluator = evaluator
    if cfg.search.sensitivity_samples and cfg.search.sensitivity_samples < cfg.data.num_samples:
        key["sensitivity_samples"] = cfg.search.sensitivity_samples  # (absent otherwise: earlier sensitivity.json files stay valid)
        sens_evaluator = evaluator.first(cfg.search.sensitivity_samples)
    per_bits = load_or_measure(
        run_dir / "sensitivity.json",
        key,
        names,
        cfg.bits.choices,
        bank.apply,
        sens_evaluator.score,
        cfg.search.sensitivity_path,
        show_progress,
        SearchSpace(tuple(names), tuple(cfg.bits.choices), ties=ties).units,
        weight_error_estimate(bank.sq_error, cfg.bits.choices[0]) if cfg.search.sensitivity_bits == "lowest" else None,
        sens_evaluator.score_from,  # each layer alone: only its block and those after it run (amq.prefix)
        layer_blocks(evaluator.model, names),
    )
    sens_evaluator.drop_prefix()
    return per_bits


def _search_space(
    cfg: Config, cost: CostModel, names: list[str], per_bits: dict, ties, smallest_budget: int
) -> tuple[SearchSpace, np.ndarray]:
    """The space after pruning the most sensitive layers, and the per-layer loss table for the ILP."""
    lowest = cfg.bits.choices[0]
    # pruning keeps the smallest plan at most halfway from all-lowest to the smallest budget,
    # so that the smallest budget still has plans to choose between
    prune_cap = (cost.plan_bytes([lowest] * len(names)) + smallest_budget) // 2

    def keeps_budgets(restricted: dict[int, tuple[int, ...]]) -> bool:
        return cost.plan_bytes(SearchSpace(tuple(names), tuple(cfg.bits.choices), restricted, ties).uniform(lowest)) <= prune_cap

    restricted = prune(lowest_column(per_bits), names, cfg.search.prune_threshold, cfg.bits.choices, cfg.search.prune_to, keeps_budgets)
    space = SearchSpace(tuple(names), tuple(cfg.bits.choices), restricted, ties)
    log.info(
        "search space: 10^%.1f plans, 10^%.1f after pruning (%d layer(s) restricted to %s bits: %s)",
        space.log10_size(False),
        space.log10_size(True),
        len(restricted),
        "the highest" if cfg.search.prune_to == "highest" else "all but the lowest",
        ", ".join(names[i] for i in sorted(restricted)) or "none",
    )
    return space, loss_table(per_bits, names, cfg.bits.choices)


def _open_archive(cfg: Config, run_dir: Path, prep: Prepared, names: list[str], storage) -> Archive:
    """The study and its archive.jsonl mirror, with what a worker needs to score plans exactly
    as the driver does (`python -m amq.worker storage=... study=...`)."""
    archive = Archive(storage, names, cfg.bits.choices, run_dir / ARCHIVE, study_name(cfg, run_dir))
    archive.study.set_user_attr("model_path", prep.model_path)  # for information: workers load the model they are given
    archive.study.set_user_attr("model_fingerprint", prep.fingerprint)
    archive.study.set_user_attr("config", asdict(cfg))  # last: a waiting worker starts when it sees this
    archive.study.set_user_attr("done", False)
    archive.requeue_stale()
    archive.rewrite_jsonl()
    return archive


def _open_tracker(cfg: Config, run_dir: Path, space: SearchSpace) -> Tracker:
    """W&B (offline by default), resumed into the same run when state.json names one."""
    state_path = run_dir / STATE
    state = read_json(state_path, "the W&B run id") if state_path.exists() else {}
    tracker = Tracker(cfg.logger, run_dir, flat_config(asdict(cfg)), cfg.run_name, state.get("wandb_id"))
    state["wandb_id"] = tracker.run_id
    write_json_atomic(state_path, state)
    tracker.summary(  # not history: a step-less log here made W&B drop iteration 0 ("partial history record")
        {
            "space/log10_size": space.log10_size(False),
            "space/log10_size_pruned": space.log10_size(True),
            "space/pruned_layers": len(space.restricted),
        }
    )
    return tracker


class _Iterations:
    """The initial archive, then per iteration: fit the predictor, propose, evaluate, log.
    Iterations already started in the study (a resumed run) are only finished, not proposed again."""

    def __init__(
        self, cfg: Config, run_dir: Path, cost: CostModel, space: SearchSpace, loss, budgets_bytes: dict[float, int],
        archive: Archive, tracker, evaluate, show_progress,
    ) -> None:  # fmt: skip
        self.cfg, self.run_dir, self.cost, self.space, self.loss = cfg, run_dir, cost, space, loss
        self.archive, self.tracker, self.evaluate, self.show_progress = archive, tracker, evaluate, show_progress
        self.budgets_bytes = budgets_bytes
        self.lo_bytes = cost.plan_bytes(space.uniform(cfg.bits.choices[0]))
        self.hi_bytes = cost.plan_bytes(space.uniform(cfg.bits.choices[-1]))
        self.window = search_window(cost, self.budgets_bytes, self.lo_bytes, self.hi_bytes)
        self.predictor_metrics: dict[str, float] = {}
        self.plot = run_dir / "front_latest.png" if tracker.run else None  # the per-iteration plot W&B shows
        self.logged = logged_iterations(run_dir)  # a resumed run does not log these again
        self.hv_ref = (1.0, 1.0)

    def run_queue(self, desc: str) -> float:
        """Evaluate what is waiting (here, and by any workers); returns the seconds it took."""
        t = time.perf_counter()
        n = self.archive.waiting()
        if n or self.archive.running():
            bar = tqdm(total=n, desc=desc, unit="plan", disable=not self.show_progress)
            self.archive.drain(self.evaluate, lambda rec: bar.update(), self.cfg.search.driver_evaluates)
            bar.close()
            self.archive.rewrite_jsonl()  # workers' evaluations too
        return time.perf_counter() - t

    def log(self, it: int, phase: dict[str, float]) -> None:
        if it not in self.logged:
            records = self.archive.records()
            log_iteration(
                self.tracker, self.run_dir, it, records, self.lo_bytes, self.hi_bytes, self.hv_ref, phase, self.predictor_metrics, self.plot
            )

    def initial(self, timings: dict[str, float]) -> None:
        """Iteration 0: uniform plans, random plans and the ILP seeds (the peers' best guesses)."""
        cfg, space, archive = self.cfg, self.space, self.archive
        if not archive.queued(0):  # (again after a kill mid-queue: the same plans, those queued are skipped)
            rng = np.random.default_rng(cfg.seed)
            initial = [space.uniform(b) for b in cfg.bits.choices] if cfg.search.initial_uniform else []
            initial += space.random_plans(cfg.search.initial_random, rng)
            archive.enqueue(initial, 0, "initial", self.cost.avg_bits)
            if cfg.search.strategy == "amq":
                seeds = ilp_seeds(space, self.loss, self.cost, self.budgets_bytes, self.window, cfg.search.ilp_seeds)
                archive.enqueue(seeds, 0, "ilp", self.cost.avg_bits)
            archive.mark_queued(0)
        t_eval = self.run_queue("initial archive")
        self.hv_ref = (1.0, max(r.divergence for r in archive.records() if r.iteration == 0) * 1.1)
        self.log(0, {"evaluate_s": t_eval, **{f"{k}_s": v for k, v in timings.items()}})

    def iteration(self, it: int) -> None:
        cfg, archive = self.cfg, self.archive
        phase: dict[str, float] = {}
        # an iteration's plans are proposed from what earlier iterations found, so that a driver killed
        # while queuing them proposes the same ones again on resume (those already queued are skipped)
        queued = archive.queued(it)
        if not queued and cfg.search.strategy == "random":
            picks = random_in_window(
                self.space, self.cost, self.window, archive.known_plans(before=it), cfg.search.candidates, cfg.seed + it
            )
            archive.enqueue(picks, it, "random", self.cost.avg_bits)
            archive.mark_queued(it)
        elif not queued:
            t = time.perf_counter()
            records = [r for r in archive.records() if r.iteration < it]
            predictor, self.predictor_metrics = _fit_predictor(cfg, self.space, records, self.loss, seed=cfg.seed + it)
            phase["fit_s"] = time.perf_counter() - t
            t = time.perf_counter()
            trusted = self.predictor_metrics.get("kendall_tau", -1.0) >= cfg.predictor.min_tau
            self.predictor_metrics["fallback"] = float(not trusted)
            if not trusted:
                log.warning(
                    "iteration %d: the predictor does not rank the archive (cross-validated tau %.2f < predictor.min_tau %.2f):"
                    " NSGA-II proposes nothing; this iteration's plans come from the ILP refit and local moves",
                    it, self.predictor_metrics.get("kendall_tau", float("nan")), cfg.predictor.min_tau,
                )  # fmt: skip
            proposals = propose_candidates(
                cfg, self.space, predictor, trusted, records, archive.known_plans(before=it), self.loss, self.cost, self.budgets_bytes,
                self.window, it, self.show_progress,
            )  # fmt: skip
            for source, plans in proposals:
                archive.enqueue(plans, it, source, self.cost.avg_bits)
            archive.mark_queued(it)
            phase["propose_s"] = time.perf_counter() - t
        phase["evaluate_s"] = self.run_queue(f"iteration {it}/{cfg.search.iterations}")
        self.log(it, phase)


def _fit_predictor(cfg: Config, space: SearchSpace, records: list[Record], loss: np.ndarray, seed: int):
    """The predictor chosen and scored by k-fold cross-validation (Kendall tau, RMSE), refitted
    on the whole archive."""
    x = space.encode([r.plan for r in records])
    y = np.array([r.divergence for r in records])
    predictor, name, metrics = select(cfg.predictor, x, y, seed, space, loss)
    metrics["choice"] = float(PREDICTORS.index(name))
    return predictor, metrics
