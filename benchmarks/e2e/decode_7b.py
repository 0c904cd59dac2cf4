"""End to end on one GPU: a Llama-2-7B-shaped model in fp16, as a ~3.25-bit mixed plan on our
kernels, and in bitsandbytes NF4, through the same harness.

    PYTHONPATH=kernels python benchmarks/e2e/decode_7b.py --compile --out benchmarks/e2e/results/decode_7b.md

With --compile each variant compiles its decode step once per batch size (35-55 s each on an
H100): all four variants at batch 1 and 8 take about 8 minutes; --variants / --batches split it.
The table is rewritten after every variant, so a run cut short keeps what it finished.

Random non-zero weights (speed and memory do not depend on the values). Decode: a static KV
cache and one CUDA graph per decode step (captured after a prompt of 128 tokens), greedy,
batch 1 and 8; prefill: one forward of 2048 tokens. Peak GPU memory per phase; the weights'
memory against the cost model; decode against the bandwidth roofline of the bytes a step reads.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "kernels")]

from amq.cost import build_cost_model  # noqa: E402
from amq.models import layer_infos, searchable_linears, shared_input_groups  # noqa: E402
from amq.quant.apply import replace_with_quant_linears  # noqa: E402
from amq.quant.groupwise import quantize_rtn  # noqa: E402
from amq_kernels.linear import group_shared_inputs, use_mma_layout  # noqa: E402

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)
PROMPT, NEW = 128, 128
CACHE_LEN = PROMPT + NEW + 8  # the static KV cache's positions


def kv_cache_gb(batch: int) -> float:
    """The static KV cache decode() allocates: keys and values, every layer, CACHE_LEN positions, fp16."""
    c = LLAMA2_7B
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    return 2 * c["num_hidden_layers"] * batch * CACHE_LEN * c["num_key_value_heads"] * head_dim * 2 / 1e9


def build():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**LLAMA2_7B, vocab_size=32000, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16)
    for p in model.parameters():
        torch.nn.init.normal_(p.data, 0.0, 0.02) if p.dim() > 1 else p.data.fill_(1.0)
    return model.eval()


def mixed_plan(names: list[str], seed: int = 0) -> dict[str, int]:
    """About 3.25 bits: each layer 2/3/4 with probabilities 1/8, 1/2, 3/8."""
    rng = np.random.default_rng(seed)
    return {n: int(rng.choice([2, 3, 4], p=[0.125, 0.5, 0.375])) for n in names}


def file_plan(path: Path, names: list[str]) -> dict[str, int]:
    """The per-layer bits of a plan document (a search's plans/*.json, or `python -m amq.plan`'s, e.g. for a
    tok_s budget), for this model's layers."""
    from amq.plan_document import PlanDocument

    doc = PlanDocument.load(str(path))
    missing = sorted(set(names) - set(doc.layers))
    if missing or doc.group_size != 128:
        sys.exit(f"{path}: not a group-128 plan for Llama-2-7B's layers (e.g. missing {missing[:2]})")
    return {n: doc.layers[n] for n in names}


def to_ours(model, plan: dict[str, int]) -> None:
    for name, lin in searchable_linears(model).items():
        gq = quantize_rtn(lin.weight.data, plan[name], 128)
        replace_with_quant_linears(model, {name: gq})
        del gq, lin
    gc.collect()
    torch.cuda.empty_cache()


def to_bnb(model) -> None:
    import bitsandbytes as bnb

    for name, lin in searchable_linears(model).items():
        new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False, compute_dtype=torch.float16, quant_type="nf4")
        new.weight = bnb.nn.Params4bit(lin.weight.data.cpu(), requires_grad=False, quant_type="nf4")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new.cuda())
        del lin
    gc.collect()
    torch.cuda.empty_cache()


