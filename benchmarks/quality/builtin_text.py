"""The embedded models' held-out text (Python's bundled docs, never trained on) cut in two files:
the first half to calibrate on, the second to test on, so that no calibration window is scored.

    python benchmarks/quality/builtin_text.py outputs/builtin-text   # writes calib.txt and test.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

from amq.tiny import builtin_corpus


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    docs = builtin_corpus()[1].split("\n\n")
    half = len(docs) // 2
    (out / "calib.txt").write_text("\n\n".join(docs[:half]))
    (out / "test.txt").write_text("\n\n".join(docs[half:]))
    print(out / "calib.txt", out / "test.txt")


if __name__ == "__main__":
    main()
