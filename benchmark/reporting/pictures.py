"""Pictures of attack cells for the run folder: clean vs adversarial examples with the
perturbation between them and, across the cells of an ε sweep, one image at each ε.

They are drawn from what the cells already made: the gate-checked adversarial examples each
cell keeps for its first few attacked samples (``CellOutcome.shown_adv``) and the harness's own
predictions on them. Nothing here runs an attack or a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsInt

import torch

from advbench.reporting.figures import plt, save_figure

FOOLED = "tab:red"


@dataclass(frozen=True)
class EpsSeries:
    """One image at each ε of a sweep: the gate-checked adversarial images, the model's
    predictions on them, and a reason per ε where there is no valid image (``None`` else)."""

    eps: tuple[float, ...]
    x_adv: torch.Tensor
    pred: torch.Tensor
    reasons: tuple[str | None, ...]


def cell_stem(attack: str, defense: str, split: str, norm: str, eps: float | None = None
              ) -> str:
    """The file-name stem of a cell's pictures in a run's ``figures/`` folder; without ``eps``,
    that of its ε sweep (one picture for the cells that differ only in ε)."""
    stem = f"{attack}_{defense}_{split}_{norm}"
    return stem if eps is None else f"{stem}_{eps:g}"


def label_name(label: SupportsInt, classes: Sequence[str]) -> str:
    """A label as people read it: the class name, "abstain" for −1, else the number."""
    number = int(label)
    if number == -1:
        return "abstain"
    return classes[number] if 0 <= number < len(classes) else str(number)


def _show_image(axis: plt.Axes, image: torch.Tensor) -> None:
    """Draw a C×H×W image in [0, 1]: grey for one channel, RGB for three."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 3:
        axis.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    else:
        axis.imshow(image.mean(dim=0).numpy(), cmap="gray", vmin=0, vmax=1,
                    interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def signed_perturbation(delta: torch.Tensor) -> torch.Tensor:
    """N×H×W: at each pixel, the change of the channel that changed most, with its sign (one
    map for grey or colour images that a one-pixel change on RGB does not average away)."""
    channel = delta.abs().argmax(dim=1, keepdim=True)
    return delta.gather(1, channel).squeeze(1)


def _strip(images: torch.Tensor, gap: int) -> tuple[torch.Tensor, bool]:
    """N×C×H×W images in [0, 1] side by side with ``gap`` blank columns between them, as one
    H×W' (grey, NaN in the gaps) or H×W'×3 (colour, white gaps) array, and whether colour."""
    images = images.detach().float().cpu().clamp(0, 1)
    colour = images.shape[1] == 3
    tiles = images.permute(0, 2, 3, 1) if colour else images.mean(dim=1, keepdim=True).permute(
        0, 2, 3, 1)
    blank = torch.full((tiles.shape[1], gap, tiles.shape[3]), 1.0 if colour else float("nan"))
    parts = [part for tile in tiles for part in (tile, blank)][:-1]
    strip = torch.cat(parts, dim=1)
    return (strip if colour else strip[..., 0]), colour


def adversarial_examples_grid(
    x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pred_clean: torch.Tensor,
    pred_adv: torch.Tensor, classes: Sequence[str], title: str, path: Path,
) -> Path:
    """Clean vs adversarial examples as a PNG: one column per image, rows clean (with its
    prediction), perturbation (diverging colours, each scaled to its own largest change, which
    the title gives) and adversarial (with its prediction, in red when it is not the label).

    One axes per row, the images side by side in it: a figure per cell is drawn for every
    cell of a run, and 24 matplotlib axes cost most of a second where three cost a fifth."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("no images to draw")
    delta = signed_perturbation((x_adv - x).detach().float().cpu())
    scales = delta.flatten(1).abs().amax(dim=1)
    width, gap = x.shape[-1], max(1, x.shape[-1] // 8)
    step = width + gap
    unit = delta / scales.clamp_min(1e-12).view(-1, 1, 1)  # each map in [-1, 1]
    figure, axes = plt.subplots(3, 1, figsize=(1.45 * n + 0.5, 5.0), squeeze=False)
    clean_row, change_row, adv_row = axes[:, 0]
    for axis, images in ((clean_row, x), (adv_row, x_adv)):
        strip, colour = _strip(images, gap)
        axis.imshow(strip.numpy(), cmap=None if colour else "gray", vmin=0, vmax=1,
                    interpolation="nearest")
    change, _ = _strip(unit.unsqueeze(1) / 2 + 0.5, gap)
    change_row.imshow(change.numpy() * 2 - 1, cmap="RdBu_r", vmin=-1, vmax=1,
                      interpolation="nearest")
    for i in range(n):
        truth, centre = int(y[i]), i * step + (width - 1) / 2
        clean_fooled, fooled = int(pred_clean[i]) != truth, int(pred_adv[i]) != truth
        name = label_name(pred_clean[i], classes)
        if clean_fooled:
            name += f"\n(true {label_name(truth, classes)})"
        scale = float(scales[i])
        texts = ((clean_row, name, FOOLED if clean_fooled else "k", None),
                 (change_row, f"δ ±{scale:.3g}" if scale else "δ = 0", "k", None),
                 (adv_row, label_name(pred_adv[i], classes), FOOLED if fooled else "k",
                  "bold" if fooled else None))
        for axis, text, ink, weight in texts:
            axis.text(centre, -1.5, text, ha="center", va="bottom", fontsize=8, color=ink,
                      fontweight=weight)
    for axis, row in zip(axes[:, 0], ("clean", "perturbation", "adversarial"), strict=True):
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_frame_on(False)
        axis.set_ylabel(row, fontsize=8)
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


def sweep_series(points: Sequence[tuple[float, torch.Tensor, int]]) -> EpsSeries:
    """One image across the cells of an ε sweep: ``(ε, its adversarial example from that
    cell (C×H×W), the model's prediction on it)`` per cell, in ε order."""
    points = sorted(points, key=lambda point: point[0])
    return EpsSeries(tuple(float(eps) for eps, _, _ in points),
                     torch.stack([image for _, image, _ in points]),
                     torch.tensor([pred for _, _, pred in points]),
                     tuple(None for _ in points))


def eps_grid_figure(
    series: EpsSeries, y_one: int, classes: Sequence[str], norm: str, title: str, path: Path,
) -> Path:
    """One image across an ε sweep as a PNG: the image at each ε of ``series``, titled with ε
    and the prediction (red when it is not the label; "rejected" where the gate refused the
    output)."""
    n = len(series.eps)
    figure, axes = plt.subplots(1, n, figsize=(1.45 * n + 0.5, 2.2), squeeze=False)
    unit = " px" if norm == "l0" else ""
    for axis, eps, image, pred, reason in zip(axes[0], series.eps, series.x_adv, series.pred,
                                              series.reasons, strict=True):
        _show_image(axis, image)
        if reason is not None:
            axis.set_title(f"ε={eps:.3g}{unit}\nrejected", fontsize=8, color="tab:gray")
            continue
        fooled = int(pred) != int(y_one)
        axis.set_title(f"ε={eps:.3g}{unit}\n{label_name(pred, classes)}", fontsize=8,
                       color=FOOLED if fooled else "k", fontweight="bold" if fooled else None)
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)
