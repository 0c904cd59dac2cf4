"""The whole pipeline on one GPU with the reference 17M model, through the user-facing commands.

    AMQ_SHARED=/path/to/shared python benchmarks/e2e/pipeline_17m_gpu.py --out benchmarks/e2e/results/pipeline_17m_gpu.md

1. `python -m amq.run +experiment=small_cpu` on the GPU (search: sensitivity, bank, NSGA-II, ...)
2. `python -m amq.evaluate plan=file` with the search's 3.0-bit plan, GPTQ, perplexity on both test
   files, export (amq, compressed-tensors and GPTQ checkpoints)
3. reload the amq export with QuantLinear layers on the GPU and generate with the Triton kernels.
Each step's wall time and the numbers it produced go into the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def step(cmd: list[str], log: Path) -> float:
    t = time.perf_counter()
    with log.open("w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.exit(f"step failed ({r.returncode}): {' '.join(cmd)}\n" + log.read_text()[-3000:])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "e2e" / "results" / "pipeline_17m_gpu.md")
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "pipeline-17m-gpu")
    ap.add_argument("--seq-len", type=int, default=512, help="perplexity context (the model was trained at ~512)")
    args = ap.parse_args()
    shared = Path(os.environ.get("AMQ_SHARED", ""))
    model, data = shared / "models" / "amq-llama-17m", shared / "data"
    if not model.is_dir():
        sys.exit("set AMQ_SHARED to the folder holding models/amq-llama-17m and data/")
    import torch

    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    work = args.work / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    py = sys.executable
    times = {}

    search_dir = work / "search"
    times["search"] = step(
        [
            py, "-m", "amq.run", "+experiment=small_cpu", f"model.path={model}", "model.name=amq-llama-17m",
            f"data.path={data / 'linuxdoc' / 'calib.txt'}", "logger=none", "model.device=cuda", f"hydra.run.dir={search_dir}",
        ],
        work / "search.log",
    )  # fmt: skip
    plan = json.loads((search_dir / "plans" / "3bits.json").read_text())

    eval_dir = work / "evaluate"
    times["gptq + perplexity + export"] = step(
        [
            py, "-m", "amq.evaluate", f"model.path={model}", "model.name=amq-llama-17m", "model.device=cuda",
            "data=text", f"data.path={data / 'linuxdoc' / 'calib.txt'}", "data.num_samples=128", f"data.seq_len={args.seq_len}",
            "quantizer=gptq", "quantizer.integer_zeros=true", "plan=file", f"plan.path={search_dir / 'plans' / '3bits.json'}",
            f"eval.tests=[{data / 'linuxdoc' / 'test.txt'},{data / 'wikitext2' / 'test.txt'}]", f"eval.seq_len={args.seq_len}",
            "export=true", "export_formats=[amq,compressed-tensors,gptq_v2]", "logger=none", f"hydra.run.dir={eval_dir}",
        ],
        work / "evaluate.log",
    )  # fmt: skip
    res = json.loads((eval_dir / "result.json").read_text())

    from transformers import AutoTokenizer

    from amq.export import load_quantized
    from amq_kernels.linear import QuantLinear

    t = time.perf_counter()
    loaded = load_quantized(eval_dir / "export", device="cuda", dtype=torch.float16)
    n_quant = sum(isinstance(m, QuantLinear) for m in loaded.modules())
    tok = AutoTokenizer.from_pretrained(eval_dir / "export")
    prompt = tok("The kernel", return_tensors="pt").input_ids.cuda()
    loaded.generate(prompt, max_new_tokens=4, do_sample=False)  # compile the kernels once
    torch.cuda.synchronize()
    t_gen = time.perf_counter()
    gen = loaded.generate(prompt, max_new_tokens=32, do_sample=False)
    torch.cuda.synchronize()
    gen_s = time.perf_counter() - t_gen
    times["reload + generate (Triton)"] = time.perf_counter() - t
    text = tok.decode(gen[0], skip_special_tokens=True)

    dev = torch.cuda.get_device_name()
    ppl = {k: v["ppl"] for k, v in res["perplexity"].items()}
    vs = res.get("vs_16bit", {})
    lines = [
        "# The whole pipeline on one GPU: amq-llama-17m",
        "",
        f"Command: `AMQ_SHARED=<shared> python benchmarks/e2e/pipeline_17m_gpu.py {' '.join(sys.argv[1:])}`",
        "",
        f"Device: {dev}. Search: `+experiment=small_cpu` (16 x 256 calibration tokens, 12 iterations x 16 candidates) with "
        f"`model.device=cuda`; GPTQ with 128 x {args.seq_len} calibration tokens; perplexity at context {args.seq_len}.",
        "",
        "| step | wall time (s) |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in times.items()],
        "",
        f"- Search: 3.0-bit plan at {plan['avg_bits']:.3f} bits, proxy JSD {plan['divergence']:.5f}.",
        f"- GPTQ of that plan: {res['quantize_s']:.1f} s; perplexity (context {args.seq_len}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ppl.items())
        + (
            f"; vs 16-bit on {vs['test']} ({vs['windows']} windows of {vs['seq_len']}): KL {vs['kl']:.5f}, "
            f"JSD {vs['jsd']:.5f}, same top token {100 * vs['same_top_token']:.2f}%"
            if vs
            else ""
        )
        + ".",
        f"- Export: {res['export']['file_bytes']} bytes on disk vs {res['export']['cost_model_bytes']} by the cost model "
        f"(ratio {res['export']['size_ratio']:.4f}); also written: {', '.join(res.get('engine_exports', {}))}.",
        f"- Reloaded with {n_quant} QuantLinear layers on the GPU; 32 greedy tokens in {gen_s:.2f} s: {text!r}",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
