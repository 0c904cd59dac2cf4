"""Issue 19: the one-GPU search settings (`+experiment=llama2_7b`, `llama2_13b`) projected from
phases measured on the GPU by search_cost_7b.py.

    python benchmarks/search/one_gpu_projection.py --out benchmarks/search/results/one_gpu_projection.md

Reads the phase lines the GPU runs printed (logs/search_cost_{7b,13b}_h200.log: seconds and peak
GPU memory per phase) and the experiments' own settings (Hydra, this repository's conf/), and
adds up what such a search does:
- setup: model, the reference log-probs on the experiment's calibration, the proxy bank;
- the sensitivity pass from cached block inputs at the lowest bit-width (each layer costs the
  blocks from its own to the last; linear between the measured blocks 0 and last), scaled from
  128 x 2048 to the experiment's calibration by the measured candidate ratio;
- the search's real evaluations (initial plans, ILP seeds, iterations x candidates) at the
  experiment's calibration, plus a predictor fit and an NSGA-II round per iteration;
- the final choice: at most budgets x (top_k + 3 peers) plans, each a whole-model GPTQ + score.
A phase missing from a log (the first 13B run was cut before the NSGA-II round) is taken from the
13B run with the bank in host memory (results/logs/search_cost_13b_h200_bank-cpu.log, the same GPU machine),
else measured here, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "kernels")]

from search_cost_7b import build_model_meta, nsga_round, synthetic_archive  # noqa: E402  (the GPU benchmark's shapes and round)

from amq.config import Config, OptimizerConfig, PredictorConfig, register_configs, to_object  # noqa: E402
from amq.cost import build_cost_model  # noqa: E402
from amq.models import decoder_blocks, layer_blocks, layer_infos, searchable_linears  # noqa: E402
from amq.predictor import make_predictor  # noqa: E402
from amq.search.space import SearchSpace  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LINE = re.compile(r"^(?P<phase>.+?): (?P<s>[\d.]+) s, GPU peak (?P<gpu>[\d.]+) GB")
ROUNDS_LOG = RESULTS / "logs/round_cost_h200.log"  # round_cost.py's output on the GPU machine, if taken
ROUND_LINE = re.compile(r"^(\w+): predictor fit \+ NSGA-II round: ([\d.]+) s", re.M)


def phases(log: Path) -> dict[str, tuple[float, float]]:
    return {m["phase"]: (float(m["s"]), float(m["gpu"])) for m in map(LINE.match, log.read_text().splitlines()) if m}


def experiment(name: str, overrides: tuple[str, ...] = ()) -> Config:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_object(compose(config_name="config", overrides=["logger=none", f"+experiment={name}", *overrides]))


def nsga_round_seconds(model, cfg: Config) -> float:
    """One predictor fit + NSGA-II round on this CPU, as search_cost_7b.py times them on the GPU machine."""
    cost = build_cost_model(layer_infos(model), cfg.bits.choices, cfg.bits.group_size, sum(p.numel() for p in model.parameters()))
    space = SearchSpace(tuple(searchable_linears(model)), tuple(cfg.bits.choices))
    x, y = synthetic_archive(space, cost, np.random.default_rng(0))
    t = time.perf_counter()
    pred = make_predictor(PredictorConfig(name="rbf"), 0)
    pred.fit(x, y)
    nsga_round(space, cost, pred, OptimizerConfig())
    return time.perf_counter() - t


# what a run with the proxy bank in host memory (proxy.bank_device=cpu, at the setting's own 32 x 2048) measured
# differently: setup, the candidate, the NSGA-II round (on the GPU machine); everything else is the bank's
# device's business in neither
HOST_BANK = (
    "build model (random weights)",
    "proxy bank: HQQ at {2,3,4} bits, every layer",
    "candidate: swap + score (32 x 2048)",
    "predictor fit (rbf, 250 plans)",
    "NSGA-II proposal round (population 100, 20 generations)",
)


def project(
    model: str,
    log: Path,
    host_bank: Path | None = None,
    nsga_log: Path | None = None,
    overrides: tuple[str, ...] = (),
    extra: tuple[Path, ...] = (),
) -> tuple[list[tuple[str, str, float]], float, dict]:
    """The experiment's phases (with `overrides`) from `log`, and those `log` lacks (another calibration
    size) from the `extra` logs, the first that has one; with `host_bank`, the phases in HOST_BANK and the
    search phases' peak memory from that run instead."""
    cfg = experiment(model, overrides)
    ph = phases(log)
    for more in extra:
        ph = {**phases(more), **ph}
    search_peak_from = ph
    if host_bank is not None:
        search_peak_from = phases(host_bank)
        ph.update({k: search_peak_from[k] for k in HOST_BANK})
    meta = build_model_meta(model)
    n_blocks = len(decoder_blocks(meta))
    blocks = layer_blocks(meta, list(searchable_linears(meta)))
    n = len(blocks)
    tokens = f"{cfg.data.num_samples} x {cfg.data.seq_len}"
    sens_tokens = f"{cfg.search.sensitivity_samples or cfg.data.num_samples} x {cfg.data.seq_len}"
    final_tokens = f"{cfg.final.samples or cfg.data.num_samples} x {cfg.final.seq_len or cfg.data.seq_len}"
    eval_full = ph["candidate: swap + score (128 x 2048)"][0]
    eval_small = ph[f"candidate: swap + score ({tokens})"][0]
    eval_sens = ph[f"candidate: swap + score ({sens_tokens})"][0]
    first = ph["sensitivity from cached inputs of block 0 (one evaluation)"][0]
    last = ph[f"sensitivity from cached inputs of block {n_blocks - 1} (one evaluation)"][0]
    scale = eval_sens / eval_full  # the blocks were timed at 128 x 2048
    if host_bank is not None:  # timed at the setting's own calibration there
        first = search_peak_from["sensitivity from cached inputs of block 0 (one evaluation)"][0]
        last = search_peak_from[f"sensitivity from cached inputs of block {n_blocks - 1} (one evaluation)"][0]
        scale = 1.0
    sens_pass = sum(first + (last - first) * b / (n_blocks - 1) for b in blocks) * scale
    s = cfg.search
    evals = s.initial_random + 3 + len(s.budgets) + s.ilp_seeds + s.iterations * s.candidates
    nsga_key = next((k for k in ph if k.startswith("NSGA-II")), None)
    if nsga_key is None and nsga_log is not None:  # the same model's round, timed by another run on the GPU machine
        ph.update({k: v for k, v in phases(nsga_log).items() if k.startswith(("NSGA-II", "predictor fit"))})
        nsga_key = next((k for k in ph if k.startswith("NSGA-II")), None)
    rounds = dict(ROUND_LINE.findall(ROUNDS_LOG.read_text())) if ROUNDS_LOG.exists() else {}
    if model in rounds:  # the current code's round, timed alone on the GPU machine
        round_s, round_note = float(rounds[model]), f"GPU machine, round_cost.py ({ROUNDS_LOG.relative_to(RESULTS)})"
    elif nsga_key:
        round_s, round_note = ph[nsga_key][0] + ph["predictor fit (rbf, 250 plans)"][0], "GPU machine"
    else:
        round_s, round_note = nsga_round_seconds(meta, cfg), "measured on this CPU (not in the log)"
    final_plans = len(s.budgets) * (cfg.final.top_k + 3)
    final_plan_s = ph[f"final step: one candidate plan, GPTQ on {final_tokens} + score"][0]
    rows = [
        (
            "setup: model + proxy bank",
            "measured",
            ph["build model (random weights)"][0] + ph["proxy bank: HQQ at {2,3,4} bits, every layer"][0],
        ),
        (f"setup: reference log-probs ({tokens})", "measured", ph[f"reference log-probs ({tokens})"][0]),
        (
            f"sensitivity, lowest bit-width, {n} layers from cached block inputs ({sens_tokens})",
            f"{first:.2f} s (block 0) .. {last:.2f} s (block {n_blocks - 1}) x {scale:.3f}",
            sens_pass,
        ),
        (f"search: {evals} real evaluations ({tokens})", f"{evals} x {eval_small:.2f} s", evals * eval_small),
        (
            f"search: {s.iterations} predictor fits + NSGA-II rounds",
            f"{s.iterations} x {round_s:.1f} s ({round_note})",
            s.iterations * round_s,
        ),
        (
            f"final step: held-out reference log-probs ({final_tokens})",
            "measured, with a host copy of the weights the code no longer makes (it restores from the proxy bank's): an upper bound",
            ph[f"final step: reference log-probs of the held-out windows ({final_tokens})"][0],
        ),
        (
            f"final step: at most {final_plans} plans (top_k {cfg.final.top_k} + ILP, greedy, uniform, x {len(s.budgets)} budgets)",
            f"{final_plans} x {final_plan_s:.1f} s",
            final_plans * final_plan_s,
        ),
    ]
    search_peak = max(g for k, (_, g) in search_peak_from.items() if not k.startswith(("final", "predictor", "NSGA")))
    final_peak = max(
        g for k, (_, g) in ph.items() if k.startswith("final") and k.endswith((f"({final_tokens})", f"{final_tokens} + score"))
    )
    # several GPUs (amq.worker, one model per GPU): only the search's real evaluations are shared out, a batch
    # (the initial archive, then each iteration's candidates) taking ceil(batch / GPUs) evaluations' time
    initial = evals - s.iterations * s.candidates
    gpus = {
        g: sum(r[2] for r in rows) - evals * eval_small + (-(-initial // g) + s.iterations * -(-s.candidates // g)) * eval_small
        for g in (2, 4, 8)
    }
    return rows, sum(r[2] for r in rows), {"search_peak": search_peak, "final_peak": final_peak, "gpus": gpus}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lines = [
        "# One-GPU search settings at 7B and 13B, projected from H200 phases",
        "",
        f"Command: `python benchmarks/search/one_gpu_projection.py {' '.join(sys.argv[1:])}` (here, no GPU), from the phase logs of",
        "`python benchmarks/search/search_cost_7b.py` on an H200 named in each section (the first 13B run,",
        "logs/search_cost_13b_h200.log, was cut by the call's time limit after the predictor fit), and one search",
        "iteration's CPU work (predictor fit + NSGA-II round) timed alone on the GPU machine by `round_cost.py`",
        "(logs/round_cost_h200.log). Settings: `+experiment=llama2_7b` / `llama2_13b` as shipped, then the setting",
        "they replaced.",
        "",
    ]
    # the setting before 2026-12-03 (fourth session): candidates and sensitivity on 32 x 2048, the final choice on 128
    quarter = ("data.num_samples=32", "search.sensitivity_samples=null", "final.samples=128")
    logs = RESULTS / "logs"
    before = "before 2026-12-03 (`" + " ".join(quarter) + "`)"
    runs = (  # title, experiment, log, host-bank log, overrides, logs of phases the first lacks (other calibration sizes)
        (
            "llama2_7b as shipped (phases from logs/search_cost_7b_h200_half.log: `search_cost_7b.py --model llama2_7b"
            " --sens-evals 2 --small 32x2048,64x2048 --final 32x2048`)",
            "llama2_7b",
            logs / "search_cost_7b_h200_half.log",
            None,
            (),
            (),
        ),
        (
            "llama2_13b as shipped (the 64 x 2048 phases from logs/search_cost_13b_h200_64.log: `search_cost_7b.py --model"
            " llama2_13b --samples 64 --sens-evals 1 --small '' --final ''`; the final step's at 32 x 2048 from"
            " logs/search_cost_13b_h200_bank-cpu.log)",
            "llama2_13b",
            logs / "search_cost_13b_h200.log",
            None,
            (),
            (logs / "search_cost_13b_h200_64.log", logs / "search_cost_13b_h200_bank-cpu.log"),
        ),
        (f"llama2_7b, {before}", "llama2_7b", logs / "search_cost_7b_h200.log", None, quarter, ()),
        (f"llama2_13b, {before}", "llama2_13b", logs / "search_cost_13b_h200.log", None, quarter, ()),
        (
            f"llama2_13b, {before}, proxy bank in host memory (`proxy.bank_device=cpu`; what `auto` picks on an 80 GB GPU)",
            "llama2_13b",
            logs / "search_cost_13b_h200.log",
            logs / "search_cost_13b_h200_bank-cpu.log",
            quarter,
            (),
        ),
    )
    for title, model, log, host_bank, overrides, extra in runs:
        nsga_log = logs / "search_cost_13b_h200_bank-cpu.log" if model == "llama2_13b" else None
        rows, total, mem = project(model, log, host_bank, nsga_log, overrides, extra)
        lines += [
            f"## {title}",
            "",
            *(
                [
                    f"Setup, the sensitivity blocks, the candidate, the NSGA-II round and the search phases' peak memory from {host_bank.relative_to(RESULTS)}",
                    "(`search_cost_7b.py --model llama2_13b --samples 32 --sens-evals 2 --small '' --final 32x2048 --bank-device cpu`);",
                    "the rest as above.",
                    "",
                ]
                if host_bank
                else []
            ),
            "| phase | how | seconds |",
            "|---|---|---|",
            *[f"| {name} | {how} | {sec:.0f} |" for name, how, sec in rows],
            f"| **total** | | **{total:.0f} s = {total / 60:.1f} min** |",
            "",
            f"Peak GPU memory measured: {mem['search_peak']:.1f} GB in the search phases (with the "
            + (
                "32 x 2048 reference log-probs resident, the setting's own; the peak is the random weights' construction),"
                if host_bank
                else "128 x 2048 reference log-probs of the benchmark's first phases resident),"
            ),
            f"{mem['final_peak']:.1f} GB in the final step.",
            "",
            "Several GPUs (projected, not measured: no machine of several GPUs was lent): `amq.worker` shares out only the",
            "search's real evaluations, so the total falls to "
            + ", ".join(f"{t / 60:.1f} min with {g}" for g, t in mem["gpus"].items())
            + " GPUs; the sensitivity pass and the final step stay on one.",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
