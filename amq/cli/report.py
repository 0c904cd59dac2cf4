"""`python -m amq.report DIR`: one comparison (report.md, report.png, W&B) from many `amq.evaluate` runs (amq.report)."""

from __future__ import annotations

import sys
from pathlib import Path

from amq.cli import compose_tool, fail, one_line_errors
from amq.config import ReportConfig
from amq.report import collect, label, plot, table


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """`python -m amq.report DIR` (or dir=DIR) [wandb_mode=offline|online|disabled] [project=amq]."""
    cfg: ReportConfig = compose_tool(
        "amq.report", "report_schema", sys.argv[1:] if argv is None else argv, (__doc__ or "").splitlines()[0], "dir"
    )
    run_dir = Path(cfg.dir)
    if not run_dir.is_dir():
        fail(f"{run_dir}: no such directory")
    rows = collect(run_dir)
    if not rows:
        fail(f"no result.json under {run_dir} (run python -m amq.evaluate first)")
    md = run_dir / "report.md"
    png = run_dir / "report.png"
    md.write_text("\n".join([f"# amq report: {run_dir.name}", "", *table(rows), "", "![perplexity vs bits](report.png)", ""]))
    plot(rows, png)
    if cfg.wandb_mode != "disabled":
        from amq.config import LoggerConfig
        from amq.tracking import Tracker

        tracker = Tracker(LoggerConfig(mode=cfg.wandb_mode, project=cfg.project, group=run_dir.name), run_dir, {}, "report")
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
