"""Figures written into the run folder (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def save_figure(figure: plt.Figure, path: Path) -> Path:
    """Lay out, write as PNG (creating the folder) and close: every figure of a run."""
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def eps_sweep_figures(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Robust accuracy against ε, one panel per norm, one line per attack, with the 95 %
    interval as a band: one PNG per defense and split whose run swept ε."""
    valid = frame[frame["valid"].astype(bool)]
    written = []
    for (defense, split), part in valid.groupby(["defense", "split"], sort=True):
        norms = [n for n, cells in part.groupby("norm") if cells["eps"].nunique() > 1]
        if not norms:
            continue
        figure, axes = plt.subplots(1, len(norms), figsize=(5 * len(norms), 3.6), squeeze=False)
        for axis, norm in zip(axes[0], norms, strict=True):
            for attack, cells in part[part["norm"] == norm].groupby("attack", sort=True):
                cells = cells.sort_values("eps")
                axis.plot(cells["eps"], cells["robust_accuracy"], marker="o", label=attack)
                axis.fill_between(cells["eps"], cells["robust_accuracy_ci_low"],
                                  cells["robust_accuracy_ci_high"], alpha=0.2)
            axis.set(xlabel=f"ε ({norm})", ylabel="robust accuracy", ylim=(0, 1),
                     title=f"{defense} · {split}")
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
        written.append(save_figure(figure, folder / f"eps_sweep_{defense}_{split}.png"))
    return written
