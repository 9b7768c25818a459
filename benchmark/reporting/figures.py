"""Figures written into the run folder (matplotlib, headless). All drawing lives here, in the
internal reporting layer: the public building blocks only produce the data (an adversarial
training's history, smoothing's certified accuracy per radius) and the run draws it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


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
        norms = [str(n) for n, cells in part.groupby("norm") if cells["eps"].nunique() > 1]
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


class History(Protocol):
    """An adversarial training's history (``advbench.algorithms.adversarial_training``'s
    ``TrainingHistory``), drawn from its ``to_dict()`` form: what the model cache saves."""

    def to_dict(self) -> dict[str, Any]: ...


def plot_training_curves(history: History | Mapping[str, Any], path: Path) -> Path:
    """Clean and robust accuracy per epoch, train and validation, as a PNG; a detected
    collapse is marked with a vertical line. ``history``: a ``TrainingHistory`` or its dict."""
    data = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    records = data.get("records", [])
    epochs = [r["epoch"] for r in records]
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    curves = [("train_clean", "train clean", "C0", "-"), ("train_robust", "train robust", "C0",
              "--"), ("val_clean", "validation clean", "C1", "-"),
              ("val_robust", "validation robust", "C1", "--")]
    for key, label, colour, style in curves:
        values = [r[key] for r in records]
        if values and all(v is not None for v in values):
            axis.plot(epochs, values, style, color=colour, marker="o", label=label)
    collapse = data.get("collapse")
    if collapse is not None:
        axis.axvline(collapse["epoch"], color="red", alpha=0.5,
                     label=f"collapse, restored epoch {collapse['restored_epoch']:g}")
    axis.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1),
             title=f"{data['defense']} ({data['attack']})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return save_figure(figure, path)


def plot_certified_accuracy(radius_grid: Sequence[float],
                            accuracies: Sequence[float] | Mapping[str, Sequence[float]],
                            path: Path, title: str = "randomized smoothing") -> Path:
    """Certified accuracy against the L2 radius (``advbench.algorithms.smoothing``'s
    ``certified_accuracy``) as a PNG; a mapping draws one line per label (e.g. per σ)."""
    lines = accuracies if isinstance(accuracies, Mapping) else {"": accuracies}
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for label, values in lines.items():
        axis.plot(list(radius_grid), [float(v) for v in values], marker="o",
                  label=label or None)
    axis.set(xlabel="L2 radius", ylabel="certified accuracy", ylim=(0, 1), title=title)
    axis.grid(alpha=0.3)
    if any(lines):
        axis.legend(fontsize="small")
    return save_figure(figure, path)
