"""The AMQ search end to end: validate, measure, prune, then iterate search-and-update.

No Hydra here: `run_search(cfg, run_dir)` takes the typed config and a directory, so tests,
workers and notebooks call it directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from amq.config import PREDICTORS, AMQConfigError, Config, QuantizerConfig
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
from amq.plan_document import PLAN_FORMAT, PlanBudget, PlanDocument
from amq.plotting import plot_front
from amq.predictor import make_predictor, select
from amq.quant.apply import BlockHessians
from amq.quant.bank import ProxyBank
from amq.rundir import ARCHIVE, STATE, check_run_dir, read_json, write_json_atomic
from amq.search.archive import STUDY_NAME, Archive, Record, open_storage
from amq.search.final import BudgetChoice, FinalRecord, FinalScorer, budget_candidates, choose
from amq.search.ilp import allocate, fit_additive, greedy, loss_table
from amq.search.local import local_moves
from amq.search.nsga import pick_spread, propose
from amq.search.pareto import front_indices, hypervolume
from amq.search.sensitivity import load_or_measure, lowest_column, prune, weight_error_estimate
from amq.search.space import Plan, SearchSpace
from amq.search.ties import tie_groups
from amq.tracking import Tracker

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


@dataclass
class SearchResult:
    run_dir: Path
    records: list[Record]
    front: list[Record]
    budget_plans: dict[float, Record | None]
    uniform: dict[int, float]
    predictor_metrics: dict[str, float]
    choices: list[BudgetChoice]  # each budget's candidates, ranked after the final quantizer


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
    storage = open_storage(run_dir, cfg.search.storage, cfg.search.heartbeat_s) if cfg.search.storage else None
    if storage is not None:
        name = study_name(cfg, run_dir)
        exists = any(s.study_name == name for s in storage.get_all_studies())
        if exists and not cfg.resume:
            raise AMQConfigError(f"study {name!r} already exists in search.storage; pass resume=true to continue it")
        if cfg.resume and not exists:
            log.warning("resume=true, but search.storage has no study %r: starting a new search", name)
    cost = prep.cost
    timings: dict[str, float] = {}

    # --- model, calibration data, reference outputs, proxy bank ----------------------------
    bank, evaluator, timings = build_scorer(cfg, prep.model_path, show_progress)
    names = bank.names
    log.info("proxy bank: %d layers x %d bit-widths, %.1f MB", len(names), len(cfg.bits.choices), bank.nbytes() / 1e6)

    # --- sensitivity and pruning -----------------------------------------------------------
    t0 = time.perf_counter()
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
    ties = tie_groups(names, cfg.search.tie)
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
    sens = lowest_column(per_bits)
    timings["sensitivity"] = time.perf_counter() - t0
    budgets_bytes = {b: cost.budget_to_bytes(b, cfg.search.budget_unit) for b in cfg.search.budgets}
    lowest = cfg.bits.choices[0]

    # pruning keeps the smallest plan at most halfway from all-lowest to the smallest budget,
    # so that the smallest budget still has plans to choose between
    prune_cap = (cost.plan_bytes([lowest] * len(names)) + min(budgets_bytes.values())) // 2

    def keeps_budgets(restricted: dict[int, tuple[int, ...]]) -> bool:
        return cost.plan_bytes(SearchSpace(tuple(names), tuple(cfg.bits.choices), restricted, ties).uniform(lowest)) <= prune_cap

    restricted = prune(sens, names, cfg.search.prune_threshold, cfg.bits.choices, cfg.search.prune_to, keeps_budgets)
    space = SearchSpace(tuple(names), tuple(cfg.bits.choices), restricted, ties)
    log.info(
        "search space: 10^%.1f plans, 10^%.1f after pruning (%d layer(s) restricted to %s bits: %s)",
        space.log10_size(False),
        space.log10_size(True),
        len(restricted),
        "the highest" if cfg.search.prune_to == "highest" else "all but the lowest",
        ", ".join(names[i] for i in sorted(restricted)) or "none",
    )
    lo_bytes, hi_bytes = cost.plan_bytes(space.uniform(lowest)), cost.plan_bytes(space.uniform(cfg.bits.choices[-1]))
    window = _window(cost, budgets_bytes, lo_bytes, hi_bytes)
    loss = loss_table(per_bits, names, cfg.bits.choices)  # per-layer estimates for the ILP

    # --- archive, tracker ----------------------------------------------------------------
    storage = storage or open_storage(run_dir)  # the journal file is created only once the model loaded
    archive = Archive(storage, names, cfg.bits.choices, run_dir / ARCHIVE, study_name(cfg, run_dir))
    # what a worker needs to score plans exactly as the driver does: `python -m amq.worker storage=... study=...`
    archive.study.set_user_attr("model_path", prep.model_path)  # for information: workers load the model they are given
    archive.study.set_user_attr("model_fingerprint", prep.fingerprint)
    archive.study.set_user_attr("config", asdict(cfg))  # last: a waiting worker starts when it sees this
    archive.study.set_user_attr("done", False)
    archive.requeue_stale()
    archive.rewrite_jsonl()
    state_path = run_dir / STATE
    state = read_json(state_path, "the W&B run id") if state_path.exists() else {}
    tracker = Tracker(cfg.logger, run_dir, _flat(asdict(cfg)), cfg.run_name, state.get("wandb_id"))
    state["wandb_id"] = tracker.run_id
    write_json_atomic(state_path, state)
    tracker.summary(  # not history: a step-less log here made W&B drop iteration 0 ("partial history record")
        {
            "space/log10_size": space.log10_size(False),
            "space/log10_size_pruned": space.log10_size(True),
            "space/pruned_layers": len(restricted),
        }
    )

    evaluate = scorer(bank, evaluator, cost)

    def run_queue(desc: str) -> float:
        t = time.perf_counter()
        n = archive.waiting()
        if n or archive.running():
            bar = tqdm(total=n, desc=desc, unit="plan", disable=not show_progress)
            archive.drain(evaluate, lambda rec: bar.update(), cfg.search.driver_evaluates)
            bar.close()
            archive.rewrite_jsonl()  # workers' evaluations too
        return time.perf_counter() - t

    predictor_metrics: dict[str, float] = {}
    iter_plot = run_dir / "front_latest.png" if tracker.run else None  # the per-iteration plot W&B shows
    logged = _logged_iterations(run_dir)  # a resumed run does not log these again
    try:
        # --- iteration 0: the initial archive ------------------------------------------
        if 0 not in archive.iterations_started():
            rng = np.random.default_rng(cfg.seed)
            initial = [space.uniform(b) for b in cfg.bits.choices] if cfg.search.initial_uniform else []
            initial += space.random_plans(cfg.search.initial_random, rng)
            archive.enqueue(initial, 0, "initial", cost.avg_bits)
            seeds = ilp_seeds(space, loss, cost, budgets_bytes, window, cfg.search.ilp_seeds)
            if cfg.search.strategy == "amq":
                archive.enqueue(seeds, 0, "ilp", cost.avg_bits)
        t_eval = run_queue("initial archive")
        records = archive.records()
        hv_ref = (1.0, max(r.divergence for r in records if r.iteration == 0) * 1.1)
        phase0 = {"evaluate_s": t_eval, **{f"{k}_s": v for k, v in timings.items()}}
        if 0 not in logged:
            _log_iteration(tracker, run_dir, 0, records, lo_bytes, hi_bytes, hv_ref, phase0, {}, iter_plot)

        # --- iterations: fit, propose, evaluate ------------------------------------------
        for it in range(1, cfg.search.iterations + 1):
            phase: dict[str, float] = {}
            if it not in archive.iterations_started() and cfg.search.strategy == "random":
                picks = _random_in_window(space, cost, window, archive.known_plans(), cfg.search.candidates, cfg.seed + it)
                archive.enqueue(picks, it, "random", cost.avg_bits)
            elif it not in archive.iterations_started():
                t = time.perf_counter()
                records = archive.records()
                predictor, predictor_metrics = _fit_predictor(cfg, space, records, loss, seed=cfg.seed + it)
                phase["fit_s"] = time.perf_counter() - t
                t = time.perf_counter()
                trusted = predictor_metrics.get("kendall_tau", -1.0) >= cfg.predictor.min_tau
                predictor_metrics["fallback"] = float(not trusted)
                if not trusted:
                    log.warning(
                        "iteration %d: the predictor does not rank the archive (cross-validated tau %.2f < predictor.min_tau %.2f):"
                        " NSGA-II proposes nothing; this iteration's plans come from the ILP refit and local moves",
                        it, predictor_metrics.get("kendall_tau", float("nan")), cfg.predictor.min_tau,
                    )  # fmt: skip
                for source, plans in _candidates(
                    cfg, space, predictor, trusted, records, archive.known_plans(), loss, cost, budgets_bytes, window, it, show_progress
                ):
                    archive.enqueue(plans, it, source, cost.avg_bits)
                phase["propose_s"] = time.perf_counter() - t
            phase["evaluate_s"] = run_queue(f"iteration {it}/{cfg.search.iterations}")
            if it not in logged:
                _log_iteration(tracker, run_dir, it, archive.records(), lo_bytes, hi_bytes, hv_ref, phase, predictor_metrics, iter_plot)

        # --- outputs -----------------------------------------------------------------------
        records = archive.records()
        archive.rewrite_jsonl()
        final_predictor, final_metrics = _fit_predictor(cfg, space, records, loss, seed=cfg.seed + 10_000)
        predictor_metrics = final_metrics or predictor_metrics
        uniform = _uniform_baselines(run_dir, cfg, names, evaluate)
        choices = _final_choice(cfg, run_dir, prep, bank, evaluator, ties, records, per_bits, budgets_bytes, tracker, show_progress)
        bank.restore()
        result = _write_outputs(cfg, run_dir, prep, space, records, choices, final_predictor, uniform, predictor_metrics)
        tracker.summary({"predictor/kendall_tau": predictor_metrics.get("kendall_tau"), "archive/size": len(records)})
        tracker.image("search/front_plot", run_dir / "front.png")
        plan_files = sorted((run_dir / "plans").glob("*.json"))
        tracker.artifact(f"plans-{tracker.run_id}", "amq-plan", [*plan_files, run_dir / "pareto.json"], {"format": PLAN_FORMAT})
        archive.study.set_user_attr("done", True)  # workers exit
        return result
    finally:
        tracker.finish()


def _candidates(
    cfg: Config,
    space: SearchSpace,
    predictor,
    trusted: bool,
    records: list[Record],
    known: set[Plan],
    loss: np.ndarray,
    cost: CostModel,
    budgets_bytes: dict[float, int],
    window: tuple[int, int],
    it: int,
    show_progress: bool,
) -> list[tuple[str, list[Plan]]]:
    """One iteration's plans to evaluate, by source: the ILP on the per-layer table refitted to
    the archive, predictor-ranked local moves around each budget's best plan, and NSGA-II's
    front on the predictor thinned to what is left of `search.candidates`. A predictor that is
    not `trusted` proposes nothing: the refitted table ranks the local moves, which take every
    place the refit leaves."""
    if not trusted:
        predictor = make_predictor(replace(cfg.predictor, name="additive"), cfg.seed + it, space, loss)
        predictor.fit(space.encode([r.plan for r in records]), np.array([r.divergence for r in records]))

    def predict(plans):
        return predictor.predict(space.encode(plans))

    refit = ilp_refit(space, records, loss, cost, budgets_bytes, known) if cfg.search.ilp_refit else []
    best = _best_under(records, budgets_bytes)
    room = max(0, cfg.search.candidates - len(refit))
    # every budget gets the same share; NSGA-II keeps at least half of what refit leaves
    per_budget = min(cfg.search.local_moves, room // 2 // max(1, len(best))) if trusted else -(-room // max(1, len(best)))
    local = local_moves(space, best, predict, cost.plan_bytes, known | set(refit), per_budget)
    if not trusted:
        return [("ilp-refit", refit), ("local", local[:room])]
    seeds = [r.plan for r in _front(records)]
    points = propose(space, predict, cost.plan_bytes, window, cfg.optimizer, seed=cfg.seed + it, seeds=seeds, show_progress=show_progress)
    taken = known | set(refit) | set(local)
    n_picks = max(0, cfg.search.candidates - len(refit) - len(local))
    picks = pick_spread(points, n_picks, window, taken, list(budgets_bytes.values()))
    return [("ilp-refit", refit), ("local", local), ("nsga2", picks)]


def ilp_seeds(space: SearchSpace, loss: np.ndarray, cost: CostModel, budgets_bytes: dict, window: tuple[int, int], n: int) -> list[Plan]:
    """Integer-programming plans (summed per-layer loss, exact budget) at every budget and at
    `n` caps spread over the window: the peers' best guess, which the search must improve on."""
    if n <= 0:
        return []
    caps = sorted({*budgets_bytes.values(), *np.linspace(window[0], window[1], n).astype(int).tolist()})
    table = cost.table()
    plans = [allocate(loss, table, cap, space) for cap in caps]
    return list(dict.fromkeys(p for p in plans if p is not None))


