"""Issue 19: does the fast search configuration find plans as good as the default's?

    python benchmarks/search/fast_vs_default.py --name tiny-llama                         # the embedded default, CPU
    python benchmarks/search/fast_vs_default.py --name amq-llama-17m --model DIR --calib FILE --test FILE \
        --base +experiment=small_cpu --gptq-samples 128 --seq-len 512                       # the 17M Llama (GPU)

Two searches of one model, side by side, each as shipped (final step included):
- default: the base configuration;
- fast: the same plus `--fast` (default: sensitivity measured at the lowest bit-width only, and the
  candidates scored on a quarter of the calibration windows). The final step quantizes and scores
  on the same windows in both (`final.samples`/`final.seq_len` = the GPTQ windows below), so
  what differs is only what the search itself spends.
Each budget's chosen plan is then judged the same way for both: its proxy divergence on the
default's calibration windows (the default's own scorer), and GPTQ (`--gptq-samples` x `--seq-len`
windows of the calibration text, as `amq.evaluate` quantizes) + perplexity on each test text
whole; and each search's front before the final step: its own best plans per budget re-scored on
the default's windows. With --seeds N every configuration runs under N search seeds and a second
table compares means (the default's spread over its seeds is the noise floor). The search's time
is the sum of its phase timings (iterations.jsonl) plus the final step.
Issue 19's bar: the fast front within 1% of the default's.

Writes benchmarks/search/fast_vs_default_<name>.md and .json (or --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from amq.config import Config, DataConfig, QuantizerConfig, register_configs, to_object
from amq.data import calibration_ids
from amq.evaluate import test_name, test_text
from amq.models import load_model, load_tokenizer, searchable_linears
from amq.perplexity import perplexity, token_stream
from amq.search.final import FinalScorer
from amq.search.loop import build_scorer, prepare, run_search, scorer
from amq.search.outputs import phase_seconds

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("bench")


def config(overrides: list[str]) -> Config:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_object(compose(config_name="config", overrides=["logger=none", *overrides]))


def search_seconds(run_dir: Path) -> float:
    """The search's phases plus its final step (final.json)."""
    final = run_dir / "final.json"
    return phase_seconds(run_dir) + (float(json.loads(final.read_text())["seconds"]) if final.exists() else 0.0)


def searched_plans(cfg: Config, run_dir: Path) -> dict:
    """One search's chosen plan per budget, its time and evaluation count; kept in run_dir/bench.json so that a
    later call (--reuse) need not search again (a device call is limited to 600 s)."""
    done = run_dir / "bench.json"
    if done.exists():
        log.info("reusing %s", done)
        return json.loads(done.read_text())
    result = run_search(cfg, run_dir, show_progress=False)
    doc = {
        "plans": {str(ch.budget): list(ch.best.plan) for ch in result.choices if ch.best},
        "sources": {str(ch.budget): "+".join(ch.best.sources) for ch in result.choices if ch.best},
        "seconds": search_seconds(run_dir),
        "evaluations": len(result.records),
    }
    done.write_text(json.dumps(doc))
    log.info("%s: %.1f s", run_dir, doc["seconds"])
    return doc


