"""Pictures of one attack cell for the run folder: clean vs adversarial examples (seed figures
5, 6, 13, 14) and one image attacked at a range of ε (seed figure 8).

Every adversarial image drawn is one the harness's gate accepted: the attack runs through its
final ``perturb`` (copies in, output clipped and checked against the threat model), with an
:class:`Oracle` and an :class:`AttackContext` built as :func:`advbench.running.evaluate.attack_cell`
builds them. Every prediction drawn is the model's own decision (``model_labels``: its
``predict`` when it has one, so an abstention shows as "abstain"), never the plugin's.

Computation comes first and drawing last, so an attack that raises (which propagates to the
caller) leaves no half-written set of files behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advbench.attack import Attack, AttackContext
from advbench.gate import GateResult
from advbench.oracle import Oracle
from advbench.reporting.figures import plt, save_figure
from advbench.running.evaluate import predict
from advbench.threat import ThreatModel

#: ε grid as multiples of the cell's ε (L∞, L2): Fashion-MNIST's default L∞ ε = 0.1 gives
#: 0, 0.02, 0.05, 0.1, 0.2, 0.3.
EPS_MULTIPLIERS = (0.0, 0.2, 0.5, 1.0, 2.0, 3.0)
#: ε grid for L0: numbers of pixels (the cell's own k is added when missing).
L0_PIXELS = (0, 1, 2, 3, 5)
MAX_IMAGES = 8
FOOLED = "tab:red"

AttackFn = Callable[[torch.Tensor, torch.Tensor, float], GateResult]
PredictFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EpsSeries:
    """One image attacked at each ε: the gate-checked images (the clean image where the gate
    rejected the attack's output), the model's predictions, and the gate's reason per ε
    (``None`` where the output was valid)."""

    eps: tuple[float, ...]
    x_adv: torch.Tensor
    pred: torch.Tensor
    reasons: tuple[str | None, ...]


@dataclass(frozen=True)
class CellPictures:
    """What :func:`draw_cell_pictures` drew: the files, and the tensors shown in them (CPU
    predictions; images on the input's device) so callers and tests can check them."""

    paths: list[Path]
    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    series: EpsSeries | None


def label_name(label: int, classes: Sequence[str]) -> str:
    """A label as people read it: the class name, "abstain" for −1, else the number."""
    label = int(label)
    if label == -1:
        return "abstain"
    return classes[label] if 0 <= label < len(classes) else str(label)


def eps_values(threat: ThreatModel) -> tuple[float, ...]:
    """The ε grid for the cell's threat model: 0 and multiples of its ε (L∞ capped at 1, where
    the ball already holds the whole box), or 0, 1, 2, 3, 5 pixels and the cell's k for L0."""
    if threat.norm == "l0":
        values = {float(k) for k in L0_PIXELS} | {float(round(threat.eps))}
    else:
        values = {m * threat.eps for m in EPS_MULTIPLIERS}
        if threat.norm == "linf":
            values = {min(v, 1.0) for v in values}
    return tuple(sorted(values))


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


def adversarial_examples_grid(
    x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pred_clean: torch.Tensor,
    pred_adv: torch.Tensor, classes: Sequence[str], title: str, path: Path,
) -> Path:
    """Seed figures 5, 6, 13, 14 as a PNG: one column per image, rows clean (with its
    prediction), perturbation (diverging colours, each scaled to its own largest change, which
    the title gives) and adversarial (with its prediction, in red when it is not the label)."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("no images to draw")
    delta = signed_perturbation((x_adv - x).detach().float().cpu())
    figure, axes = plt.subplots(3, n, figsize=(1.45 * n + 0.5, 5.0), squeeze=False)
    for i in range(n):
        truth = int(y[i])
        clean, change, adv = axes[0, i], axes[1, i], axes[2, i]
        _show_image(clean, x[i])
        name = label_name(pred_clean[i], classes)
        if int(pred_clean[i]) != truth:
            name += f"\n(true {label_name(truth, classes)})"
        clean.set_title(name, fontsize=8, color=FOOLED if int(pred_clean[i]) != truth else "k")
        scale = float(delta[i].abs().max())
        change.imshow(delta[i].numpy(), cmap="RdBu_r", vmin=-(scale or 1.0), vmax=scale or 1.0,
                      interpolation="nearest")
        change.set_xticks([])
        change.set_yticks([])
        change.set_title(f"δ ±{scale:.3g}" if scale else "δ = 0", fontsize=8)
        _show_image(adv, x_adv[i])
        fooled = int(pred_adv[i]) != truth
        adv.set_title(label_name(pred_adv[i], classes), fontsize=8,
                      color=FOOLED if fooled else "k", fontweight="bold" if fooled else None)
    for axis, row in zip(axes[:, 0], ("clean", "perturbation", "adversarial"), strict=True):
        axis.set_ylabel(row, fontsize=8)
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


def eps_series(
    x_one: torch.Tensor, y_one: torch.Tensor, attack_fn: AttackFn,
    eps_values: Sequence[float], predict_fn: PredictFn,
) -> EpsSeries:
    """Attack one image (1×C×H×W) at each ε with ``attack_fn(x, y, eps) -> GateResult``.

    ε = 0 is the clean image itself (the only point of a zero ball), so the attack is not asked.
    Where the gate rejects the output, the clean image stands in and the reason is kept: one
    bad ε must not cost the other panels.
    """
    images, reasons = [], []
    for eps in eps_values:
        result = GateResult(x_one) if eps == 0 else attack_fn(x_one, y_one, float(eps))
        images.append(x_one if result.x_adv is None else result.x_adv)
        reasons.append(result.reason)
    x_adv = torch.cat(images)
    return EpsSeries(tuple(float(e) for e in eps_values), x_adv, predict_fn(x_adv).cpu(),
                     tuple(reasons))


def eps_grid_figure(
    series: EpsSeries, y_one: int, classes: Sequence[str], norm: str, title: str, path: Path,
) -> Path:
    """Seed figure 8 as a PNG: the image at each ε of ``series``, titled with ε and the
    prediction (red when it is not the label; "rejected" where the gate refused the output)."""
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


def gated_attack(
    model: nn.Module, attack: Attack, norm: str, *, generator_seed: int, eot_samples: int = 1,
    targets: torch.Tensor | None = None,
) -> AttackFn:
    """``(x, y, eps) -> GateResult``: ``attack`` in ``norm`` on a fresh oracle (its own query
    budget, as in ``attack_cell``) and a freshly seeded generator, through its final
    ``perturb`` (the gate). ``targets`` holds one label per row of the ``x`` it will get."""

    def attack_fn(x: torch.Tensor, y: torch.Tensor, eps: float) -> GateResult:
        oracle = Oracle(model, attack.access, len(x), getattr(attack, "max_queries", None),
                        eot_samples)
        ctx = AttackContext(torch.Generator(device=x.device).manual_seed(generator_seed),
                            None if targets is None else targets.to(x.device))
        return attack.perturb(oracle, x, y, ThreatModel(norm, eps), ctx)

    return attack_fn


def draw_cell_pictures(
    model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
    classes: Sequence[str], stem: Path, generator_seed: int, *, eps_grid: bool = True,
    eot_samples: int = 1, targets: torch.Tensor | None = None, title: str | None = None,
    max_images: int = MAX_IMAGES,
) -> CellPictures:
    """:func:`cell_pictures`, returning what was drawn as well as the files."""
    x, y = x[:max_images], y[:max_images]
    targets = None if targets is None else targets[:max_images]
    title = title or f"{attack.name} · {threat.norm} ε={threat.eps:.3g} · {Path(stem).name}"
    result = gated_attack(model, attack, threat.norm, generator_seed=generator_seed,
                          eot_samples=eot_samples, targets=targets)(x, y, threat.eps)
    if result.x_adv is None:
        raise ValueError(f"the gate rejected {attack.name}'s examples: {result.reason}")
    x_adv = result.x_adv

    def predict_fn(images: torch.Tensor) -> torch.Tensor:
        return predict(model, images, len(images), images.device)

    pred_clean, pred_adv = predict_fn(x), predict_fn(x_adv)
    series = None
    if eps_grid:
        attack_one = gated_attack(model, attack, threat.norm, generator_seed=generator_seed,
                                  eot_samples=eot_samples,
                                  targets=None if targets is None else targets[:1])
        series = eps_series(x[:1], y[:1], attack_one, eps_values(threat), predict_fn)
    stem = Path(stem)
    paths = [adversarial_examples_grid(x, x_adv, y, pred_clean, pred_adv, classes, title,
                                       stem.with_name(f"{stem.name}_examples.png"))]
    if series is not None:
        paths.append(eps_grid_figure(
            series, int(y[0]), classes, threat.norm,
            f"{attack.name}: one {label_name(y[0], classes)} at each {threat.norm} ε",
            stem.with_name(f"{stem.name}_eps.png")))
    return CellPictures(paths, x, y, x_adv, pred_clean, pred_adv, series)


def cell_pictures(
    model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
    classes: Sequence[str], stem: Path, generator_seed: int, *, eps_grid: bool = True,
    eot_samples: int = 1, targets: torch.Tensor | None = None, title: str | None = None,
) -> list[Path]:
    """Draw a valid cell's pictures; the runner's entry point. Returns the PNGs written.

    Args:
        model: the defended model (may be randomized or abstain); predictions are its own.
        attack: the cell's attack instance; it runs through ``perturb`` (the gate) on a fresh
            oracle with its ``max_queries`` budget, as in ``attack_cell``.
        x, y: a few correctly classified images (N×C×H×W, C = 1 or 3) and labels, on the
            model's device; only the first 8 are drawn, the first is the ε grid's.
        threat: the cell's threat model.
        classes: the dataset's class names (``Dataset.classes``; empty: numbers are shown).
        stem: path without suffix; writes ``{stem}_examples.png`` and ``{stem}_eps.png``.
        generator_seed: seeds the attack's generator (each ε restarts from it).
        eps_grid: also attack the first image at each ε of :func:`eps_values` (seed figure 8);
            turn off for expensive black-box attacks.
        eot_samples, targets: as in ``attack_cell`` (targets: one label per image of ``x``).
        title: the examples figure's title (default: attack, norm, ε and the stem's name).

    Nothing is written for an empty ``x``. An exception from the attack propagates, as does a
    ``ValueError`` when the gate rejects the examples at the cell's own ε.
    """
    if len(x) == 0:
        return []
    return draw_cell_pictures(model, attack, x, y, threat, classes, stem, generator_seed,
                              eps_grid=eps_grid, eot_samples=eot_samples, targets=targets,
                              title=title).paths
