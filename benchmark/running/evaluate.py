"""One cell of the matrix: attack a defended model on the evaluation samples and grade it.

Only samples the defended model classifies correctly are attacked (the others already count as
not robust). Predictions come from the harness's own forward pass, never from the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from advbench.attack import Attack, AttackContext
from advbench.data import Split
from advbench.gate import GateResult
from advbench.oracle import Oracle, model_labels
from advbench.seal import Pristine, Seal, SealBroken, fingerprint, identical
from advbench.threat import ThreatModel

SHOWN = 8  # adversarial examples a cell keeps for its pictures
NEEDED_NORM = "norm_before_projection"  # what minimum-norm attacks report, per sample


@dataclass
class CellOutcome:
    """Per-sample outcome of one cell (CPU tensors over the evaluation samples)."""

    clean_correct: torch.Tensor
    adv_pred: torch.Tensor
    labels: torch.Tensor
    queries: torch.Tensor
    invalid_reason: str | None = None
    # The first SHOWN attacked samples (indices) and the gate-checked examples the cell made
    # for them: the run's pictures are drawn from these, never by running the attack again.
    shown: torch.Tensor | None = None
    shown_adv: torch.Tensor | None = None
    # Per sample, the size of the perturbation a minimum-norm attack needed before it was
    # projected onto the ε-ball (its ``ctx.record["norm_before_projection"]``; NaN where not
    # attacked, inf where it found none); None when the attack reports none.
    needed_norm: torch.Tensor | None = None
    # In a cascade, the samples earlier attacks of the chain fooled: not attacked, counted as
    # fooled (prediction −1), so the cell's robust accuracy is that of the chain up to it.
    skipped: torch.Tensor | None = None

    @property
    def fooled_here(self) -> torch.Tensor:
        """Samples this cell's attack fooled itself (not those a cascade skipped)."""
        fooled = self.clean_correct & ~self.adv_correct
        return fooled if self.skipped is None else fooled & ~self.skipped

    @property
    def adv_correct(self) -> torch.Tensor:
        return self.adv_pred == self.labels

    @property
    def robust(self) -> torch.Tensor:
        """Robust = correct before and after the attack."""
        return self.clean_correct & self.adv_correct


def skip_mask(n: int, skip: tuple[int, ...]) -> torch.Tensor:
    """The samples a cascade's cell skips, as a mask over its ``n`` samples."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[list(skip)] = True
    return mask


@torch.no_grad()
def is_randomized(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two forward passes on the same inputs differ (a random defense)."""
    model.eval()
    return not torch.equal(model(x), model(x))


def has_own_predict(model: nn.Module) -> bool:
    """Whether the model decides for itself (``predict``, e.g. smoothing's vote with
    abstention): the harness then calls it once and never votes over it again."""
    return callable(getattr(model, "predict", None))


def prediction_draws(model: nn.Module, draws: int) -> int:
    """The forward passes behind each graded prediction: ``draws`` for a model graded by the
    mean of its softmax, 1 for one with its own ``predict``."""
    return 1 if has_own_predict(model) else max(1, draws)


