"""Issue 19: does the fast configuration's loss shrink as the calibration grows? (At 7B the quarter
of the windows it scores candidates on is 32 x 2048 = 65,536 tokens; the small models' runs have
far fewer.) Reads fast_vs_default results run with --seeds and plots, per measure, the worst budget's
ratio of the fast configuration's mean to the default's, against the default's calibration tokens,
beside the default's own worst seed against its mean (the noise floor).

    python benchmarks/search/fast_vs_tokens.py --name tiny-llama tiny-llama_seeds tiny-llama_32x256_seeds tiny-llama_64x256_seeds

Writes benchmarks/search/results/fast_vs_tokens_<name>.md and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_vs_default import mean_and_ratio

RESULTS = Path(__file__).resolve().parent / "results"
MEASURES = {"final": "after GPTQ (held-out calib)", "proxy": "proxy, chosen plan", "front": "front: best proxy"}


def worst(doc: dict, key, config: str = "fast") -> float:
    """The worst budget's ratio: fast's mean / default's mean, or (config default) its worst seed / its mean."""
    return max(mean_and_ratio(doc, b, config, key)[1] for b in doc["budgets"])  # type: ignore[index]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("results", nargs="+", help="fast_vs_default result names (fast_vs_default_<NAME>.json), run with --seeds")
    args = ap.parse_args()
    docs = [json.loads((RESULTS / f"fast_vs_default_{r}.json").read_text()) for r in args.results]
    tests = sorted({t for d in docs for row in d["budgets"].values() for r in row.values() for t in r["ppl"]})
    keys = {**{m: (lambda r, m=m: r[m]) for m in MEASURES}, **{f"ppl {t}": (lambda r, t=t: r["ppl"][t]) for t in tests}}
    names = {**MEASURES, **{f"ppl {t}": f"GPTQ perplexity, {t}" for t in tests}}
    rows = []
    for r, d in sorted(
        zip(args.results, docs, strict=True), key=lambda rd: rd[1]["calibration"]["default"][0] * rd[1]["calibration"]["default"][1]
    ):
        (ns, sl), (fs, fl) = d["calibration"]["default"], d["calibration"]["fast"]
        rows.append((r, ns * sl, fs * fl, d["seeds"], {k: (worst(d, f), worst(d, f, "default")) for k, f in keys.items()}))

    lines = [
        f"# Fast vs default against calibration size: {args.name}",
        "",
        f"Command: `python benchmarks/search/fast_vs_tokens.py {' '.join(sys.argv[1:])}`",
        "",
        "Each cell: the worst budget's ratio of the fast configuration's mean (over search seeds) to the default's mean;",
        "in brackets, the default's own worst seed against its mean (the search's noise). The bar is 1.01.",
        "",
        "| result | default tokens | fast tokens | seeds | " + " | ".join(names[k] for k in keys) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for r, t, tf, seeds, vals in rows:
        lines.append(f"| {r} | {t} | {tf} | {seeds} | " + " | ".join(f"{v:.3f} ({noise:.3f})" for v, noise in vals.values()) + " |")
    lines.append("")
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [t for _, t, *_ in rows]
    for k in keys:
        ax.plot(xs, [vals[k][0] for *_, vals in rows], marker="o", label=names[k])
    ax.plot(xs, [max(v[1] for v in vals.values()) for *_, vals in rows], "k--", label="default's own worst seed / mean")
    ax.axhline(1.01, color="red", lw=0.8, label="the 1% bar")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("default's calibration tokens (fast: a quarter)")
    ax.set_ylabel("fast mean / default mean, worst budget")
    ax.set_title(f"{args.name}: the fast configuration's loss vs calibration size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = RESULTS / f"fast_vs_tokens_{args.name}.png"
    fig.savefig(png, dpi=120)
    lines.append(f"![fast vs tokens]({png.name})")
    (RESULTS / f"fast_vs_tokens_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
