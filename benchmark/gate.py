"""The validity gate: harness code that decides whether an adversarial batch counts.

Plugins never grade themselves. Every batch an attack returns is clipped to the data box and then
checked against the threat model; a batch that fails makes the whole cell invalid, with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from advbench.threat import ThreatModel, clip_to_box, perturbation_size

TOLERANCE = 1e-6
L1_RELATIVE_TOLERANCE = 1e-5


def allowance(norm: str, eps: float) -> float:
    """How far above ε a perturbation may measure and still count as within it: float
    rounding. An L1 norm sums every value, so its rounding grows with ε (float32 sums of a few
    thousand values drift by about 2·10⁻⁶ of their size, whichever order they are added in)."""
    return TOLERANCE + (L1_RELATIVE_TOLERANCE * eps if norm == "l1" else 0.0)


@dataclass(frozen=True)
class GateResult:
    """The clipped batch when it is valid, else ``None`` and the reason it is not."""

    x_adv: torch.Tensor | None
    reason: str | None = None


def plain_tensor(value: object) -> object:
    """A ``torch.Tensor`` subclass's data as an exact ``torch.Tensor``, read with its
    ``__torch_function__`` off: a subclass could answer the gate's checks and the harness's
    predictions itself. Anything else is returned as it is."""
    if issubclass(type(value), torch.Tensor) and type(value) is not torch.Tensor:
        with torch._C.DisableTorchFunctionSubclass():
            plain = torch.Tensor.as_subclass(cast(torch.Tensor, value), torch.Tensor)
            return plain.detach().clone()
    return value


def check_adversarial(x: torch.Tensor, x_adv: object, threat: ThreatModel) -> GateResult:
    """Clip ``x_adv`` to [0, 1] and check type, shape, dtype, device, finiteness and norm (of
    its plain tensor data: see :func:`plain_tensor`)."""
    x_adv = plain_tensor(x_adv)
    if not isinstance(x_adv, torch.Tensor):
        return GateResult(None, f"attack returned {type(x_adv).__name__}, not a torch.Tensor")
    if x_adv.shape != x.shape:
        return GateResult(None, f"wrong shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if x_adv.dtype != x.dtype:
        return GateResult(None, f"wrong dtype {x_adv.dtype}, expected {x.dtype}")
    if x_adv.device != x.device:
        return GateResult(None, f"wrong device {x_adv.device}, expected {x.device}")
    if not bool(torch.isfinite(x_adv).all()):
        return GateResult(None, "non-finite values (NaN or inf) in the adversarial examples")
    clipped = clip_to_box(x_adv.detach())
    size = perturbation_size(clipped - x, threat.norm)
    worst = float(size.max()) if size.numel() else 0.0
    if worst > threat.eps + allowance(threat.norm, threat.eps):
        return GateResult(
            None, f"perturbation {threat.norm} norm {worst:.6g} exceeds eps {threat.eps:g}"
        )
    return GateResult(clipped)