def front_plans(run_dir: Path, n: int) -> dict[float, list[tuple]]:
    """The search's own `n` best plans under each budget (by its proxy divergence on its windows), before
    the final step: what its front offers, judged below on the default's windows."""
    rows = [json.loads(line) for line in (run_dir / "archive.jsonl").read_text().splitlines()]
    caps = {float(b["budget"]): int(b["bytes"]) for b in json.loads((run_dir / "final.json").read_text())["budgets"]}
    return {
        b: [tuple(r["plan"]) for r in sorted((r for r in rows if r["bytes"] <= cap), key=lambda r: r["divergence"])[:n]]
        for b, cap in caps.items()
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--model", default="builtin:tiny-llama")
    ap.add_argument("--calib", help="calibration text file (default: the model's builtin calibration)")
    ap.add_argument("--test", action="append", help="test text files or 'builtin' (default: builtin)")
    ap.add_argument("--base", action="append", default=[], help="overrides of both searches, e.g. +experiment=small_cpu")
    ap.add_argument("--fast", action="append", help="the fast configuration's overrides (default: see the docstring)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--gptq-samples", type=int, default=32)
    ap.add_argument("--runs", default=str(ROOT / "outputs" / "bench-fast"), help="run dirs go to RUNS/NAME-<time>")
    ap.add_argument("--control", action="store_true", help="also the default with seed+1: the noise the 1%% bar is read against")
    ap.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDES (space-separated): another configuration beside fast")
    ap.add_argument("--front", type=int, default=4, help="the searched front's quality: the best of each search's N best plans per budget")
    ap.add_argument("--max-windows", type=int, default=None, help="perplexity on the first N windows of each test text (CPU runs)")
    ap.add_argument("--seeds", type=int, default=1, help="run every configuration under this many search seeds; the table compares means")
    ap.add_argument("--reuse", help="a RUNS/NAME-<time> dir of an earlier call: searches that finished there are not run again")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "search" / "results"))
    args = ap.parse_args()
    command = "python benchmarks/search/fast_vs_default.py " + " ".join(sys.argv[1:])
    data = [f"data.path={args.calib}"] if args.calib else []
    base = [f"model.path={args.model}", *data, *args.base, f"final.samples={args.gptq_samples}", f"final.seq_len={args.seq_len}"]
    cfg_default = config(base)
    n = cfg_default.data.num_samples
    fast = args.fast or ["search.sensitivity_bits=lowest", f"data.num_samples={max(1, n // 4)}"]
    variants = {"default": [], "fast": fast, **dict(_variant(v) for v in args.variant)}
    cfgs = {
        run: config([*base, *extra, *([f"seed={cfg_default.seed + k}"] if k else [])])
        for label, extra in variants.items()
        for k, run in enumerate(seed_runs(label, args.seeds))
    }
    if args.control and args.seeds == 1:  # how far the default moves on its own: the same search with another seed
        cfgs["default, seed+1"] = config([*base, f"seed={cfg_default.seed + 1}"])
    runs = Path(args.reuse) if args.reuse else Path(args.runs) / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    log.info("run dirs under %s", runs)

    searched = {label: searched_plans(cfg, runs / label) for label, cfg in cfgs.items()}
    fronts = {label: front_plans(runs / label, args.front) for label in cfgs}
    seconds = {label: s["seconds"] for label, s in searched.items()}
    evaluations = {label: s["evaluations"] for label, s in searched.items()}

    # --- judge both searches' plans the same way ------------------------------------------------
    prep = prepare(cfg_default)
    names = [lay.name for lay in prep.cost.layers]
    plans = {label: {float(b): tuple(p) for b, p in s["plans"].items()} for label, s in searched.items()}
    bank, evaluator, _ = build_scorer(cfg_default, prep.model_path, show_progress=False)
    proxy = scorer(bank, evaluator, prep.cost)
    proxy_div = {label: {b: proxy(p)[0] for b, p in ps.items()} for label, ps in plans.items()}
    front_div = {label: {b: min(proxy(p)[0] for p in ps) for b, ps in fr.items()} for label, fr in fronts.items()}
    bank.restore()
    del bank, evaluator

    model = load_model(replace(cfg_default.model, device="auto"), prep.model_path)
    tok = load_tokenizer(prep.model_path)
    device = next(model.parameters()).device
    batch = 16 if device.type == "cuda" else 4
    tests = {test_name(t): token_stream(test_text(t), tok) for t in (args.test or ["builtin"])}
    calib = DataConfig(name="text", path=args.calib) if args.calib else cfg_default.data
    gptq_ids = calibration_ids(replace(calib, num_samples=args.gptq_samples, seq_len=args.seq_len), tok)
    held_out = calibration_ids(replace(calib, num_samples=args.gptq_samples, seq_len=args.seq_len, seed=calib.seed + 1), tok)
    gptq = QuantizerConfig(method="gptq", group_size=cfg_default.bits.group_size, batch_size=8)
    full = FinalScorer(model, searchable_linears(model), gptq_ids, held_out, gptq, cfg_default.search.metric)
    after: dict[tuple, dict[str, float]] = {}  # per plan: perplexity per test text, and the held-out divergence
    held: dict[tuple, float] = {}
    for ps in plans.values():
        for p in ps.values():
            if p not in after:
                with full.quantized(dict(zip(names, p, strict=True))) as m:
                    held[p] = full.evaluator.score()  # the final step's measure, on the same windows for every search
                    after[p] = {
                        k: perplexity(m, ids, args.seq_len, batch, args.max_windows, show_progress=False)[0] for k, ids in tests.items()
                    }

    doc = {
        "command": command,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "overrides": {"base": base, **{k: v for k, v in variants.items() if k != "default"}},
        "seeds": args.seeds,
        "max_windows": args.max_windows,
        "calibration": {label: [cfg.data.num_samples, cfg.data.seq_len] for label, cfg in cfgs.items() if ", seed+" not in label},
        "search_seconds": seconds,
        "evaluations": evaluations,
        "budgets": {
            str(b): {
                label: {
                    "avg_bits": prep.cost.avg_bits(plans[label][b]),
                    "source": searched[label].get("sources", {}).get(str(b)),
                    "final": held[plans[label][b]],
                    "proxy": proxy_div[label][b],
                    "front": front_div[label][b],
                    "ppl": after[plans[label][b]],
                }
                for label in plans
            }
            for b in plans["default"]
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"fast_vs_default_{args.name}.json").write_text(json.dumps(doc, indent=1))
    (out / f"fast_vs_default_{args.name}.md").write_text(
        render(doc, list(tests)) + (render_means(doc, list(tests)) if args.seeds > 1 else "")
    )
    print((out / f"fast_vs_default_{args.name}.md").read_text())


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name or not overrides:
        raise SystemExit(f"--variant {text!r}: expected NAME=OVERRIDES, e.g. 'quarter=data.num_samples=4'")
    return name, overrides.split()


def _measures(tests: list[str]) -> list[tuple[str, Callable[[dict], float | None], str]]:
    measures: list[tuple[str, Callable[[dict], float | None], str]] = [
        ("after GPTQ (held-out calib)", lambda r: r.get("final"), "{:.5f}"),
        ("proxy", lambda r: r["proxy"], "{:.5f}"),
        ("front: best proxy", lambda r: r.get("front"), "{:.5f}"),
    ]
    return measures + [(f"ppl {t}", lambda r, t=t: r["ppl"][t], "{:.3f}") for t in tests]


def seed_runs(config: str, n: int) -> list[str]:
    """The run labels of `config` under n search seeds: NAME, NAME, seed+1, ..."""
    return [config + (f", seed+{k}" if k else "") for k in range(n)]


def mean_and_ratio(doc: dict, budget: str, config: str, get: Callable[[dict], float | None]) -> tuple[float, float] | None:
    """`config`'s mean over its seeds at `budget`, and its ratio to the default's mean (for the default itself:
    its worst seed / its mean, the search's own noise); None where a run lacks the measure."""
    vals = [get(doc["budgets"][budget][r]) for r in seed_runs(config, doc["seeds"])]
    refs = [get(doc["budgets"][budget][r]) for r in seed_runs("default", doc["seeds"])]
    if any(v is None for v in vals + refs):
        return None
    mean, ref = sum(vals) / len(vals), sum(refs) / len(refs)  # type: ignore[arg-type]
    return mean, (max(vals) / mean if config == "default" else mean / ref)  # type: ignore[type-var]


def render_means(doc: dict, tests: list[str]) -> str:
    """Each configuration's mean over its seeds, per budget and measure, against the default's mean; the
    default's own spread (its worst seed / its mean) is the noise the 1% bar is read against."""
    n = doc["seeds"]
    configs = list(dict.fromkeys(label.split(", seed+")[0] for label in doc["search_seconds"]))
    runs = {c: seed_runs(c, n) for c in configs}
    lines = [
        f"## Means over {n} search seeds",
        "",
        f"Each cell: the mean of the {n} runs (ratio to the default's mean); for the default, its worst run / its mean",
        "in brackets (the search's own noise). Search time: "
        + ", ".join(f"{c} {sum(doc['search_seconds'][r] for r in runs[c]) / n:.1f} s" for c in configs)
        + ".",
        "",
    ]
    measures = _measures(tests)
    header = ["budget", "configuration", *(m for m, _, _ in measures)]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    worst = dict.fromkeys(configs, 0.0)
    for b in doc["budgets"]:
        for c in configs:
            cells = [b, c]
            for _, get, fmt in measures:
                cell = mean_and_ratio(doc, b, c, get)
                if cell is None:
                    cells.append("")
                    continue
                mean, ratio = cell
                worst[c] = max(worst[c], ratio)
                cells.append(fmt.format(mean) + f" ({'worst ' if c == 'default' else ''}{ratio:.3f})")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"The default's worst run against its own mean: {worst['default']:.4f}.")
    for c in configs[1:]:
        lines.append(
            f"Worst ratio of `{c}`'s mean to the default's mean: {worst[c]:.4f} ({'within' if worst[c] <= 1.01 else 'NOT within'} 1%)."
        )
    lines.append("")
    return "\n".join(lines)


