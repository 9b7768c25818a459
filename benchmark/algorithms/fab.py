"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020: "Minimally distorted
adversarial examples with a fast adaptive boundary attack"), L∞ and L2, written from the paper.

A minimum-norm attack: per sample it looks for the *smallest* perturbation that changes the
decision, and reports that size, whatever the cell's ε. One iteration from the current point
``x_k`` (``x_0`` the clean input):

1. Linearize the decision boundary at ``x_k``: for a class ``j`` with
   ``f_j = z_j − z_y`` (negative while ``y`` wins), the hyperplane
   ``f_j(x_k) + ⟨∇f_j(x_k), z − x_k⟩ = 0``. Untargeted FAB takes the class whose hyperplane is
   nearest, ``argmin_j |f_j| / ‖∇f_j‖_q`` (``q`` the dual norm: L1 for L∞, L2 for L2); FAB-T
   takes a given target ``t`` (AutoAttack runs it for each of the top 9 wrong classes).
2. Project both ``x_k`` and ``x_0`` onto that hyperplane *intersected with the box* [0, 1]
   (:func:`boundary_step`, the exact minimal-norm solution, one sort per sample), giving steps
   ``δ_k`` and ``δ_0``.
3. Biased step: ``x_{k+1} = clip((1 − α)(x_k + η·δ_k) + α(x_0 + η·δ_0))`` with
   ``α = min(‖δ_k‖ / (‖δ_k‖ + ‖δ_0‖), α_max)``: the nearer ``x_k`` is to the boundary
   compared with ``x_0``, the more the step leans back towards ``x_0``; ``η`` > 1 overshoots
   the linearized boundary a little.
4. If ``x_{k+1}`` is adversarial, keep it when it is the smallest found, then step back
   towards ``x_0``: ``x_{k+1} ← x_0 + β(x_{k+1} − x_0)``.

Restarts after the first start from a random point at half ``min(best norm, ε)`` from ``x_0``.

Queries, charged by the oracle: per sample and iteration one gradient query (untargeted: one
forward pass whose logits are differentiated once per class, as the authors do; against a
randomized model, ``eot_samples`` such passes averaged) and one label query for step 4 (its
forward pass cannot stand in for the next gradient query's: near the boundary most iterates
fool, and the backward step moves them). FAB-T reads the clean logits once to rank its
targets.