@torch.inference_mode()
def decode(model, batch: int, compile_step: bool = False) -> tuple[float, float, str]:
    """(tokens/s, peak GB, how): greedy decode of NEW tokens after a PROMPT-token prefill.
    compile_step: the step is torch.compile'd (fusing the small ops around the matmuls) before
    its CUDA graph is captured."""
    from transformers import StaticCache

    torch.cuda.reset_peak_memory_stats()
    cache = StaticCache(config=model.config, max_cache_len=CACHE_LEN)
    ids = torch.randint(0, 32000, (batch, PROMPT), device="cuda")
    model(input_ids=ids, past_key_values=cache, cache_position=torch.arange(PROMPT, device="cuda"), use_cache=True)
    tok = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
    pos = torch.tensor([PROMPT], device="cuda")

    tried = []
    for use_compile in [True, False] if compile_step else [False]:  # a compile failure falls back, and says so
        forward = torch.compile(model.forward, dynamic=False) if use_compile else model.forward

        def step(forward=forward):
            return forward(input_ids=tok, past_key_values=cache, cache_position=pos, use_cache=True).logits

        t0 = time.perf_counter()
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            how = f"torch.compile ({time.perf_counter() - t0:.0f} s) + CUDA graph" if use_compile else "CUDA graph"
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = step()
            run = graph.replay
            break
        except Exception as exc:
            tried.append(f"{'compiled' if use_compile else 'graph'}: {type(exc).__name__}")
            print(f"decode batch {batch}: {tried[-1]}: {str(exc)[:300]}", flush=True)
            torch.cuda.synchronize()
    else:  # nothing could be captured: time it eagerly, and say so
        how = f"eager ({'; '.join(tried)})"
        logits = None

        def run():
            nonlocal logits
            logits = step()

    if tried and logits is not None:
        how += f" (after {'; '.join(tried)})"
    run()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(NEW):
        run()
        tok.copy_(logits[:, -1:].argmax(-1))
        pos.add_(1)
    torch.cuda.synchronize()
    sec = time.perf_counter() - t
    return batch * NEW / sec, torch.cuda.max_memory_allocated() / 1e9, how


@torch.inference_mode()
def prefill(model, length: int = 2048) -> tuple[float, float]:
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(0, 32000, (1, length), device="cuda")
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(3):
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    torch.cuda.synchronize()
    return 3 * length / (time.perf_counter() - t), torch.cuda.max_memory_allocated() / 1e9


def copy_bandwidth() -> float:
    a = torch.empty(512 * 1024 * 1024, device="cuda", dtype=torch.uint8)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 10 / (time.perf_counter() - t) / 1e9  # read + write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--variants",
        default="fp16,ours,ours-grouped,bnb-nf4",
        help="ours-grouped: q/k/v and gate/up in one launch each at batch 1; ours-mma: every layer in the mma layout (amq_kernels/mma.py)",
    )
    ap.add_argument("--batches", default="1,8", help='decode batch sizes ("" for prefill only)')
    ap.add_argument("--compile", action="store_true", help="torch.compile each decode step before capturing its CUDA graph")
    ap.add_argument("--plan", type=Path, default=None, help="a plan document for Llama-2-7B's layers instead of the random ~3.25-bit plan")
    args = ap.parse_args()
    if args.compile:  # one compiled attention for all layers (HF keeps layer_idx as an int attribute)
        torch._dynamo.config.allow_unspec_int_on_nn_module = True
        torch._dynamo.config.recompile_limit = 64
    bw = copy_bandwidth()
    rows = []
    plan_doc = {}
    for variant in args.variants.split(","):
        model = build()
        names = list(searchable_linears(model))
        n_params = sum(p.numel() for p in model.parameters())
        cost = build_cost_model(layer_infos(model), (2, 3, 4), 128, n_params)
        plan = file_plan(args.plan, names) if args.plan else mixed_plan(names)
        try:
            if variant in ("ours", "ours-grouped", "ours-mma"):
                to_ours(model, plan)
                if variant == "ours-grouped":
                    print(variant, f"{group_shared_inputs(model, shared_input_groups(model))} groups linked", flush=True)
                if variant == "ours-mma":
                    print(variant, f"{use_mma_layout(model)} layers in the mma layout", flush=True)
                bits = [plan[n] for n in names]
                plan_doc = {"avg_bits": cost.avg_bits(bits), "model_gb": cost.model_gb(bits)}
            elif variant == "bnb-nf4":
                to_bnb(model)
        except Exception as exc:
            print(f"{variant}: conversion failed: {type(exc).__name__}: {exc}", flush=True)
            del model
            gc.collect()
            torch.cuda.empty_cache()
            continue
        torch.cuda.synchronize()
        weights_gb = torch.cuda.memory_allocated() / 1e9
        tensors = [*model.parameters(), *model.buffers()]
        tensor_bytes = sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())
        del tensors  # no reference may outlive this variant's model
        # bytes one decode step reads: every weight once (embedding: one row per token, ignored)
        step_bytes = tensor_bytes - model.model.embed_tokens.weight.numel() * 2
        r = {"variant": variant, "weights_gb": weights_gb, "tensor_gb": tensor_bytes / 1e9}
        for b in [int(v) for v in args.batches.split(",") if v]:
            tps, peak, how = decode(model, b, args.compile)
            r[f"decode_b{b}"], r[f"peak_b{b}"], r[f"how_b{b}"] = tps, peak, how
            print(variant, f"batch {b}: {tps:.1f} tok/s, peak {peak:.2f} GB ({how})", flush=True)
        r["roofline_b1"] = bw * 1e9 / step_bytes  # tokens/s if a step streamed its weights at the copy's traffic rate
        r["prefill"], r["peak_prefill"] = prefill(model)
        print(variant, f"prefill {r['prefill']:.0f} tok/s", flush=True)
        rows.append(r)
        del model
        gc.collect()
        torch.cuda.empty_cache()
        if args.out:  # the table so far: a run cut short still leaves its finished variants
            args.out.write_text(render(rows, bw, plan_doc, args.compile, args.plan))
    print(render(rows, bw, plan_doc, args.compile, args.plan))


