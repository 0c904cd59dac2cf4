"""The decode_7b report from the log of a run cut short (before its table was printed).

    python benchmarks/e2e/decode_7b_from_log.py LOG --roofline-from TABLE.md --command "..." > OUT.md

Reads the per-variant lines decode_7b.py prints as it goes ("<variant> batch <b>: <tok/s> tok/s,
peak <GB> GB (<how>)", "<variant> prefill <tok/s> tok/s"). The log has no tensor sizes or copy
bandwidth: the model-tensor GB and the b = 1 roofline per variant are taken from a complete
decode_7b table of the same models (TABLE.md), and the report says so.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_7b import render


def rows_from_log(text: str) -> list[dict]:
    rows: dict[str, dict] = {}
    for m in re.finditer(r"^(\S+) batch (\d+): ([\d.]+) tok/s, peak ([\d.]+) GB \((.*)\)$", text, re.M):
        r = rows.setdefault(m[1], {"variant": m[1]})
        r[f"decode_b{m[2]}"], r[f"peak_b{m[2]}"], r[f"how_b{m[2]}"] = float(m[3]), float(m[4]), m[5]
    for m in re.finditer(r"^(\S+) prefill (\d+) tok/s$", text, re.M):
        rows.setdefault(m[1], {"variant": m[1]})["prefill"] = float(m[2])
    return list(rows.values())


def table_columns(md: str) -> dict[str, dict]:
    """variant -> {tensor_gb, roofline_b1} from a decode_7b table."""
    out = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 13 and re.fullmatch(r"[\d.]+", cells[1]) and re.fullmatch(r"\d+", cells[5]):
            out[cells[0]] = {"tensor_gb": float(cells[1]), "roofline_b1": float(cells[5])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path)
    ap.add_argument("--roofline-from", type=Path, required=True)
    ap.add_argument("--command", required=True, help="the decode_7b command that wrote the log")
    args = ap.parse_args()
    rows = rows_from_log(args.log.read_text())
    ref = table_columns(args.roofline_from.read_text())
    for r in rows:  # ours-grouped holds the same tensors as ours
        r.update(ref.get(r["variant"], ref.get("ours", {})) if r["variant"].startswith("ours") else ref.get(r["variant"], {}))
    text = render(rows, float("nan"), {}, "compile" in args.command)
    text = text.split("\n| variant", 1)[1]
    print(
        f"Command: `{args.command}` (cut by its time limit before printing its table); this table rendered by\n"
        f"`python benchmarks/e2e/decode_7b_from_log.py {args.log} --roofline-from {args.roofline_from} --command ...`.\n"
        f"Model-tensor GB and the b = 1 roofline per variant are those of {args.roofline_from.name}'s run (same models);\n"
        "GPU allocated GB was not logged (nan).\n\n| variant" + text.split("\n\n")[0]
    )


if __name__ == "__main__":
    main()