Output: each sample's smallest adversarial norm found (``inf`` where none), and the example the
cell's ε allows: the minimal one when it lies within ε, else the minimal one projected onto the
ε-ball (or ``x_0`` where nothing was found). With ``early_exit`` a sample stops being iterated
once it has an adversarial example within ε (what robust accuracy at ε needs; its reported norm
is then an upper bound found so far, not FAB's best); without it every sample runs every
iteration, restart and target, and the reported norm is the smallest FAB finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from advbench.algorithms.minimum_norm import keep_smaller, per_sample, target_rounds, within_eps
from advbench.attack import (
    Attack,
    AttackContext,
    Criterion,
    Misclassification,
    TargetedMisclassification,
)
from advbench.oracle import Oracle
from advbench.threat import ThreatModel, clip_to_box, perturbation_size

NORMS: tuple[str, ...] = ("linf", "l2")
TINY = 1e-12

def _water_level(weight: torch.Tensor, cap: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """Per row, the level λ ≥ 0 with ``Σ_i weight_i · min(λ, cap_i) = need`` (weights, caps,
    need ≥ 0; N×D, N×D, N); the largest cap where even λ = max cap falls short.

    The sum is nondecreasing and piecewise linear in λ with kinks at the caps: sorting the caps
    gives its value at every kink by two cumulative sums, and the first kink at or above
    ``need`` names the linear piece that holds λ."""
    caps, order = cap.sort(dim=1)
    weights = weight.gather(1, order)
    filled = torch.cumsum(weights * caps, dim=1)         # capped coordinates' share at kink k
    slope = weights.sum(dim=1, keepdim=True) - torch.cumsum(weights, dim=1)  # after kink k
    at_kink = (filled + caps * slope).cummax(dim=1).values  # guard rounding: monotone
    k = torch.searchsorted(at_kink, need.unsqueeze(1)).squeeze(1)
    width = cap.shape[1]
    before = (k - 1).clamp(min=0).unsqueeze(1)
    base = torch.where(k > 0, filled.gather(1, before).squeeze(1), torch.zeros_like(need))
    rate = torch.where(k > 0, slope.gather(1, before).squeeze(1), weights.sum(dim=1))
    level = (need - base) / rate.clamp_min(TINY)
    return torch.where(k >= width, caps[:, -1], level)


def boundary_step(point: torch.Tensor, normal: torch.Tensor, offset: torch.Tensor,
                  norm: str) -> torch.Tensor:
    """The smallest ``norm`` step δ with ``⟨normal, δ⟩ = offset`` and ``point + δ`` in the box
    [0, 1], per row (``point``, ``normal``: N×D; ``offset``: N); where the box cannot reach the
    hyperplane, the box corner that comes nearest.

    Each coordinate moves in the direction of ``sign(normal_i · offset)``, by ``min(λ, room_i)``
    (L∞) or ``|normal_i|·min(λ, room_i/|normal_i|)`` (L2, the KKT form of a clipped multiple
    of ``normal``), ``room_i`` the distance to the box's face on that side; λ is the
    :func:`_water_level` that meets ``offset``."""
    if norm not in NORMS:
        raise ValueError(f"FAB projects in linf or l2, not {norm}")
    normal = normal * torch.where(offset < 0, -1.0, 1.0).unsqueeze(1)
    need = offset.abs()
    direction = normal.sign()
    room = torch.where(normal > 0, 1 - point, point).clamp(min=0)
    size = normal.abs()
    if norm == "linf":
        level = _water_level(size, room, need).unsqueeze(1)
        return direction * torch.minimum(level, room)
    moving = size > 0
    cap = torch.where(moving, room / size.clamp_min(TINY), torch.zeros_like(room))
    level = _water_level(size.square(), cap, need).unsqueeze(1)
    return normal * torch.minimum(level, cap)


def dual_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row of ``g`` (N×…), the norm dual to ``norm``: L1 for L∞, L2 for L2."""
    size: torch.Tensor = torch.linalg.vector_norm(g.flatten(1), ord=1 if norm == "linf" else 2,
                                                 dim=1)
    return size


def nearest_boundary(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                     norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted FAB's linearization at ``x``: over the classes ``j ≠ y``, the one whose
    linearized boundary ``f_j = z_j − z_y`` is nearest; returns that ``f_j`` and ``∇f_j``.

    One forward pass per EOT draw (each charged by the oracle), differentiated once per class."""
    jacobian = logits = None
    for _ in range(oracle.eot_samples):
        point = x.detach().requires_grad_(True)
        with torch.enable_grad():
            z = oracle.logits(point, index)
            grads = [torch.autograd.grad(z[:, j].sum(), point, retain_graph=j < z.shape[1] - 1)[0]
                     for j in range(z.shape[1])]
        draw = torch.stack(grads, dim=1)
        jacobian = draw if jacobian is None else jacobian + draw
        logits = z.detach() if logits is None else logits + z.detach()
    assert jacobian is not None and logits is not None
    jacobian, logits = jacobian / oracle.eot_samples, logits / oracle.eot_samples
    rows = torch.arange(len(x), device=x.device)
    f = logits - logits[rows, y].unsqueeze(1)
    g = jacobian - jacobian[rows, y].unsqueeze(1)
    distance = f.abs() / (dual_norm(g.flatten(0, 1), norm).view(f.shape) + TINY)
    distance[rows, y] = torch.inf
    nearest = distance.argmin(dim=1)
    return f[rows, nearest], g[rows, nearest]


def target_boundary(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                    target: torch.Tensor, reach: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """FAB-T's linearization at ``x``: ``f = z_t − z_y`` (AutoAttack's), or with ``reach``
    ``f = z_t − max_{j≠t} z_j`` (what reaching ``t`` needs); ``f`` and ``∇f``, one gradient
    query (EOT-averaged by the oracle)."""
    def margin(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _target_margin(z, t, y, reach).sum()

    grad, logits = oracle.gradient(x, target, index, loss=margin)
    return _target_margin(logits, target, y, reach), grad


def _target_margin(z: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                   reach: bool) -> torch.Tensor:
    own = z.gather(1, t.view(-1, 1)).squeeze(1)
    if reach:
        return own - z.scatter(1, t.view(-1, 1), -torch.inf).amax(dim=1)
    return own - z.gather(1, y.view(-1, 1)).squeeze(1)


def fab_round(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
              start: torch.Tensor, threat: ThreatModel, *, iterations: int,
              criterion: Criterion, target: torch.Tensor | None = None, reach: bool = False,
              alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
              early_exit: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run from ``start`` on the batch rows ``index`` (``x``, ``y``, ``criterion``,
    ``target``: those rows). Per row: the smallest adversarial norm found (``inf`` if none)
    and that example (``x`` where none)."""
    norm = threat.norm
    best_norm = torch.full((len(x),), torch.inf, dtype=x.dtype, device=x.device)
    best = x.clone()

    def linearize(pos: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if target is None:
            return nearest_boundary(oracle, point, y[pos], index[pos], norm)
        return target_boundary(oracle, point, y[pos], index[pos], target[pos], reach)

    pos = torch.arange(len(x), device=x.device)
    current = start.clone()
    for _ in range(iterations):
        x0 = x[pos]
        f, g = linearize(pos, current)
        flat_g = g.flatten(1)
        shift = (flat_g * (x0 - current).flatten(1)).sum(dim=1)
        steps = boundary_step(torch.cat([current, x0]).flatten(1), flat_g.repeat(2, 1),
                              torch.cat([-f, -f - shift]), norm).view(2, *current.shape)
        own, from_origin = steps[0], steps[1]
        size_own = perturbation_size(own, norm).clamp_min(1e-8)
        size_origin = perturbation_size(from_origin, norm).clamp_min(1e-8)
        alpha = per_sample((size_own / (size_own + size_origin)).clamp(0, alpha_max), current)
        current = clip_to_box((1 - alpha) * (current + eta * own)
                              + alpha * (x0 + eta * from_origin))
        fooled = _fooled(criterion[pos], oracle.labels(current, index[pos]))
        size = perturbation_size(current - x0, norm)
        better = fooled & (size < best_norm[pos])
        best_norm[pos[better]] = size[better]
        best[pos[better]] = current[better]
        current = torch.where(per_sample(fooled, current), x0 + beta * (current - x0), current)
        if early_exit:
            keep = best_norm[pos] > threat.eps
            pos, current = pos[keep], current[keep]
            if len(pos) == 0:
                break
    return best_norm, best


def _fooled(criterion: Criterion, labels: torch.Tensor) -> torch.Tensor:
    """Per row: do the predicted ``labels`` meet ``criterion`` (−1, abstaining, never reaches a
    target and always leaves the true class)?"""
    return labels == criterion.labels if criterion.targeted else labels != criterion.labels


def random_start(x: torch.Tensor, radius: torch.Tensor, norm: str,
                 generator: torch.Generator | None) -> torch.Tensor:
    """A random point at ``norm`` distance ``radius`` (per row) from ``x``, clipped to the box."""
    if norm == "linf":
        noise = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
    else:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    scale = perturbation_size(noise, norm).clamp_min(TINY)
    return clip_to_box(x + per_sample(radius / scale, x) * noise)


def fab(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *,
        iterations: int = 100, restarts: int = 1, target_classes: int = 0,
        targets: torch.Tensor | None = None, alpha_max: float = 0.1, eta: float = 1.05,
        beta: float = 0.9, early_exit: bool = True,
        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FAB on the batch ``x`` (true labels ``y``) inside ``threat``; returns the gated examples
    and each sample's smallest adversarial norm found (``inf`` where none).

    ``target_classes`` 0: untargeted FAB; k > 0: FAB-T, one round towards each of the k
    highest-scoring wrong classes of the clean input (success: misclassified). ``targets``:
    one round towards them (success: classified as the target). Each round runs ``restarts``
    times; with ``early_exit`` only on the samples without an adversarial example within ε."""
    if threat.norm not in NORMS:
        raise ValueError(f"FAB runs in linf or l2, not {threat.norm}")
    x, y = x.detach(), y.detach()
    n = len(x)
    best_norm = torch.full((n,), torch.inf, dtype=x.dtype, device=x.device)
    best = x.clone()
    if n == 0:
        return best, best_norm
    rounds = target_rounds(oracle, x, y, target_classes, targets)
    criterion: Criterion = (Misclassification(y) if targets is None
                            else TargetedMisclassification(targets))
    everyone = torch.arange(n, device=x.device)
    for target in rounds:
        for restart in range(restarts):
            rows = everyone[best_norm > threat.eps] if early_exit else everyone
            if len(rows) == 0:
                return within_eps(x, best, threat), best_norm
            start = x[rows]
            if restart > 0:
                radius = 0.5 * best_norm[rows].clamp(max=threat.eps)
                start = random_start(x[rows], radius, threat.norm, generator)
            found, example = fab_round(
                oracle, x[rows], y[rows], rows, start, threat, iterations=iterations,
                criterion=criterion[rows], target=None if target is None else target[rows],
                reach=targets is not None, alpha_max=alpha_max, eta=eta, beta=beta,
                early_exit=early_exit)
            keep_smaller(best, best_norm, rows, example, found)
    return within_eps(x, best, threat), best_norm


@dataclass(kw_only=True)
class FABAttack(Attack):
    """The FAB plugins' shared body (a subclass sets ``name``, ``norms``, ``description``).

    Fields: ``iterations`` (100, the paper's), ``restarts`` (1; later ones start at random),
    ``target_classes`` (0: untargeted FAB; k: FAB-T over the top k wrong classes),
    ``alpha_max`` (0.1), ``eta`` (1.05), ``beta`` (0.9), ``early_exit`` (True). Randomized
    only through restarts after the first, declared so all the same. Reports each sample's
    smallest adversarial norm found as ``ctx.record["norm_before_projection"]``.
    """

    access = "gradient"
    norms = NORMS
    targeted = True
    randomized = True

    iterations: int = field(default=100, metadata={"ge": 1})
    restarts: int = field(default=1, metadata={"ge": 1})
    target_classes: int = field(default=0, metadata={"ge": 0})
    alpha_max: float = field(default=0.1, metadata={"ge": 0, "le": 1})
    eta: float = field(default=1.05, metadata={"ge": 1})
    beta: float = field(default=0.9, metadata={"gt": 0, "lt": 1})
    early_exit: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1 or self.target_classes < 0:
            raise ValueError("iterations and restarts must be >= 1, target_classes >= 0")
        if not 0 <= self.alpha_max <= 1 or self.eta < 1 or not 0 < self.beta < 1:
            raise ValueError("alpha_max must be in [0, 1], eta >= 1, beta in (0, 1)")

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        x_adv, needed = fab(
            oracle, x, y, threat, iterations=self.iterations, restarts=self.restarts,
            target_classes=self.target_classes, targets=ctx.targets, alpha_max=self.alpha_max,
            eta=self.eta, beta=self.beta, early_exit=self.early_exit, generator=ctx.generator)
        ctx.record["norm_before_projection"] = needed
        return x_adv
