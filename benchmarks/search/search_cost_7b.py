"""What the search costs at Llama-2 scale, phase by phase, on one GPU (no weights needed).

    python benchmarks/search/search_cost_7b.py --model llama2_7b --out benchmarks/search/results/search_cost.md

Builds a Llama-2-7B-shaped model from its published shape (random non-zero weights: timing
and memory do not depend on the values), then runs the real pipeline phases on it with the
code the search uses: reference outputs (DivergenceEvaluator), the proxy bank (ProxyBank),
the sensitivity pass (timed on the first layers, extrapolated to all), one candidate plan's
evaluation at 128 x 2048 tokens and at smaller settings, the predictor fit and one NSGA-II
proposal round. Time and peak GPU / host memory per phase, then the projected wall time of a
full search with AMQ's published defaults and with ours.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "kernels")]

from amq.config import FinalConfig, OptimizerConfig, PredictorConfig, ProxyConfig, QuantizerConfig, SearchConfig  # noqa: E402
from amq.cost import build_cost_model  # noqa: E402
from amq.metrics import DivergenceEvaluator  # noqa: E402
from amq.models import decoder_blocks, layer_blocks, layer_infos, searchable_linears  # noqa: E402
from amq.predictor import make_predictor  # noqa: E402
from amq.prefix import BlockPrefix  # noqa: E402
from amq.quant.bank import FULL, ProxyBank  # noqa: E402
from amq.search.final import FinalScorer  # noqa: E402
from amq.search.nsga import pick_spread, propose  # noqa: E402
from amq.search.space import SearchSpace  # noqa: E402

# Published shapes (the models' config.json on the hub)
SHAPES = {
    "llama2_7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "llama2_13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40),
}
# AMQ's published search settings (scripts/amq_search.sh of github.com/dlwns147/amq):
# 250 initial plans (n_doe), 200 iterations of 50 candidates, sensitivity at the lowest bits only.
AMQ_DEFAULTS = {"initial": 250, "iterations": 200, "candidates": 50, "sensitivity_bits": 1}


def gpu_peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9


def host_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


class Phases:
    """Times each phase (CUDA-synchronized) with its peak GPU and host memory."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def run(self, name: str, fn, note: str = ""):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        sec = time.perf_counter() - t
        self.rows.append({"phase": name, "seconds": sec, "gpu_peak_gb": gpu_peak_gb(), "host_peak_gb": host_peak_gb(), "note": note})
        print(f"{name}: {sec:.2f} s, GPU peak {gpu_peak_gb():.1f} GB, host peak {host_peak_gb():.1f} GB {note}", flush=True)
        return out


def build_model(name: str, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[name], vocab_size=vocab, max_position_embeddings=4096, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16)
    for p in model.parameters():  # random non-zero weights at a realistic scale
        torch.nn.init.normal_(p.data, 0.0, 0.02) if p.dim() > 1 else p.data.fill_(1.0)
    return model.eval()


