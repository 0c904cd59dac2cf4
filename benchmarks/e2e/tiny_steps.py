"""How long to train the embedded default: held-out loss per training-step count.

    python benchmarks/e2e/tiny_steps.py 400 450 500 700     # writes benchmarks/e2e/results/tiny_steps.md

For each step count, the embedded Llama's recipe (amq.tiny.TinyRecipe) with that many steps (the
cosine schedule spans them), trained on the builtin corpus with its loss on the held-out tenth
measured every 50 steps; the table gives the loss at the end, the best one and its step, and the
training time on this machine.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from amq.tiny import TinyRecipe, build_tiny_model, builtin_corpus


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main() -> None:
    steps_list = [int(a) for a in sys.argv[1:]] or [400, 450, 500, 700]
    _, held = builtin_corpus()
    cap = _Capture()
    logging.getLogger("amq.tiny").addHandler(cap)
    logging.getLogger("amq.tiny").setLevel(logging.INFO)
    rows = []
    for steps in steps_list:
        cap.lines.clear()
        t0 = time.perf_counter()
        build_tiny_model(Path(tempfile.mkdtemp()) / "m", TinyRecipe(steps=steps), eval_text=held, eval_every=50)
        seconds = time.perf_counter() - t0
        evals = [re.search(r"step (\d+): train loss ([\d.]+), held-out loss ([\d.]+)", s) for s in cap.lines]
        evals = [(int(m[1]), float(m[2]), float(m[3])) for m in evals if m]
        best = min(evals, key=lambda e: e[2])
        rows.append((steps, evals[-1][1], evals[-1][2], best[2], best[0], seconds))
        print(rows[-1], flush=True)
    lines = [
        "# The embedded default: held-out loss by training steps",
        "",
        f"Command: `python benchmarks/e2e/tiny_steps.py {' '.join(map(str, steps_list))}` ({os.cpu_count()} CPU cores; time includes the held-out evaluations)",
        "",
        "| steps | final train loss | final held-out loss | best held-out loss (step) | seconds |",
        "|---|---|---|---|---|",
        *[f"| {s} | {tr:.3f} | {ho:.3f} | {b:.3f} ({bs}) | {sec:.0f} |" for s, tr, ho, b, bs, sec in rows],
        "",
    ]
    (Path(__file__).parent / "results" / "tiny_steps.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
