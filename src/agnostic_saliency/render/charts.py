"""Bar charts (matplotlib, headless)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "",
    threshold: float | None = None,
    highlight: Sequence[int] = (),
) -> None:
    """One bar per class; bars in ``highlight`` drawn in red, a dashed line at ``threshold``."""
    figure, axis = plt.subplots(figsize=(max(4.0, 0.5 * len(values) + 1.5), 3.2), dpi=100)
    colours = ["#d62728" if i in set(highlight) else "#1f77b4" for i in range(len(values))]
    axis.bar(range(len(values)), values, color=colours)
    axis.set_xticks(range(len(values)))
    axis.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    if threshold is not None:
        axis.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