@torch.no_grad()
def decide(model: nn.Module, x: torch.Tensor, draws: int = 1) -> torch.Tensor:
    """The graded decision on one batch. A randomized model's prediction is a random variable:
    it is graded by the argmax of its softmax averaged over ``draws`` forward passes (the same
    rule for clean and adversarial inputs), so that one unlucky draw of the defense's noise is
    not an attack's success. A model with its own ``predict`` is asked once."""
    if draws <= 1 or has_own_predict(model):
        return model_labels(model, x)
    total = model(x).softmax(dim=1)
    for _ in range(draws - 1):
        total += model(x).softmax(dim=1)
    return total.argmax(dim=1)


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device, draws: int = 1
) -> torch.Tensor:
    """Labels predicted by ``model`` for ``x`` (on the CPU), batch by batch (−1: abstained);
    ``draws`` > 1 grades a randomized model by its mean softmax (:func:`decide`)."""
    model.eval()
    parts = [decide(model, x[i : i + batch_size].to(device), draws).cpu()
             for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def unchanged(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per sample, whether the attack returned the input itself (bit for bit)."""
    return (x_adv == x).flatten(1).all(dim=1)


def graded(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, clean: torch.Tensor,
           batch_size: int, device: torch.device, draws: int) -> torch.Tensor:
    """The harness's predictions on what an attack returned: an input returned unchanged keeps
    its clean prediction (it is the same input: predicting it again would only draw a
    randomized defense's noise again), the others are predicted (:func:`predict`)."""
    kept = unchanged(x, x_adv).cpu()
    labels = clean.clone()
    if not bool(kept.all()):
        labels[~kept] = predict(model, x_adv[~kept.to(x_adv.device)], batch_size, device, draws)
    return labels


@dataclass(frozen=True, eq=False)
class CellSpec:
    """How a cell's attack runs: ``batch_size`` samples at a time on ``device``, each batch's
    generator seeded from ``seed``. ``targets`` (one label per sample): the attack is targeted,
    and samples whose target is their own label are not attacked. ``eot_samples`` > 1 averages
    gradients over that many draws of a randomized model, and grades its predictions by the
    softmax averaged over as many draws (:func:`graded`, as the clean predictions must be).
    A ``surrogate`` gives the oracle BPDA gradients (:class:`Oracle`). ``skip``: samples a
    cascade's earlier attacks fooled, counted as fooled, not attacked. ``sealed=False`` is for
    measuring the seal's cost only."""

    batch_size: int
    device: torch.device
    seed: int
    targets: torch.Tensor | None = None
    eot_samples: int = 1
    surrogate: nn.Module | None = None
    skip: tuple[int, ...] = ()
    sealed: bool = True
    # What stands where ``Attack.perturb`` does: an isolated attack's runner
    # (``advbench.running.isolation.IsolatedRunner``); None: the attack runs in this process.
    runner: Callable[[Attack, Oracle, torch.Tensor, torch.Tensor, ThreatModel, AttackContext],
                     GateResult] | None = None


def attack_cell(
    model: nn.Module,
    attack: Attack,
    data: Split,
    clean_pred: torch.Tensor,
    threat: ThreatModel,
    spec: CellSpec,
    *,
    seal: Seal | None = None,
    on_batch: Callable[[int], None] = lambda n: None,
) -> CellOutcome:
    """Run ``attack`` on every correctly classified sample of ``data``, batch by batch, as
    ``spec`` says (:class:`CellSpec`); ``on_batch`` hears how many samples each batch attacked.

    The cell runs under ``seal`` (:mod:`advbench.seal`; one made here over ``model``
    and these tensors when None): an attack that changes the model or what it is graded with,
    runs the model outside the oracle or tampers with the oracle's terms or counts makes the
    cell invalid, and the damage is undone.
    """
    graded = {"evaluation images": data.x, "evaluation labels": data.y,
              "clean predictions": clean_pred}
    if spec.targets is not None:
        graded["targets"] = spec.targets
    if spec.sealed and seal is None:
        seal = Seal(model, [Pristine(graded)])
    if seal is None:
        return _attack_batches(model, attack, data, clean_pred, threat, spec, None, on_batch)
    seal.covers(graded.values())
    with seal.cell():
        outcome = _attack_batches(model, attack, data, clean_pred, threat, spec, seal, on_batch)
        try:
            seal.check_copies()
        except SealBroken as exc:
            outcome.invalid_reason = outcome.invalid_reason or str(exc)
    return outcome


def _attack_batches(
    model: nn.Module, attack: Attack, data: Split, clean_pred: torch.Tensor,
    threat: ThreatModel, spec: CellSpec, seal: Seal | None, on_batch: Callable[[int], None],
) -> CellOutcome:
    """The batches of :func:`attack_cell`, each checked by the seal (when there is one) before
    the harness predicts on what the attack returned."""
    batch_size, device, targets, eot_samples = (spec.batch_size, spec.device, spec.targets,
                                                spec.eot_samples)
    x_all, y_all = data.x, data.y  # the harness's references, whatever plugins rebind
    access, budget = attack.access, attack.max_queries  # the cell's terms
    clean_correct = clean_pred == y_all
    adv_pred = clean_pred.clone()
    queries = torch.zeros(len(y_all), dtype=torch.long)
    eligible = clean_correct if targets is None else clean_correct & (targets != y_all)
    skipped = None
    if spec.skip:
        skipped = skip_mask(len(y_all), spec.skip)
        adv_pred[skipped] = -1
        eligible = eligible & ~skipped
    attacked = torch.nonzero(eligible).flatten()
    shown, shown_adv = attacked[:SHOWN], []
    needed_norm = torch.full((len(y_all),), float("nan"))
    reported = False
    ledger = fingerprint([adv_pred, queries])
    for start in range(0, len(attacked), batch_size):
        index = attacked[start : start + batch_size]
        x, y = x_all[index].to(device), y_all[index].to(device)
        watch = seal.watch(access, budget, eot_samples, len(index)) if seal else None
        oracle = Oracle(model, access, len(index), budget, eot_samples, guard=watch,
                        surrogate=spec.surrogate)
        ctx = AttackContext(torch.Generator(device=device).manual_seed(spec.seed + start),
                            None if targets is None else targets[index].to(device))
        result, raised = None, None
        try:
            # The base class's perturb: the gate, whatever the class defines.
            result = (spec.runner or Attack.perturb)(attack, oracle, x, y, threat, ctx)
        except (Exception, SystemExit) as exc:  # sys.exit() in an attack ends its cell only
            raised = exc
        reason = None
        if seal is not None and watch is not None:
            reason = seal.verdict(watch, oracle, attack) or tampered(
                x, y, x_all[index].to(device), y_all[index].to(device), adv_pred, queries, ledger)
        if reason is not None:
            return CellOutcome(clean_correct, adv_pred, y_all, queries, reason, skipped=skipped)
        if raised is not None:
            raise raised
        assert result is not None
        if result.x_adv is None:
            return CellOutcome(clean_correct, adv_pred, y_all, queries, result.reason,
                               skipped=skipped)
        adv_pred[index] = graded(model, x, result.x_adv, clean_pred[index], batch_size, device,
                                 eot_samples)
        queries[index] = (oracle.queries if watch is None else watch.queries).cpu()
        ledger = fingerprint([adv_pred, queries])
        shown_adv.append(result.x_adv[: max(0, len(shown) - start)].detach().cpu())
        needed = ctx.record.get(NEEDED_NORM)
        if isinstance(needed, torch.Tensor) and needed.shape == (len(index),):
            needed_norm[index], reported = needed.detach().float().cpu().clamp(min=0), True
        on_batch(len(index))
    return CellOutcome(clean_correct, adv_pred, y_all, queries, shown=shown,
                       shown_adv=torch.cat(shown_adv) if shown_adv else None,
                       needed_norm=needed_norm if reported else None, skipped=skipped)


def either_fooled(first: CellOutcome, second: CellOutcome) -> CellOutcome:
    """Two runs of one attack on one cell (plain and BPDA gradients): per sample, the second's
    prediction where only it fooled the model; the queries of both; invalid if either is."""
    adv_pred = torch.where(first.adv_correct, second.adv_pred, first.adv_pred)
    shown_adv = first.shown_adv
    if shown_adv is not None and second.shown_adv is not None:
        only_second = first.adv_correct[first.shown] & ~second.adv_correct[first.shown]
        shown_adv = torch.where(only_second.view(-1, *[1] * (shown_adv.dim() - 1)),
                                second.shown_adv, shown_adv)
    needed = first.needed_norm
    if needed is not None and second.needed_norm is not None:
        needed = torch.fmin(needed, second.needed_norm)
    return CellOutcome(first.clean_correct, adv_pred, first.labels,
                       first.queries + second.queries,
                       first.invalid_reason or second.invalid_reason, first.shown, shown_adv,
                       needed, first.skipped)


def tampered(x: torch.Tensor, y: torch.Tensor, x_expected: torch.Tensor,
             y_expected: torch.Tensor, adv_pred: torch.Tensor, queries: torch.Tensor,
             ledger: bytes) -> str | None:
    """The batch the gate measured against, and the results of earlier batches, are the
    harness's own tensors too: a plugin can reach them through ``gc``."""
    if not (identical(x, x_expected) and identical(y, y_expected)):
        return "the attack modified the batch the gate measured its output against"
    if fingerprint([adv_pred, queries]) != ledger:
        return "the attack modified the results of earlier batches"
    return None