def render(doc: dict, tests: list[str]) -> str:
    s = doc["search_seconds"]
    others = [label for label in s if label != "default"]
    lines = [
        f"# Fast search configuration vs the default: {doc['command'].split('--name ')[1].split()[0]}",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Device: {doc['device']}. All: `{' '.join(doc['overrides']['base'])}`; "
        + "; ".join(f"{k} adds `{' '.join(v)}`" for k, v in doc["overrides"].items() if k != "base")
        + ("; `X, seed+k` is X with another search seed (the noise of the search itself)." if len(others) > 1 else "."),
        "Search time (phases + final step): "
        + ", ".join(f"{label} {s[label]:.1f} s" for label in s)
        + f" (fast **{s['default'] / s['fast']:.2f}x faster**); evaluations "
        + " / ".join(str(doc["evaluations"][label]) for label in s)
        + ".",
        "",
        "Each budget's chosen plan, judged the same way for every search: divergence after GPTQ (on the GPTQ windows",
        "below) on held-out calibration windows of the same size (what the final choice ranks by), proxy divergence",
        "on the default's calibration windows, and perplexity after GPTQ on each test text "
        + (f"(its first {doc['max_windows']} windows)." if doc.get("max_windows") else "whole.")
        + " And the searched front",
        "before the final step: the lowest proxy divergence, on the default's windows, among the search's own best",
        "plans under the budget (`front: best proxy`; --front of them, by the search's own scores).",
        "Ratio: the search / default (1.000 = equal; the bar is <= 1.01).",
        "",
    ]
    measures = _measures(tests)
    worst = {label: 1.0 for label in others}
    header = ["budget", "search", "avg bits", "chosen from", *(m for m, _, _ in measures)]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for b, row in doc["budgets"].items():
        d = row["default"]
        for label in ["default", *others]:
            r = row[label]
            cells = [b, label, f"{r['avg_bits']:.3f}", str(r.get("source") or "")]
            for _, get, fmt in measures:
                v, ref = get(r), get(d)
                if v is None or ref is None:
                    cells.append("")
                    continue
                cells.append(fmt.format(v) + ("" if label == "default" else f" ({v / ref:.3f})"))
                if label != "default":
                    worst[label] = max(worst[label], v / ref)
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for label, w in worst.items():
        lines.append(f"Worst ratio of `{label}` to the default: {w:.4f} ({'within' if w <= 1.01 else 'NOT within'} 1%).")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
