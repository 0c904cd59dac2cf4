"""Issue 17: would more integer-programming plans in the final choice have won after GPTQ?

    python benchmarks/quality/extra_ilp_candidates.py RUN_DIR [RUN_DIR ...]   # finished search run dirs

The final step ranks each budget's candidates (the search's best by the proxy, ILP, greedy and
uniform on the measured sensitivity table) by their divergence after the final quantizer on
held-out calibration windows. Two more ILP plans cost one GPTQ run each and see the problem
differently: the ILP on the sensitivity table **refitted to the archive** (`fit_additive`, what the
search's per-iteration refit uses) and the ILP on the table whose higher bit-widths are **scaled
from the lowest by the proxy's weight error** (`search.sensitivity_bits=lowest`'s estimate). For
each run and budget this scores both exactly as the run's final step scored its candidates (same
quantizer, same GPTQ and held-out windows, read from the run's config) and sets them beside the
plan the run chose. Never test data: the question is only whether the final step's own ranking
would have preferred them.

Writes benchmarks/quality/results/extra_ilp_candidates.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from amq.config import Config, QuantizerConfig, config_from_dict
from amq.data import calibration_ids
from amq.models import load_model, load_tokenizer, searchable_linears
from amq.plan_sources import read_sensitivity
from amq.quant.bank import ProxyBank
from amq.search.final import FinalScorer
from amq.search.ilp import allocate, fit_additive, loss_table
from amq.search.loop import prepare
from amq.search.sensitivity import weight_error_estimate
from amq.search.space import SearchSpace
from amq.search.ties import tie_groups


def run_config(run_dir: Path) -> Config:
    """The run's config: Hydra's copy, or (a run started in-process) the one its study records."""
    if (run_dir / ".hydra" / "config.yaml").exists():
        return config_from_dict(OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml")))
    import optuna

    from amq.search.archive import STUDY_NAME, open_storage

    return config_from_dict(optuna.load_study(study_name=STUDY_NAME, storage=open_storage(run_dir)).user_attrs["config"])


def study(run_dir: Path) -> list[dict]:
    cfg = run_config(run_dir)
    prep = prepare(cfg)
    names = [lay.name for lay in prep.cost.layers]
    choices = tuple(cfg.bits.choices)
    per_bits = read_sensitivity(run_dir)
    measured = loss_table(per_bits, names, choices)
    rows = [json.loads(x) for x in (run_dir / "archive.jsonl").read_text().splitlines() if x.strip()]
    refit = fit_additive([tuple(r["plan"]) for r in rows], np.array([r["divergence"] for r in rows]), measured, choices)

    model = load_model(cfg.model, prep.model_path)
    linears = searchable_linears(model)
    bank = ProxyBank(linears, choices, cfg.bits.group_size, cfg.proxy, show_progress=False)
    lowest = choices[0]
    estimate = weight_error_estimate(bank.sq_error, lowest)
    scaled = loss_table({n: {b: estimate(n, b, per_bits[n][lowest]) for b in choices} for n in names}, names, choices)
    bank.restore()
    del bank

    final = json.loads((run_dir / "final.json").read_text())
    data = replace(cfg.data, num_samples=cfg.final.samples or cfg.data.num_samples, seq_len=cfg.final.seq_len or cfg.data.seq_len)
    tok = load_tokenizer(prep.model_path, cfg.model.trust_remote_code)
    quantizer = QuantizerConfig(method=cfg.final.method, group_size=cfg.bits.group_size, batch_size=cfg.data.batch_size)
    scorer = FinalScorer(
        model, linears, calibration_ids(data, tok), calibration_ids(replace(data, seed=data.seed + 1), tok), quantizer, cfg.search.metric
    )
    space = SearchSpace(tuple(names), choices, ties=tie_groups(names, cfg.search.tie))
    table = prep.cost.table()
    scored = {tuple(int(s["layers"][n]) for n in names): s["final_divergence"] for s in final["scores"]}
    out = []
    for b in final["budgets"]:
        cands = b["candidates"]
        chosen = cands[0]
        ilp = next((c for c in cands if "ilp" in c["sources"]), None)
        row = {"run": run_dir.parent.name + "/" + run_dir.name, "budget": b["budget"], "chosen": "+".join(chosen["sources"]),
               "chosen_div": chosen["final_divergence"], "ilp_div": ilp["final_divergence"] if ilp else None}  # fmt: skip
        for label, tab in (("refit", refit), ("scaled", scaled)):
            plan = allocate(tab, table, b["bytes"], space)
            if plan is None:
                row[label] = None
                continue
            if plan not in scored:
                scored[plan] = scorer.score(dict(zip(names, plan, strict=True)))
            row[label] = scored[plan]
        out.append(row)
        print(row, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extra_ilp_candidates.md")
    args = ap.parse_args()
    rows = [r for run in args.runs for r in study(run)]
    lines = [
        "# More ILP plans in the final choice? (issue 17)",
        "",
        f"Command: `python benchmarks/quality/extra_ilp_candidates.py {' '.join(sys.argv[1:])}`",
        "",
        "Divergence after the run's final quantizer on its held-out calibration windows (lower is better): the plan the",
        "run's final step chose, its ILP peer, and the ILP on the archive-refitted table and on the weight-error-scaled",
        "table, each scored the same way. `gain` is the best extra plan against the chosen one.",
        "",
        "| run | budget | chosen (from) | chosen | ILP | ILP, refitted table | ILP, scaled table | gain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        extra = [v for v in (r["refit"], r["scaled"]) if v is not None]
        gain = f"{100 * (min(extra) / r['chosen_div'] - 1):+.2f}%" if extra else ""
        fmt = lambda v: f"{v:.5g}" if v is not None else ""  # noqa: E731
        lines.append(
            f"| {r['run']} | {r['budget']:g} | {r['chosen']} | {fmt(r['chosen_div'])} | {fmt(r['ilp_div'])} | "
            f"{fmt(r['refit'])} | {fmt(r['scaled'])} | {gain} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