def ilp_refit(space: SearchSpace, records: list[Record], loss: np.ndarray, cost: CostModel, budgets_bytes: dict, known: set) -> list[Plan]:
    """Exact-budget ILP on the per-layer table refitted to the archive: one new plan per budget
    (if it is not already evaluated). Complements NSGA-II, which explores; this exploits."""
    if len(records) < 8:
        return []
    table = fit_additive([r.plan for r in records], np.array([r.divergence for r in records]), loss, space.choices)
    layer_cost = cost.table()
    out: list[Plan] = []
    for cap in budgets_bytes.values():
        plan = allocate(table, layer_cost, cap, space)
        if plan is not None and plan not in known and plan not in out:
            out.append(plan)
    return out


def _random_in_window(space: SearchSpace, cost: CostModel, window: tuple[int, int], known: set, k: int, seed: int) -> list[Plan]:
    """The random-search baseline's proposals: fresh random plans inside the memory window."""
    rng = np.random.default_rng(seed)
    out: list[Plan] = []
    for _ in range(100):
        for plan in space.random_plans(8 * k, rng):
            if window[0] <= cost.plan_bytes(plan) <= window[1] and plan not in known and plan not in out:
                out.append(plan)
        if len(out) >= k:
            break
    return out[:k]


def _best_under(records: list[Record], budgets_bytes: dict[float, int]) -> dict[int, Plan]:
    """Budget cap (bytes) -> the lowest-divergence evaluated plan that fits under it."""
    out: dict[int, Plan] = {}
    for cap in budgets_bytes.values():
        fits = [r for r in records if r.bytes <= cap]
        if fits:
            out[cap] = min(fits, key=lambda r: r.divergence).plan
    return out


