"""Pixel scan: every single-pixel change to white or black, tried in turn, as an L0 attack.

Every one of the H×W positions is set to white (all channels 1), then to black (0), in turn; the
attack returns, per image, the first candidate in that order (white scan, then black, positions
row-major) that fools the model, or the original image when none does. L0 with ε ≥ 1: only one
pixel ever changes. Scores access only; each image is charged one query per candidate it was
shown, and images stop being scanned once fooled (candidates go in blocks of ``block``
positions). A full scan costs ``len(values)·H·W`` queries per image.

Arguments: ``values`` (the pixel values tried, in order), ``block`` (positions per step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl
from advbench.algorithms.pixel_scan import fooling_map, save_fooling_heatmap, scan_block


@dataclass(kw_only=True)
class PixelScan(Attack):
    name = "pixel-scan"
    norms = ("l0",)
    access = "scores"
    targeted = True
    description = "exhaustive one-pixel scan: each position white, then black"
    presets = {"cpu": {"values": (1.0,)}}  # white pixels only: half the queries
    # Left out of a cascade against a randomized defense, where one-pixel runs: it scores every
    # candidate once, so a noisy model ranks them at random (against gaussian-smoothing it took
    # 20 s of the default run and broke no sample one-pixel had left).
    against_randomized = False

    values: tuple[float, ...] = field(default=(1.0, 0.0), metadata={"ge": 0, "le": 1})
    block: int = field(default=196, metadata={"ge": 1})

    def __post_init__(self) -> None:
        if not self.values:  # no pixel value to try: no query, robust = clean
            raise ValueError("values is empty: the scan would try no pixel; give at least one "
                             "value in [0, 1], e.g. values=[1.0]")

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        if threat.eps < 1:
            return x
        n, _, h, w = x.shape
        criterion = ctx.criterion(y)
        found = torch.full((n,), -1, dtype=torch.long, device=x.device)  # flat position
        found_value = torch.zeros(n, dtype=x.dtype, device=x.device)
        for value in self.values:
            for start in range(0, h * w, self.block):
                active = torch.nonzero(found < 0).flatten()
                if active.numel() == 0:
                    break
                positions = torch.arange(start, min(start + self.block, h * w), device=x.device)
                hits = scan_block(oracle, x, criterion, active, positions, value)
                success = hits.any(dim=1)
                first = hits.int().argmax(dim=1)  # index of the first True in the block
                winners = active[success]
                found[winners] = positions[first[success]]
                found_value[winners] = value
        return _apply(x, found, found_value)


    def figures(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor,
                stem: Path) -> list[Path]:
        """A heat map of where a white or a black pixel fools the model, for a few images."""
        fooling = fooling_map(oracle, x, y, 1.0) | fooling_map(oracle, x, y, 0.0)
        titles = [f"label {int(label)}: {int(count)} fooling pixels"
                  for label, count in zip(y, fooling.flatten(1).sum(dim=1), strict=True)]
        return [save_fooling_heatmap(stem.with_suffix(".png"), x, fooling, titles=titles)]


def _apply(x: torch.Tensor, found: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``x`` with, where ``found`` ≥ 0, that flat position set to ``value`` in all channels."""
    winners = torch.nonzero(found >= 0).flatten()
    out = x.clone()
    if winners.numel():
        flat = out.flatten(2)  # a view: writes land in ``out``
        flat[winners, :, found[winners]] = value[winners].unsqueeze(1)
    return out


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [PixelScan]
