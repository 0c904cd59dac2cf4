"""The last step of a search: each budget's plan is chosen by the real quantizer.

The search ranks plans by a proxy (a bank quantized once and swapped in). What the user gets is
the plan after the final quantizer (GPTQ by default), and the two rankings disagree exactly at
the small margins that separate the best plans. So, per budget, the `final.top_k` evaluated
plans that fit (lowest proxy divergence first) and the peers' plans at the same budget (ILP and
greedy on the sensitivity table, the largest uniform plan that fits) are quantized for real and
scored by their divergence from the 16-bit model on held-out calibration windows: the same
calibration text, windows drawn with another seed, so that the choice is not made on the very
tokens GPTQ fitted (and never on test data). The lowest wins. By construction the budget's plan
is then never worse, on those windows, than the peers it competes with.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm

from amq.config import AMQConfigError, Config, QuantizerConfig
from amq.data import calibration_ids
from amq.metrics import DivergenceEvaluator
from amq.models import load_tokenizer
from amq.quant.apply import quantize_model
from amq.quant.bank import ProxyBank
from amq.rundir import write_json_atomic
from amq.search.archive import Record
from amq.search.ilp import allocate, greedy, loss_table
from amq.search.space import Plan, SearchSpace

if TYPE_CHECKING:
    from amq.search.loop import Prepared
    from amq.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One plan competing for a budget."""

    plan: Plan
    sources: list[str]  # where it came from: search (with its archive source), ilp, greedy, uniform-<b>
    bytes: int
    avg_bits: float
    proxy: float  # divergence with the proxy bank, on the search's calibration windows
    final: float | None = None  # divergence after the final quantizer, on the held-out windows
    seconds: float = 0.0  # time to quantize and score it

    def as_dict(self, names: Sequence[str]) -> dict:
        return {
            "sources": self.sources,
            "avg_bits": self.avg_bits,
            "bytes": self.bytes,
            "proxy_divergence": self.proxy,
            "final_divergence": self.final,
            "seconds": round(self.seconds, 3),
            "layers": dict(zip(names, self.plan, strict=True)),
        }


@dataclass
class BudgetChoice:
    """A budget's candidates after the final quantizer, best first."""

    budget: float
    cap: int
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def budget_candidates(
    cap: int,
    records: Sequence[Record],
    peers: Mapping[str, Plan | None],
    top_k: int,
    plan_bytes: Callable[[Plan], int],
    avg_bits: Callable[[Plan], float],
    proxy_score: Callable[[Plan], float],
) -> list[Candidate]:
    """The search's `top_k` plans under `cap` by proxy divergence, then every peer plan that
    fits; a plan found by several is one candidate with all its sources."""
    fits = sorted((r for r in records if r.bytes <= cap), key=lambda r: r.divergence)
    known = {r.plan: r.divergence for r in records}
    out: dict[Plan, Candidate] = {}
    for r in fits:
        if len(out) >= top_k:
            break
        if r.plan not in out:
            out[r.plan] = Candidate(r.plan, [f"search:{r.source}"], r.bytes, r.avg_bits, r.divergence)
    for source, plan in peers.items():
        if plan is None or plan_bytes(plan) > cap:
            continue
        if plan in out:
            out[plan].sources.append(source)
        else:
            proxy = known[plan] if plan in known else proxy_score(plan)
            out[plan] = Candidate(plan, [source], plan_bytes(plan), avg_bits(plan), proxy)
    return list(out.values())


