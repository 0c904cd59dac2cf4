"""The front plot: every evaluated plan, the measured Pareto front, uniform plans and budgets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_front(
    path: Path,
    archive_bits: Sequence[float],
    archive_div: Sequence[float],
    front_bits: Sequence[float],
    front_div: Sequence[float],
    uniform: dict[int, tuple[float, float]],
    budgets: Sequence[float],
    title: str,
) -> Path:
    """Average bits (x) vs divergence (y, log scale); uniform plans as labelled stars."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(archive_bits, archive_div, s=10, c="0.6", label="evaluated plans")
    ax.plot(front_bits, front_div, "-o", ms=4, c="tab:blue", label="AMQ front (measured)")
    for b, (ux, uy) in sorted(uniform.items()):
        ax.scatter([ux], [uy], marker="*", s=140, c="tab:red", zorder=5)
        ax.annotate(f"uniform {b}-bit", (ux, uy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for budget in budgets:
        ax.axvline(budget, ls=":", c="0.4", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("average bits per quantized weight")
    ax.set_ylabel("divergence from 16-bit (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
