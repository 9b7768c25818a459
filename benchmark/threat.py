"""Threat models: which perturbations count, and how the harness measures them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NORMS = ("linf", "l2", "l1", "l0")
BOX = (0.0, 1.0)


@dataclass(frozen=True)
class ThreatModel:
    """A norm ball of radius ``eps`` around each input, intersected with the data box [0, 1].

    ``l1`` sums the absolute changes of every value (all channels); for ``l0`` the radius is
    the number of pixels (spatial positions) that may change.
    """

    norm: str
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")


def perturbation_size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample size of ``delta`` (shape N×C×H×W or N×D) in ``norm``.

    L0 counts spatial positions where any channel changed, so a one-pixel attack on an RGB
    image has size 1.
    """
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        size: torch.Tensor = flat.norm(p=2, dim=1)  # Tensor.norm is annotated Any
        return size
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        changed = delta != 0
        if delta.dim() == 4:
            changed = changed.any(dim=1)
        return changed.flatten(1).sum(dim=1).to(delta.dtype)
    raise ValueError(f"unknown norm {norm!r}")


def normalize(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Each sample scaled to unit ``norm`` (``l1``, ``l2`` or ``linf``); a zero sample stays
    zero (no division by zero). Not the steepest-ascent step: for L∞ that is ``grad.sign()``."""
    order = {"l1": 1, "l2": 2, "linf": torch.inf}[norm]
    norms = torch.linalg.vector_norm(grad.flatten(1), ord=order, dim=1)
    norms = norms.view(-1, *([1] * (grad.dim() - 1)))
    return torch.where(norms > 0, grad / norms.clamp_min(1e-12), torch.zeros_like(grad))


def l2_normalize(grad: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to unit L2 norm (see :func:`normalize`)."""
    return normalize(grad, "l2")


def project(delta: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Project ``delta`` onto the threat model's ball (L∞: clamp; L2: rescale; L1: soft
    threshold; L0: keep the ε most-changed pixels). Clipping the result to the box afterwards
    keeps it in the ball: clipping only shrinks each coordinate of the perturbation."""
    if threat.norm == "linf":
        return delta.clamp(-threat.eps, threat.eps)
    if threat.norm == "l2":
        norms: torch.Tensor = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
        factor = (threat.eps / norms).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    if threat.norm == "l1":
        return project_l1(delta, threat.eps)
    if threat.norm == "l0":
        return project_l0(delta, int(threat.eps))
    raise ValueError(f"projection onto an {threat.norm} ball is not defined here")


def project_l1(delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each sample onto the L1 ball of radius ``eps`` (a number, or
    one per sample; Duchi et al. 2008): shrink every coordinate's magnitude by the one
    threshold θ that brings the sum of magnitudes down to ``eps``; samples already inside are
    returned unchanged."""
    flat = delta.flatten(1)
    size = flat.abs()
    radius = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device).reshape(-1, 1)
    descending = size.sort(dim=1, descending=True).values
    excess = descending.cumsum(dim=1) - radius
    rank = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=delta.dtype)
    # The coordinates that stay non-zero are the k largest, k the last rank where the k-th
    # largest magnitude still exceeds the threshold that k coordinates would need.
    kept = (descending - excess / rank > 0).sum(dim=1).clamp(min=1)
    theta = (excess.gather(1, (kept - 1).unsqueeze(1)) / kept.unsqueeze(1)).clamp(min=0)
    shrunk = flat.sign() * (size - theta).clamp(min=0)
    inside = size.sum(dim=1, keepdim=True) <= radius
    return torch.where(inside, flat, shrunk).view_as(delta)


def project_l0(delta: torch.Tensor, pixels: int | torch.Tensor) -> torch.Tensor:
    """Keep, per sample, the ``pixels`` spatial positions changed most (summed over channels;
    a number, or one per sample), zero elsewhere."""
    images = delta.dim() == 4
    magnitude = delta.abs().sum(dim=1, keepdim=True) if images else delta.abs()
    size = magnitude.flatten(1)
    order = size.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(size.shape[1], device=delta.device).expand_as(order))
    count = torch.as_tensor(pixels, device=delta.device).reshape(-1, 1)
    return delta * (rank < count).view_as(magnitude)


def clip_to_box(x: torch.Tensor) -> torch.Tensor:
    """Clamp to the data box [0, 1] every dataset is scaled to."""
    return x.clamp(*BOX)