def render(rows: list[dict], bw: float, plan_doc: dict, compiled: bool, plan_path: Path | None = None) -> str:
    """The markdown report of the variants measured so far."""
    base = next((r for r in rows if r["variant"] == "fp16"), None)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "(not recorded)"
    lines = [
        "# End to end: Llama-2-7B shape on one GPU, fp16 vs our mixed plan vs bitsandbytes NF4",
        "",
        f"Command: `PYTHONPATH=kernels python benchmarks/e2e/decode_7b.py {' '.join(sys.argv[1:])}`",
        "",
        f"Device: {dev}; copy bandwidth {bw:.0f} GB/s (read + write) measured in this run. Random N(0, 0.02) weights. "
        f"Ours: RTN at {f'the plan {plan_path}' if plan_path else 'a random plan of 2/3/4 bits (p = 1/8, 1/2, 3/8)'}: {plan_doc.get('avg_bits', float('nan')):.3f} average "
        f"bits, cost model {plan_doc.get('model_gb', float('nan')):.3f} GB. Decode: prompt {PROMPT}, {NEW} new tokens, greedy, "
        "static KV cache, one CUDA graph per step"
        + (", the step torch.compile'd first (default mode)" if compiled else "")
        + ". Prefill: 2048 tokens, batch 1, eager.",
        "",
        "| variant | model tensors GB | GPU allocated GB | decode tok/s b=1 | vs fp16 | roofline b=1 | % of roofline | decode tok/s b=8 | vs fp16 "
        "| peak GB b=8 | prefill tok/s (2048) | vs fp16 | how |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for r in rows:  # every row complete before any is compared with fp16's (a run may skip batch 8)
        for k in ("decode_b1", "peak_b1", "decode_b8", "peak_b8", "tensor_gb", "weights_gb", "roofline_b1", "prefill"):
            r.setdefault(k, nan)
        r.setdefault("how_b1", "-")
    for r in rows:

        def rel(k: str, r: dict = r) -> str:
            ratio = r[k] / base[k] if base else nan
            return f"{ratio:.2f}x" if ratio == ratio else "-"

        lines.append(
            f"| {r['variant']} | {r['tensor_gb']:.3f} | {r['weights_gb']:.3f} | {r['decode_b1']:.1f} | {rel('decode_b1')} | {r['roofline_b1']:.0f} | "
            f"{100 * r['decode_b1'] / r['roofline_b1']:.0f}% | {r['decode_b8']:.1f} | {rel('decode_b8')} | {r['peak_b8']:.2f} | "
            f"{r['prefill']:.0f} | {rel('prefill')} | {r['how_b1']} |"
        )
    ours = next((r for r in rows if r["variant"].startswith("ours")), None)
    if ours and plan_doc:
        lines += (
            [
                "",
                "ours-grouped: the same model with each block's q/k/v and gate/up linked (`group_shared_inputs`): at batch 1 each group is one kernel launch.",
            ]
            if any(r["variant"] == "ours-grouped" for r in rows)
            else []
        )
        lines += [
            "",
            f"Our model's tensors: {ours['tensor_gb']:.3f} GB vs {plan_doc['model_gb']:.3f} GB by the cost model "
            f"({ours['tensor_gb'] / plan_doc['model_gb'] - 1:+.1%}); allocated on the GPU after conversion {ours['weights_gb']:.3f} GB "
            f"({ours['weights_gb'] / plan_doc['model_gb'] - 1:+.1%}); peak during batch-8 decode {ours['peak_b8']:.2f} GB "
            "(weights + KV cache + activations + the graph's buffers). Roofline: the bytes a decode step reads (all weights "
            "but the embedding) at the copy's measured traffic rate.",
        ]
        if base and base["peak_b8"] == base["peak_b8"] and ours["peak_b8"] == ours["peak_b8"]:
            kv = kv_cache_gb(8)
            act = base["peak_b8"] - base["tensor_gb"] - kv  # what fp16 needs beyond its weights and cache
            budget = plan_doc["model_gb"] + kv + act
            lines += [
                "",
                f"Memory at batch 8: KV cache {kv:.3f} GB; fp16's activations and buffers (its peak - its tensors - KV) {act:.3f} GB; "
                f"cost model + KV + those {budget:.3f} GB against our peak {ours['peak_b8']:.2f} GB ({ours['peak_b8'] / budget - 1:+.1%}).",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
