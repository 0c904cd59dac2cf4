"""`python -m amq.report DIR`: one comparison (report.md, report.png, W&B) from many `amq.evaluate` runs (amq.report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amq.cli import fail
from amq.report import collect, label, plot, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m amq.report", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("dir", type=Path, help="a multirun (or any) directory holding amq.evaluate runs")
    ap.add_argument("--wandb-mode", default="offline", choices=["offline", "online", "disabled"])
    ap.add_argument("--project", default="amq")
    args = ap.parse_args(argv)
    if not args.dir.is_dir():
        fail(f"{args.dir}: no such directory")
    rows = collect(args.dir)
    if not rows:
        fail(f"no result.json under {args.dir} (run python -m amq.evaluate first)")
    md = args.dir / "report.md"
    png = args.dir / "report.png"
    md.write_text("\n".join([f"# amq report: {args.dir.name}", "", *table(rows), "", "![perplexity vs bits](report.png)", ""]))
    plot(rows, png)
    if args.wandb_mode != "disabled":
        from amq.config import LoggerConfig
        from amq.tracking import Tracker

        tracker = Tracker(LoggerConfig(mode=args.wandb_mode, project=args.project, group=args.dir.name), args.dir, {}, "report")
        tests = list(dict.fromkeys(t for r in rows for t in r["perplexity"]))
        tracker.table(
            "report/results",
            ["label", "budget", "avg_bits", "model_gb", *tests],
            [
                [label(r), r.get("budget"), r["avg_bits"], r["model_gb"], *[r["perplexity"].get(t, {}).get("ppl") for t in tests]]
                for r in rows
            ],
        )
        tracker.image("report/plot", png)
        tracker.finish()
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
