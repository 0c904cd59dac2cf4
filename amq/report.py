"""`python -m amq.report DIR`: one comparison from many `amq.evaluate` runs (a multirun dir).

Finds every result.json under DIR and writes DIR/report.md (a table: method, plan source,
budget, bits, GB, perplexity per test set with its context length, KL / JSD / same-top-token
rate vs the 16-bit model) and DIR/report.png
(perplexity vs average bits, one series per plan source and quantizer), and logs both to
W&B as one group (offline unless --wandb-mode online).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def collect(root: Path) -> list[dict]:
    rows = []
    for p in sorted(root.rglob("result.json")):
        doc = json.loads(p.read_text())
        doc["run_dir"] = str(p.parent.relative_to(root))
        rows.append(doc)
    return rows


def label(row: dict) -> str:
    if row["method"] == "fp16":
        return "16-bit"
    return f"{row['plan_source']}+{row['method']}"


def table(rows: list[dict]) -> list[str]:
    tests = list(dict.fromkeys(t for r in rows for t in r["perplexity"]))
    ctx = {t: next(r["perplexity"][t]["seq_len"] for r in rows if t in r["perplexity"]) for t in tests}
    head = ["plan+method", "budget", "avg bits", "model GB"] + [f"{t} ppl (ctx {ctx[t]})" for t in tests]
    vs = next((r["vs_16bit"] for r in rows if r.get("vs_16bit")), None)
    if vs:  # what users compare beside perplexity, against the 16-bit model
        where = f"{vs['test']}, {vs['windows']} x ctx {vs['seq_len']}"
        head += [f"KL vs 16-bit ({where})", "JSD vs 16-bit", "same top token"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(rows, key=lambda r: (r["method"] != "fp16", r["plan_source"], r["method"], r["avg_bits"]))
    for r in order:
        cells = [label(r), f"{r['budget']:g}" if r.get("budget") else "", f"{r['avg_bits']:.3f}", f"{r['model_gb']:.4f}"]
        cells += [f"{r['perplexity'][t]['ppl']:.3f}" if t in r["perplexity"] else "" for t in tests]
        if vs:
            v = r.get("vs_16bit")
            cells += [f"{v['kl']:.5f}", f"{v['jsd']:.5f}", f"{100 * v['same_top_token']:.2f}%"] if v else ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict], path: Path) -> None:
    tests = list(dict.fromkeys(t for r in rows for t in r["perplexity"]))
    fig, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4.5), squeeze=False)
    for ax, t in zip(axes[0], tests, strict=True):
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            if t in r["perplexity"]:
                series[label(r)].append((r["avg_bits"], r["perplexity"][t]["ppl"]))
        for name, pts in sorted(series.items()):
            if name == "16-bit":
                ax.axhline(pts[0][1], color="k", ls=":", label=f"16-bit ({pts[0][1]:.2f})")
                continue
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("average bits per quantized weight")
        ax.set_ylabel("perplexity (log scale)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # python -m amq.report: the command line lives in amq.cli.report
    import runpy

    runpy.run_module("amq.cli.report", run_name="__main__")