def _window(cost: CostModel, budgets_bytes: dict[float, int], lo: int, hi: int) -> tuple[int, int]:
    """Memory range NSGA-II proposes in: the budgets widened by a quarter bit, within the space."""
    quarter_bit = int(cost.numel.sum() / 32)
    vals = list(budgets_bytes.values())
    return max(lo, min(vals) - quarter_bit), min(hi, max(vals) + quarter_bit)


def _front(records: list[Record]) -> list[Record]:
    idx = front_indices([r.bytes for r in records], [r.divergence for r in records])
    return [records[i] for i in idx]


def _fit_predictor(cfg: Config, space: SearchSpace, records: list[Record], loss: np.ndarray, seed: int):
    """The predictor chosen and scored by k-fold cross-validation (Kendall tau, RMSE), refitted
    on the whole archive."""
    x = space.encode([r.plan for r in records])
    y = np.array([r.divergence for r in records])
    predictor, name, metrics = select(cfg.predictor, x, y, seed, space, loss)
    metrics["choice"] = float(PREDICTORS.index(name))
    return predictor, metrics


def _logged_iterations(run_dir: Path) -> set[int]:
    path = run_dir / "iterations.jsonl"
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            out.add(int(json.loads(line)["iteration"]))
    return out


def _log_iteration(
    tracker: Tracker, run_dir: Path, it: int, records: list[Record], lo: int, hi: int, hv_ref, phase, pm, plot_path: Path | None
) -> None:
    """Per-iteration W&B record: archive size, hypervolume, predictor scores, phase times, front."""
    mem = [(r.bytes - lo) / max(1, hi - lo) for r in records]
    div = [r.divergence for r in records]
    hv = hypervolume(mem, div, hv_ref)
    front = _front(records)
    metrics = {"archive/size": len(records), "search/hypervolume": hv, "search/front_size": len(front), "iteration": it}
    metrics.update({f"predictor/{k}": v for k, v in pm.items()})
    metrics.update({f"time/{k}": v for k, v in phase.items()})
    tracker.log(metrics, step=it)
    with (run_dir / "iterations.jsonl").open("a") as f:  # the same numbers, readable without W&B (last line of an iteration wins)
        f.write(json.dumps({**metrics, "front_sources": sorted({r.source for r in front})}) + "\n")
    tracker.table(
        "search/front",
        ["avg_bits", "bytes", "divergence", "iteration", "source"],
        [[r.avg_bits, r.bytes, r.divergence, r.iteration, r.source] for r in front],
        step=it,
    )
    if plot_path is not None:
        fb, fd = [r.avg_bits for r in front], [r.divergence for r in front]
        plot_front(plot_path, [r.avg_bits for r in records], div, fb, fd, {}, [], f"iteration {it}: {len(records)} evaluated plans")
        tracker.image("search/front_plot", plot_path, step=it)
    tau = pm.get("kendall_tau")
    log.info(
        "iteration %d: archive %d, front %d, hypervolume %.4f%s",
        it,
        len(records),
        len(front),
        hv,
        f", predictor {PREDICTORS[int(pm['choice'])]} cross-validated tau {tau:.3f} rmse {pm['rmse']:.2e}" if tau is not None else "",
    )