class FinalScorer:
    """Quantizes the model to a plan with the final quantizer and scores its divergence on
    held-out calibration windows; puts the full-precision weights back after each plan.

    `model` must hold its full-precision weights when this is built (the reference log-probs
    are computed from it)."""

    def __init__(
        self,
        model: nn.Module,
        linears: Mapping[str, nn.Linear],
        calib_ids: torch.Tensor,
        select_ids: torch.Tensor,
        quantizer: QuantizerConfig,
        metric: str,
        originals: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.linears = dict(linears)
        self.calib_ids = calib_ids
        self.quantizer = quantizer
        self.evaluator = DivergenceEvaluator(model, select_ids, quantizer.batch_size, metric)
        # GPTQ, HQQ and RTN replace each weight's tensor and leave the old one alone, so keeping
        # references is enough to put them back; AWQ also rescales norms in place: it runs on a copy.
        # `originals`: full-precision weights kept elsewhere (the proxy bank's, in host memory with
        # its default storage), so that the GPU does not hold them beside the quantized ones
        # (26 GB more at the peak for a 13B model)
        self.weights = dict(originals) if originals is not None else {n: lin.weight.data for n, lin in self.linears.items()}

    @contextlib.contextmanager
    def quantized(self, plan: Mapping[str, int]) -> Iterator[nn.Module]:
        """The model quantized to `plan` for the duration of the block (what `score` scores)."""
        work = copy.deepcopy(self.model) if self.quantizer.method == "awq" else self.model
        try:
            quantize_model(work, plan, self.quantizer, self.calib_ids, show_progress=False, pack_layers=False)
            self.evaluator.model = work
            yield work
        finally:
            self.evaluator.model = self.model
            for n, w in self.weights.items():
                self.linears[n].weight.data = w.to(self.evaluator.device, non_blocking=True)  # (no copy when already there)

    def score(self, plan: Mapping[str, int]) -> float:
        with self.quantized(plan):
            return self.evaluator.score()


class FinalRecord:
    """final.json: every plan's score after the final quantizer, written as each one is done
    (an interrupted run resumes without scoring it again), then each budget's ranking."""

    def __init__(self, path: Path, key: dict, names: Sequence[str]) -> None:
        self.path, self.key, self.names = path, key, list(names)
        self.scores: dict[Plan, tuple[float, float]] = {}
        self.seconds = 0.0  # spent so far, over every run that worked on it
        self.budgets: list[dict] = []
        if path.exists():
            try:
                doc = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise AMQConfigError(f"{path}: not valid JSON; delete it to score the final candidates again") from None
            if doc.get("key") == key:
                self.seconds = float(doc.get("seconds", 0.0))
                for row in doc.get("scores", []):
                    self.scores[tuple(int(row["layers"][n]) for n in self.names)] = (float(row["final_divergence"]), float(row["seconds"]))

    def add(self, plan: Plan, divergence: float, seconds: float) -> None:
        self.scores[plan] = (divergence, seconds)
        self.seconds += seconds
        self.write()

    def write(self, choices: list[BudgetChoice] | None = None, unit: str = "bits") -> None:
        if choices is not None:
            self.budgets = [
                {"budget": ch.budget, "unit": unit, "bytes": ch.cap, "candidates": [c.as_dict(self.names) for c in ch.candidates]}
                for ch in choices
            ]
        scores = [
            {"final_divergence": d, "seconds": round(t, 3), "layers": dict(zip(self.names, p, strict=True))}
            for p, (d, t) in self.scores.items()
        ]
        write_json_atomic(self.path, {"key": self.key, "seconds": self.seconds, "scores": scores, "budgets": self.budgets})


def choose(
    choices: list[BudgetChoice],
    names: Sequence[str],
    scorer: FinalScorer,
    record: FinalRecord | None = None,
    show_progress: bool = True,
) -> list[BudgetChoice]:
    """Score every candidate of every budget after the final quantizer (a plan shared by
    budgets once; plans already in `record` are not scored again), best first."""
    scores: dict[Plan, tuple[float, float]] = dict(record.scores) if record else {}
    todo = list(dict.fromkeys(c.plan for ch in choices for c in ch.candidates if c.plan not in scores))
    for plan in tqdm(todo, desc=f"final choice ({scorer.quantizer.method})", unit="plan", disable=not show_progress):
        t = time.perf_counter()
        div = scorer.score(dict(zip(names, plan, strict=True)))
        scores[plan] = (float(f"{div:.6e}"), time.perf_counter() - t)
        if record is not None:
            record.add(plan, *scores[plan])
    for ch in choices:
        for c in ch.candidates:
            c.final, c.seconds = scores[c.plan]
        ch.candidates.sort(key=lambda c: (c.final, c.bytes))
    return choices


def final_choice(
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
    bank.release()  # no proxy plan is swapped in after this
    tokenizer = load_tokenizer(prep.model_path, cfg.model.trust_remote_code)
    calib = calibration_ids(data, tokenizer)  # the windows `amq.evaluate` quantizes with, for the same data settings
    held_out = calibration_ids(replace(data, seed=data.seed + 1), tokenizer)
    quantizer = QuantizerConfig(method=cfg.final.method, group_size=cfg.bits.group_size, batch_size=cfg.data.batch_size)
    scorer = FinalScorer(evaluator.model, bank.linears, calib, held_out, quantizer, cfg.search.metric, bank.original)
    choose(choices, names, scorer, record, show_progress)
    record.write(choices, cfg.search.budget_unit)
    _report(choices, cfg, record.seconds, tracker)
    return choices


def _report(choices: list[BudgetChoice], cfg: Config, seconds: float, tracker: Tracker) -> None:
    """Each budget's winner and its peers in the log; every candidate in W&B."""
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