def build_model_meta(name: str, vocab: int = 32000):
    """The published shape on the meta device: layer names and sizes, no memory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**SHAPES[name], vocab_size=vocab))


def synthetic_archive(space: SearchSpace, cost, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """250 random plans (AMQ's initial size) with a synthetic divergence: fitting and proposing cost
    the same whatever the numbers."""
    archive = space.random_plans(250, rng)
    y = np.array([1.0 / cost.avg_bits(p) ** 3 for p in archive]) * rng.lognormal(0, 0.05, len(archive))
    return space.encode(archive), y


def nsga_round(space: SearchSpace, cost, pred, opt: OptimizerConfig) -> None:
    """One NSGA-II proposal round on the predictor, then the spread pick, as an iteration does."""
    lo, hi = cost.plan_bytes(space.uniform(2)), cost.plan_bytes(space.uniform(4))
    pick_spread(
        propose(space, lambda p: pred.predict(space.encode(p)), cost.plan_bytes, (lo, hi), opt, 0, show_progress=False), 50, (lo, hi), set()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SHAPES), default="llama2_7b")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--storage", choices=["dense", "codes"], default="codes")
    ap.add_argument("--bank-device", choices=["model", "cpu"], default="model")
    ap.add_argument("--sens-evals", type=int, default=4, help="sensitivity evaluations timed (then extrapolated)")
    ap.add_argument("--small", default="32x2048,128x512,16x512", help="smaller calibration settings to time, SAMPLESxLEN")
    ap.add_argument("--final", default="128x2048", help="the final step's GPTQ and held-out windows, SAMPLESxLEN ('' to skip)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    ph = Phases()
    vocab = 32000

    model = ph.run("build model (random weights)", lambda: build_model(args.model, vocab))
    linears = searchable_linears(model)
    names = list(linears)
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.samples, args.seq_len), generator=g)

    ev = ph.run(
        f"reference log-probs ({args.samples} x {args.seq_len})",
        lambda: DivergenceEvaluator(model, ids, args.batch_size, "jsd"),
        "bf16, kept on the GPU",
    )
    bank = ph.run(
        "proxy bank: HQQ at {2,3,4} bits, every layer",
        lambda: ProxyBank(linears, (2, 3, 4), 128, ProxyConfig(storage=args.storage, bank_device=args.bank_device), show_progress=False),
        f"storage={args.storage}, bank on {args.bank_device}, {len(names)} layers",
    )
    bank_gb = bank.nbytes() / 1e9

    # sensitivity: one layer at a time (everything else 16-bit), timed on the first layers
    def sens():
        out = []
        for i in range(args.sens_evals):
            plan = [FULL] * len(names)
            plan[i] = 2
            bank.apply(plan)
            out.append(ev.score())
        bank.restore()
        return out

    ph.run(f"sensitivity: {args.sens_evals} of {3 * len(names)} evaluations", sens, "extrapolated below")
    sens_eval_s = ph.rows[-1]["seconds"] / args.sens_evals

    # the same from cached block inputs (amq.prefix, what the search does now): a layer in block b runs blocks b.. only
    n_blocks = len(decoder_blocks(model))
    blocks = layer_blocks(model, names)
    tail_s: dict[int, float] = {}
    advance_s = 0.0
    for b in (0, n_blocks // 2, n_blocks - 1):
        bank.restore()
        t0 = time.perf_counter()
        ev.prefix = ev.prefix or BlockPrefix(model, ev.batches)
        ev.prefix.advance(b)
        torch.cuda.synchronize()
        advance_s += time.perf_counter() - t0
        plan = [FULL] * len(names)
        plan[blocks.index(b)] = 2
        bank.apply(plan)
        ph.run(f"sensitivity from cached inputs of block {b} (one evaluation)", lambda b=b: ev.score_from(b))
        tail_s[b] = ph.rows[-1]["seconds"]
    bank.restore()
    ev.drop_prefix()
    first, last = tail_s[0], tail_s[n_blocks - 1]
    tail_at = lambda b: first + (last - first) * b / (n_blocks - 1)  # noqa: E731  linear in the blocks run
    per_bit_pass_s = sum(tail_at(b) for b in blocks)
    ph.rows.append(
        {
            "phase": "sensitivity pass from cached inputs, one bit-width (projected)",
            "seconds": per_bit_pass_s,
            "gpu_peak_gb": gpu_peak_gb(),
            "host_peak_gb": host_peak_gb(),
            "note": f"sum over {len(names)} layers of the cost at their block, linear between blocks 0 ({first:.2f} s) and "
            f"{n_blocks - 1} ({last:.2f} s); a full forward: {sens_eval_s:.2f} s",
        }
    )

    rng = np.random.default_rng(0)
    space = SearchSpace(tuple(names), (2, 3, 4))
    plans = space.random_plans(3, rng)
    ph.run("candidate: swap a full plan in", lambda: bank.apply(plans[0]), f"all {len(names)} layers change")

    def one_eval():
        bank.apply(plans[1])
        return ev.score()

    ph.run("candidate: swap + score (warm-up)", one_eval)
    ph.run(f"candidate: swap + score ({args.samples} x {args.seq_len})", lambda: (bank.apply(plans[2]), ev.score()))
    eval_s = ph.rows[-1]["seconds"]
    ev = None  # frees the reference log-probs
    gc.collect()
    torch.cuda.empty_cache()

    small: dict[str, float] = {}
    for spec in [s for s in args.small.split(",") if s]:
        n, length = (int(x) for x in spec.split("x"))
        bank.restore()
        sub = torch.randint(0, vocab, (n, length), generator=g)
        ev_s = ph.run(f"reference log-probs ({n} x {length})", lambda sub=sub: DivergenceEvaluator(model, sub, args.batch_size, "jsd"))
        ph.run(f"candidate: swap + score ({n} x {length}, warm-up)", lambda ev_s=ev_s: (bank.apply(plans[0]), ev_s.score()))
        ph.run(f"candidate: swap + score ({n} x {length})", lambda ev_s=ev_s: (bank.apply(plans[1]), ev_s.score()))
        small[spec] = ph.rows[-1]["seconds"]
        del ev_s
        gc.collect()
        torch.cuda.empty_cache()

    # the final step (final.method=gptq): per candidate plan, sequential GPTQ of the whole model on
    # the calibration windows, then its divergence on as many held-out ones
    final_s = None
    if args.final:
        n, length = (int(x) for x in args.final.split("x"))
        bank.release()  # the full-precision weights, the bank's codes dropped: as the search's final step starts
        calib, held = (torch.randint(0, vocab, (n, length), generator=g) for _ in range(2))
        gptq = QuantizerConfig(method="gptq", group_size=128, batch_size=args.batch_size)
        fs = ph.run(
            f"final step: reference log-probs of the held-out windows ({n} x {length})",
            lambda: FinalScorer(model, linears, calib, held, gptq, "jsd", bank.original),  # as final_choice builds it
        )
        ph.run(f"final step: one candidate plan, GPTQ on {n} x {length} + score", lambda: fs.score(dict(zip(names, plans[0], strict=True))))
        final_s = ph.rows[-1]["seconds"]
        del fs
        gc.collect()
        torch.cuda.empty_cache()

    # predictor and NSGA-II on an archive of AMQ's initial size (divergences synthetic: the cost
    # of fitting and proposing does not depend on them)
    cost = build_cost_model(layer_infos(model), (2, 3, 4), 128, n_params)
    x, y = synthetic_archive(space, cost, rng)
    for pname in ("rbf", "mlp"):
        pcfg = PredictorConfig(name=pname)
        ph.run(f"predictor fit ({pname}, 250 plans)", lambda pcfg=pcfg: make_predictor(pcfg, 0).fit(x, y) or None)
    pred = make_predictor(PredictorConfig(name="rbf"), 0)
    pred.fit(x, y)
    opt = OptimizerConfig()
    ph.run(
        f"NSGA-II proposal round (population {opt.population}, {opt.generations} generations)", lambda: nsga_round(space, cost, pred, opt)
    )
    propose_s = ph.rows[-1]["seconds"]
    fit_s = ph.rows[-3]["seconds"]  # rbf

    # projections
    ours = SearchConfig()
    amq_evals = AMQ_DEFAULTS["initial"] + AMQ_DEFAULTS["iterations"] * AMQ_DEFAULTS["candidates"]
    amq_sens = AMQ_DEFAULTS["sensitivity_bits"] * len(names)
    our_evals = ours.initial_random + 3 + (len(ours.budgets) + ours.ilp_seeds) + ours.iterations * ours.candidates
    our_sens = 3 * len(names)
    setup_s = sum(r["seconds"] for r in ph.rows[:3])
    fast_eval_s = small.get("32x2048", eval_s)
    proj = {
        "amq_defaults": {
            "evaluations": amq_evals,
            "sensitivity_evaluations": amq_sens,
            "hours": (setup_s + (amq_evals + amq_sens) * eval_s + AMQ_DEFAULTS["iterations"] * (fit_s + propose_s)) / 3600,
        },
        "ours": {
            "evaluations": our_evals,
            "sensitivity_evaluations": our_sens,
            "hours": (setup_s + our_evals * eval_s + our_sens * sens_eval_s + ours.iterations * (fit_s + propose_s)) / 3600,
        },
        "ours_prefix": {
            "evaluations": our_evals,
            "sensitivity_evaluations": our_sens,
            "hours": (setup_s + our_evals * eval_s + 3 * per_bit_pass_s + ours.iterations * (fit_s + propose_s)) / 3600,
        },
        "ours_prefix_lowest": {
            "evaluations": our_evals,
            "sensitivity_evaluations": len(names),
            "hours": (setup_s + our_evals * eval_s + per_bit_pass_s + ours.iterations * (fit_s + propose_s)) / 3600,
        },
        "ours_prefix_lowest_32x2048": {  # sensitivity and candidates at 32 x 2048 (scaled by the measured candidate ratio)
            "evaluations": our_evals,
            "sensitivity_evaluations": len(names),
            "hours": (setup_s + our_evals * fast_eval_s + per_bit_pass_s * fast_eval_s / eval_s + ours.iterations * (fit_s + propose_s))
            / 3600,
        },
    }
    if final_s is not None:  # at most top_k search plans + ILP, greedy and uniform per budget (duplicates are scored once)
        for k in (FinalConfig().top_k, 1):
            plans_n = len(ours.budgets) * (k + 3)
            proj[f"final_step_top{k}"] = {"evaluations": plans_n, "sensitivity_evaluations": 0, "hours": plans_n * final_s / 3600}
    dev = torch.cuda.get_device_name()
    result = {
        "model": args.model,
        "device": dev,
        "params": n_params,
        "layers": len(names),
        "bank_gb": bank_gb,
        "phases": ph.rows,
        "eval_s": eval_s,
        "final_plan_s": final_s,
        "sens_eval_s": sens_eval_s,
        "small": small,
        "projection": proj,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        lines = [
            f"# Search cost at {args.model} scale on one GPU",
            "",
            f"Command: `python benchmarks/search/search_cost_7b.py {' '.join(sys.argv[1:])}`",
            "",
            f"Device: {dev}. Model: {args.model} shape, {n_params / 1e9:.2f} B parameters, {len(names)} searchable layers, "
            f"random non-zero weights (N(0, 0.02)), fp16. Calibration {args.samples} x {args.seq_len} tokens, batch {args.batch_size}, "
            f"JSD. Proxy bank: HQQ {{2,3,4}} bits, group 128, storage `{args.storage}` ({bank_gb:.1f} GB), bank on {args.bank_device}.",
            "",
            "| phase | seconds | peak GPU GB | peak host GB | note |",
            "|---|---|---|---|---|",
            *[f"| {r['phase']} | {r['seconds']:.2f} | {r['gpu_peak_gb']:.1f} | {r['host_peak_gb']:.1f} | {r['note']} |" for r in ph.rows],
            "",
            f"Per-candidate evaluation at {args.samples} x {args.seq_len}: **{eval_s:.2f} s** (swap + forward + JSD). "
            + ", ".join(f"{k}: {v:.2f} s" for k, v in small.items()),
            "",
            "| full search | real evaluations | sensitivity evaluations | projected wall time |",
            "|---|---|---|---|",
            f"| AMQ's defaults (250 initial, 200 x 50, lowest-bit sensitivity) | {amq_evals} | {amq_sens} | "
            f"{proj['amq_defaults']['hours']:.1f} h |",
            f"| ours (`conf/search/default.yaml`: {ours.initial_random} random + uniform + ILP seeds, {ours.iterations} x "
            f"{ours.candidates}, sensitivity at every bit-width, full forwards) | {our_evals} | {our_sens} | {proj['ours']['hours']:.2f} h |",
            f"| ours, sensitivity from cached block inputs (the search now) | {our_evals} | {our_sens} | {proj['ours_prefix']['hours']:.2f} h |",
            f"| ours, cached inputs, `search.sensitivity_bits=lowest` | {our_evals} | {len(names)} | "
            f"{proj['ours_prefix_lowest']['hours']:.2f} h |",
            f"| ours, cached inputs, lowest, everything at 32 x 2048 (projected from the candidate ratio) | {our_evals} | "
            f"{len(names)} | {proj['ours_prefix_lowest_32x2048']['hours']:.2f} h |",
            *[
                f"| then the final step, `final.top_k={k.removeprefix('final_step_top')}`: at most {v['evaluations']} plans x "
                f"{final_s:.0f} s (GPTQ + score, {args.final}) | {v['evaluations']} | 0 | +{v['hours']:.2f} h |"
                for k, v in proj.items()
                if k.startswith("final_step_top") and final_s is not None
            ],
        ]
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