def _uniform_baselines(run_dir: Path, cfg: Config, names: list[str], evaluate) -> dict[int, float]:
    """Every layer (pruned ones too) at one bit-width: the peers' plain baseline; cached."""
    path = run_dir / "baselines.json"
    if path.exists():
        data = read_json(path, "uniform plans' divergences")
        if sorted(int(k) for k in data) == sorted(cfg.bits.choices):
            return {int(k): float(v) for k, v in data.items()}
    out = {b: evaluate(tuple([b] * len(names)))[0] for b in cfg.bits.choices}
    write_json_atomic(path, {str(b): v for b, v in out.items()})
    return out


def _final_choice(
    cfg: Config,
    run_dir: Path,
    prep: Prepared,
    bank: ProxyBank,
    evaluator: DivergenceEvaluator,
    ties,
    records: list[Record],
    per_bits: dict,
    budgets_bytes: dict[float, int],
    tracker: Tracker,
    show_progress: bool,
) -> list[BudgetChoice]:
    """Each budget's candidates (the search's best `final.top_k` and the peers' plans), ranked
    after the final quantizer on held-out calibration windows (`final.method=none`: by the
    proxy); scores are kept in final.json, so a resumed run does not redo them."""
    names, cost, n = bank.names, prep.cost, len(bank.names)
    peer_space = SearchSpace(tuple(names), tuple(cfg.bits.choices), ties=ties)  # the peers know no pruning
    table = loss_table(per_bits, names, cfg.bits.choices)

    def proxy_score(plan: Plan) -> float:
        bank.apply(plan)
        return float(f"{evaluator.score():.6e}")

    choices = []
    for b, cap in budgets_bytes.items():
        peers: dict[str, Plan | None] = {}
        if cfg.final.peers:
            peers = {"ilp": allocate(table, cost.table(), cap, peer_space), "greedy": greedy(table, cost.table(), cap, peer_space)}
            fitting = [u for u in cfg.bits.choices if cost.plan_bytes([u] * n) <= cap]
            if fitting:
                peers[f"uniform-{max(fitting)}"] = (max(fitting),) * n
        cands = budget_candidates(cap, records, peers, cfg.final.top_k, cost.plan_bytes, cost.avg_bits, proxy_score)
        choices.append(BudgetChoice(b, cap, cands))
    if cfg.final.method == "none":
        for ch in choices:
            ch.candidates.sort(key=lambda c: (c.proxy, c.bytes))
        return choices

    data = replace(cfg.data, num_samples=cfg.final.samples or cfg.data.num_samples, seq_len=cfg.final.seq_len or cfg.data.seq_len)
    key = {"method": cfg.final.method, "group_size": cfg.bits.group_size, "data": asdict(data), "metric": cfg.search.metric}
    record = FinalRecord(run_dir / "final.json", key, names)
    bank.restore()
    tokenizer = load_tokenizer(prep.model_path, cfg.model.trust_remote_code)
    calib = calibration_ids(data, tokenizer)  # the windows `amq.evaluate` quantizes with, for the same data settings
    held_out = calibration_ids(replace(data, seed=data.seed + 1), tokenizer)
    quantizer = QuantizerConfig(method=cfg.final.method, group_size=cfg.bits.group_size, batch_size=cfg.data.batch_size)
    scorer = FinalScorer(evaluator.model, bank.linears, calib, held_out, quantizer, cfg.search.metric)
    choose(choices, names, scorer, record, show_progress)
    record.write(choices, cfg.search.budget_unit)
    seconds = record.seconds
    rows = []
    for ch in choices:
        best = ch.best
        if best is None:
            continue
        peers_said = ", ".join(f"{'+'.join(c.sources)} {c.final:.4g}" for c in ch.candidates[1:] if not c.sources[0].startswith("search"))
        log.info(
            "budget %g %s: %s after %s, divergence %.4g%s",
            ch.budget, cfg.search.budget_unit, "+".join(best.sources), cfg.final.method, best.final,
            f" (peers: {peers_said})" if peers_said else "",
        )  # fmt: skip
        rows += [[ch.budget, "+".join(c.sources), c.avg_bits, c.proxy, c.final, c is best] for c in ch.candidates]
    n_plans = len({c.plan for ch in choices for c in ch.candidates})
    log.info("final choice: %d plans quantized with %s and scored in %.1f s", n_plans, cfg.final.method, seconds)
    tracker.summary({"final/seconds": seconds, "final/plans": n_plans})
    tracker.table("final/candidates", ["budget", "sources", "avg_bits", "proxy_divergence", "final_divergence", "chosen"], rows)
    return choices


