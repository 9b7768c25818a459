"""The pixel scan: which single pixels, set to white (or black), flip the prediction — and the
heat map PNG of those positions.

Core rather than plugin code because the runner draws the heat map for the run folder and the
``pixel-scan`` attack plugin scans with the same candidate builder; plugins may not import each
other. Every model evaluation goes through an :class:`Oracle`, so scans are query-counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from advbench.attack import Criterion, criterion_for
from advbench.oracle import Oracle


def rows_per_pass(device: torch.device) -> int:
    """Candidate images per forward pass. A CPU runs small convolutional nets fastest on about
    a hundred images per thread at a time (the activations stay in cache: measured on ``seed-cnn``
    with one thread, 32 to 192 rows cost the same per image, 256 rows ~1.5x more and 512
    ~1.8x more; with two threads on a machine busy with other work the cost per row is
    dominated by waiting for both threads, so fewer, larger passes do no worse); an
    accelerator wants large batches."""
    return 128 * torch.get_num_threads() if device.type == "cpu" else 8192


def set_pixels(x: torch.Tensor, positions: torch.Tensor, value: float) -> torch.Tensor:
    """Candidates: every image of ``x`` (n×C×H×W) once per flat position in ``positions`` (m),
    with all channels of that pixel set to ``value``. Returns (n·m)×C×H×W, image-major."""
    n, c, h, w = x.shape
    m = positions.numel()
    candidates = x.reshape(n, 1, c, h * w).repeat(1, m, 1, 1)
    candidates[:, torch.arange(m, device=x.device), :, positions.to(x.device)] = value
    return candidates.reshape(n * m, c, h, w)


def scan_block(
    oracle: Oracle, x: torch.Tensor, criterion: Criterion, index: torch.Tensor,
    positions: torch.Tensor, value: float, *, max_rows: int | None = None,
) -> torch.Tensor:
    """Bool (len(index))×(len(positions)): does setting that pixel of batch sample ``index[i]``
    to ``value`` fool the model? ``x``/``criterion`` cover the whole batch; each candidate is
    charged to its own sample. Images are grouped so that a forward pass holds about ``max_rows``
    candidates (default: :func:`rows_per_pass`), never less than one image's."""
    m = positions.numel()
    max_rows = max_rows or rows_per_pass(x.device)
    per_pass = max(1, max_rows // max(m, 1))
    parts = []
    for start in range(0, index.numel(), per_pass):
        rows = index[start : start + per_pass]
        candidates = set_pixels(x[rows], positions, value)
        scores = oracle.scores(candidates, index=rows.repeat_interleave(m))
        parts.append(criterion[rows.repeat_interleave(m)].is_adversarial(scores).view(-1, m))
    if not parts:
        return torch.zeros(0, m, dtype=torch.bool, device=x.device)
    return torch.cat(parts)


def fooling_map(
    model: Oracle | nn.Module, x: torch.Tensor, y: torch.Tensor, value: float = 1.0, *,
    targets: torch.Tensor | None = None, max_rows: int | None = None,
) -> torch.Tensor:
    """Per-image H×W bool map: True where setting that one pixel (all channels) to ``value``
    makes the prediction differ from ``y`` (or, with ``targets``, equal the target).

    ``model`` may be an Oracle (its queries are counted, H·W per image) or a plain module.
    """
    n, _, h, w = x.shape
    oracle = model if isinstance(model, Oracle) else Oracle(model, "scores", n)
    criterion = criterion_for(y, targets)
    index = torch.arange(n, device=x.device)
    hw = h * w
    max_rows = max_rows or rows_per_pass(x.device)
    block = min(hw, max_rows)
    columns = [
        scan_block(oracle, x, criterion, index, torch.arange(start, min(start + block, hw),
                   device=x.device), value, max_rows=max_rows)
        for start in range(0, hw, block)
    ]
    return torch.cat(columns, dim=1).view(n, h, w)


def save_fooling_heatmap(
    path: str | Path, x: torch.Tensor, fooling: torch.Tensor, *,
    titles: Sequence[str] | None = None, max_images: int = 8,
) -> Path:
    """Draw the fooling-pixel heat map as a PNG: each image with its fooling positions in red.

    ``x`` is N×C×H×W in [0, 1] (C = 1 or 3); ``fooling`` is N×H×W bool (e.g. from
    :func:`fooling_map`). The first ``max_images`` images are drawn, one panel each, titled with
    ``titles[i]`` if given, else the count of fooling positions. Uses the Agg canvas directly, so
    it needs no display and leaves pyplot's global state alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = min(max_images, x.shape[0])
    if count == 0:
        raise ValueError("no images to draw")
    images = x[:count].detach().float().cpu().clamp(0, 1)
    maps = fooling[:count].detach().bool().cpu()
    h, w = maps.shape[1:]
    figure = Figure(figsize=(2.2 * count, 2.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, count, squeeze=False)[0]
    for i, axis in enumerate(axes):
        picture = images[i].permute(1, 2, 0).numpy()
        if picture.shape[2] == 1:
            axis.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            axis.imshow(picture, interpolation="nearest")
        overlay = torch.zeros(h, w, 4)
        overlay[..., 0] = 1.0
        overlay[..., 3] = maps[i].float() * 0.6
        axis.imshow(overlay.numpy(), interpolation="nearest")
        title = titles[i] if titles is not None else f"{int(maps[i].sum())}/{h * w} fool"
        axis.set_title(title, fontsize=9)
        axis.set_axis_off()
    figure.suptitle("single pixels that flip the prediction (red)", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
