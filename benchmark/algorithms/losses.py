"""Attack losses on logits: the margin, the Difference of Logits Ratio (Croce & Hein 2020) and
the KL divergence from reference logits (TRADES, Zhang et al. 2019).

Sign convention: a *loss* is what an attack **ascends** (higher = more adversarial), like the
cross-entropy of the true class. Each comes twice: a per-sample function (``margin``, ``dlr``,
``targeted_dlr``) returning one value per row, and a *summed* form (``margin_loss``,
``dlr_loss``, ``targeted_dlr_loss(y)``) with the ``loss(logits, labels)`` signature
:meth:`advbench.Oracle.gradient` takes: a batch sum, so the gradient of each row is that
sample's own loss gradient::

    grad, logits = oracle.gradient(x, y, index, loss=dlr_loss)

``margin(z, y) = z_y − max_{i≠y} z_i``: positive exactly when ``y`` wins (a *margin*, so not a
loss; ``margin_loss`` is its negated sum).

DLR, with the logits sorted descending ``z_π1 ≥ z_π2 ≥ …``:
``dlr(z, y) = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)`` (positive exactly when the
sample is misclassified) and
``targeted_dlr(z, y, t) = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)`` (positive when the
target's logit exceeds the true one). Both are invariant to shifting the logits and to scaling
them by a positive factor (up to the 1e-12 guard), so a defense that saturates the softmax
(logits × 10⁴: cross-entropy gradients are exactly zero) cannot hide the gradient direction.
With fewer classes than the formula names (π3 with 2 classes, π4 with 3), the lowest logit
stands in for the missing ones, which keeps both invariances.

``kl_divergence(z, r) = KL(softmax(r) ‖ softmax(z))``: how far the logits ``z`` moved from the
reference logits ``r`` (the clean ones). ``kl_loss`` is its sum, with the clean logits where the
labels go (``model_gradient(model, kl_loss)``: TRADES's inner maximum); TRADES trains on the
batch mean ``kl_divergence(model(x_adv), model(x)).mean()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advbench.oracle import LossFn

DLR_GUARD = 1e-12


def _others_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per row, the largest logit of a class other than ``y``."""
    masked = logits.scatter(1, y.view(-1, 1), -torch.inf)
    return masked.amax(dim=1)


def _true(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y.view(-1, 1)).squeeze(1)


def _ranked(logits: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank``-th largest logit per row (1-based), the smallest one if there are fewer."""
    ordered = logits.sort(dim=1, descending=True).values
    return ordered[:, min(rank, logits.shape[1]) - 1]


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample ``z_y − max_{i≠y} z_i``: > 0 iff class ``y`` is predicted (ties aside)."""
    return _true(logits, y) - _others_max(logits, y)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed ``max_{i≠y} z_i − z_y`` (minus the margin): ascend it to misclassify."""
    return -margin(logits, y).sum()


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample untargeted DLR ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)``."""
    scale = _ranked(logits, 1) - _ranked(logits, 3)
    return -margin(logits, y) / (scale + DLR_GUARD)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed untargeted DLR, for ``Oracle.gradient(..., loss=dlr_loss)``."""
    return dlr(logits, y).sum()


def targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)``."""
    scale = _ranked(logits, 1) - (_ranked(logits, 3) + _ranked(logits, 4)) / 2
    return -(_true(logits, y) - _true(logits, target)) / (scale + DLR_GUARD)


def targeted_dlr_loss(y: torch.Tensor) -> LossFn:
    """The summed targeted DLR towards the labels the oracle is given, for true labels ``y``::

        oracle.gradient(x, targets, index, loss=targeted_dlr_loss(y))

    (``y`` holds the true labels of the rows queried, in the same order.)"""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return targeted_dlr(logits, y, target).sum()

    return loss


def negative_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed ``−CE(z, t)``: ascending it moves each sample towards its target ``t``."""
    return -torch.nn.functional.cross_entropy(logits, target, reduction="sum")


def kl_divergence(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(softmax(reference) ‖ softmax(logits))`` (0 when they agree)."""
    return F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(reference, dim=1),
                    reduction="none", log_target=True).sum(dim=1)


def kl_loss(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Summed :func:`kl_divergence`: ascend it to move the logits away from ``reference``."""
    return kl_divergence(logits, reference).sum()