def plan_document(cfg: Config, prep: Prepared, names: list[str], rec: Record, predicted: float | None, **extra) -> PlanDocument:
    """A searched plan as saved: the measured record with the settings it was measured with."""
    return PlanDocument(
        model=prep.model_path,
        model_fingerprint=prep.fingerprint,
        layers=dict(zip(names, rec.plan, strict=True)),
        group_size=cfg.bits.group_size,
        choices=list(cfg.bits.choices),
        source=rec.source,
        avg_bits=rec.avg_bits,
        bytes=rec.bytes,
        model_gb=prep.cost.model_gb(rec.plan),
        divergence=rec.divergence,
        predicted_divergence=predicted,
        search={
            "proxy": cfg.proxy.name,
            "metric": cfg.search.metric,
            "metric_context": {"seq_len": cfg.data.seq_len, "samples": cfg.data.num_samples},
            "tie": list(cfg.search.tie),
        },
        **extra,
    )


def _write_outputs(
    cfg, run_dir, prep: Prepared, space: SearchSpace, records, choices: list[BudgetChoice], predictor, uniform, pm
) -> SearchResult:
    cost = prep.cost
    names = list(space.names)
    front = _front(records)
    pred = predictor.predict(space.encode([r.plan for r in front])) if front else []
    docs = [plan_document(cfg, prep, names, r, float(p)).to_json() for r, p in zip(front, pred, strict=True)]
    write_json_atomic(run_dir / "pareto.json", {"format": PLAN_FORMAT, "predictor": pm, "front": docs})

    plans_dir = run_dir / "plans"
    plans_dir.mkdir(exist_ok=True)
    chosen: dict[float, Record | None] = {}
    by_plan = {r.plan: r for r in records}
    for ch in choices:
        best = ch.best
        if best is None:
            chosen[ch.budget] = None
            continue
        source = "+".join(best.sources)
        rec = by_plan.get(best.plan) or Record(best.plan, best.proxy, best.bytes, best.avg_bits, -1, source, -1, 0.0)
        chosen[ch.budget] = rec
        doc = plan_document(
            cfg,
            prep,
            names,
            rec,
            float(predictor.predict(space.encode([best.plan]))[0]),
            budget=PlanBudget(value=ch.budget, unit=cfg.search.budget_unit, bytes=ch.cap),
            chosen_by={
                "method": cfg.final.method,
                "sources": best.sources,
                "divergence": best.final,
                "competitors": len(ch.candidates) - 1,
                "data": "held-out calibration windows" if cfg.final.method != "none" else "the search's calibration windows",
            },
        )
        doc.save(plans_dir / f"{ch.budget:g}{cfg.search.budget_unit}.json")

    full = {b: (cost.avg_bits([b] * len(names)), d) for b, d in uniform.items()}
    plot_front(
        run_dir / "front.png",
        [r.avg_bits for r in records],
        [r.divergence for r in records],
        [r.avg_bits for r in front],
        [r.divergence for r in front],
        full,
        list(cfg.search.budgets) if cfg.search.budget_unit == "bits" else [],
        f"{cfg.model.name}: {len(records)} evaluated plans, {cfg.search.metric.upper()} on {cfg.data.num_samples}x{cfg.data.seq_len} tokens",
    )
    return SearchResult(run_dir, records, front, chosen, uniform, pm, choices)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
