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
whole. The search's time is the sum of its phase timings (iterations.jsonl) plus the final step.
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
    ap.add_argument("--runs", default=str(ROOT / "outputs" / "bench-fast"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "search"))
    args = ap.parse_args()
    command = "python benchmarks/search/fast_vs_default.py " + " ".join(sys.argv[1:])
    data = [f"data.path={args.calib}"] if args.calib else []
    base = [f"model.path={args.model}", *data, *args.base, f"final.samples={args.gptq_samples}", f"final.seq_len={args.seq_len}"]
    cfg_default = config(base)
    n = cfg_default.data.num_samples
    fast = args.fast or ["search.sensitivity_bits=lowest", f"data.num_samples={max(1, n // 4)}"]
    cfgs = {"default": cfg_default, "fast": config([*base, *fast])}
    runs = Path(args.runs) / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    results, seconds = {}, {}
    for label, cfg in cfgs.items():
        results[label] = run_search(cfg, runs / label, show_progress=False)
        seconds[label] = search_seconds(runs / label)
        log.info("%s search: %.1f s", label, seconds[label])

    # --- judge both searches' plans the same way ------------------------------------------------
    prep = prepare(cfg_default)
    names = [lay.name for lay in prep.cost.layers]
    plans = {label: {ch.budget: ch.best.plan for ch in r.choices if ch.best} for label, r in results.items()}
    bank, evaluator, _ = build_scorer(cfg_default, prep.model_path, show_progress=False)
    proxy = scorer(bank, evaluator, prep.cost)
    proxy_div = {label: {b: proxy(p)[0] for b, p in ps.items()} for label, ps in plans.items()}
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
    after: dict[tuple, dict[str, float]] = {}
    for ps in plans.values():
        for p in ps.values():
            if p not in after:
                with full.quantized(dict(zip(names, p, strict=True))) as m:
                    after[p] = {k: perplexity(m, ids, args.seq_len, batch, show_progress=False)[0] for k, ids in tests.items()}

    doc = {
        "command": command,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "overrides": {"base": base, "fast": fast},
        "search_seconds": seconds,
        "evaluations": {label: len(r.records) for label, r in results.items()},
        "budgets": {
            str(b): {
                label: {"avg_bits": prep.cost.avg_bits(plans[label][b]), "proxy": proxy_div[label][b], "ppl": after[plans[label][b]]}
                for label in plans
            }
            for b in plans["default"]
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"fast_vs_default_{args.name}.json").write_text(json.dumps(doc, indent=1))
    (out / f"fast_vs_default_{args.name}.md").write_text(render(doc, list(tests)))
    print((out / f"fast_vs_default_{args.name}.md").read_text())


def render(doc: dict, tests: list[str]) -> str:
    s = doc["search_seconds"]
    lines = [
        f"# Fast search configuration vs the default: {doc['command'].split('--name ')[1].split()[0]}",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Device: {doc['device']}. Both: `{' '.join(doc['overrides']['base'])}`; fast adds `{' '.join(doc['overrides']['fast'])}`.",
        f"Search time (phases + final step): default {s['default']:.1f} s, fast {s['fast']:.1f} s "
        f"(**{s['default'] / s['fast']:.2f}x faster**); evaluations {doc['evaluations']['default']} / {doc['evaluations']['fast']}.",
        "",
        "Each budget's chosen plan, judged the same way for both: proxy divergence on the default's calibration windows,",
        "and perplexity after GPTQ on each test text whole. Ratio: fast / default (1.000 = equal; the bar is <= 1.01).",
        "",
        "| budget | default bits | fast bits | proxy default | proxy fast | ratio | "
        + " | ".join(f"ppl {t} default | ppl {t} fast | ratio" for t in tests)
        + " |",
        "|---" * (6 + 3 * len(tests)) + "|",
    ]
    worst = 0.0
    for b, row in doc["budgets"].items():
        d, f = row["default"], row["fast"]
        cells = [
            b,
            f"{d['avg_bits']:.3f}",
            f"{f['avg_bits']:.3f}",
            f"{d['proxy']:.5f}",
            f"{f['proxy']:.5f}",
            f"{f['proxy'] / d['proxy']:.3f}",
        ]
        for t in tests:
            cells += [f"{d['ppl'][t]:.3f}", f"{f['ppl'][t]:.3f}", f"{f['ppl'][t] / d['ppl'][t]:.3f}"]
            worst = max(worst, f["ppl"][t] / d["ppl"][t])
        worst = max(worst, f["proxy"] / d["proxy"])
        lines.append("| " + " | ".join(cells) + " |")
    verdict = "within" if worst <= 1.01 else "NOT within"
    lines += ["", f"Worst ratio {worst:.4f}: the fast front is {verdict} 1% of the default's on this model.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
