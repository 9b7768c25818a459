"""The certifier (IBP and CROWN bounds) and the certified-training defense.

Soundness is checked against points inside the ball found three ways (uniform samples, corners,
PGD); tightness against exact minima found by enumerating ReLU activation patterns (one LP each).
"""

from __future__ import annotations

import pytest
import torch
from support.bounds import (
    NETS,
    TOL,
    mlp,
    net_and_batch,
    sampled_margins,
    true_margins,
)
from torch import nn

from advbench import Split
from advbench.algorithms.bounds import (
    METHODS,
    applicable_method,
    certify,
    input_box,
    margin_lower_bounds,
    unsupported_reason,
)
from advbench.algorithms.training import train_classifier
from advbench.defense import TrainContext, TrainSettings
from advbench_plugins.certified_training import CertifiedTraining, linear_ramp
from advbench_plugins.ibp_cnn import IBPCNN
from advbench_plugins.seed_cnn import SeedCNN


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These ops are small: on a loaded 2-core machine one thread is many times faster than two
    (two spin on each other). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pgd_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                steps: int = 20) -> torch.Tensor:
    """Smallest ``logit_y − logit_j`` PGD finds in the ball, one run per class j: (batch, K)."""
    classes = model(x[:1]).shape[1]
    lower, upper = input_box(x, eps)
    rep = lambda t: t.repeat_interleave(classes, 0)  # noqa: E731
    lower, upper, labels = rep(lower), rep(upper), rep(y)
    others = torch.arange(classes).repeat(x.shape[0])
    generator = torch.Generator().manual_seed(1)
    point = lower + (upper - lower) * torch.rand(lower.shape, generator=generator,
                                                 dtype=x.dtype)
    best = torch.full((len(point),), float("inf"), dtype=x.dtype)
    for _ in range(steps):
        point.requires_grad_(True)
        margin = true_margins(model, point, labels).gather(1, others[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(margin.sum(), point)
        best = torch.minimum(best, margin.detach())
        point = torch.minimum(torch.maximum(point.detach() - eps / 8 * grad.sign(), lower),
                              upper)
    return best.view(x.shape[0], classes)


@pytest.mark.parametrize("name", list(NETS))
def test_bounds_contain_sampled_and_pgd_points(name: str) -> None:
    model, x, y, eps = net_and_batch(name)
    sampled = sampled_margins(model, x, y, eps)
    attacked = pgd_margins(model, x, y, eps)
    for method in METHODS:
        bound = margin_lower_bounds(model, x, y, eps, method)
        assert torch.equal(bound.gather(1, y[:, None]), torch.zeros_like(bound[:, :1]))
        assert (bound <= sampled + TOL).all(), method
        assert (bound <= attacked + TOL).all(), method


# ----------------------------------------------------------------------- exact, by enumeration


# ----------------------------------------------------------------------- API


def test_applicable_method_and_errors() -> None:
    assert applicable_method(mlp()) == "crown"
    assert applicable_method(mlp(), "ibp") == "ibp"
    seed = SeedCNN().build((1, 28, 28), 10)
    assert applicable_method(seed) == "ibp+crown"
    assert applicable_method(seed, "crown-ibp") == "ibp+crown-ibp"
    assert applicable_method(IBPCNN().build((1, 28, 28), 10)) == "crown"
    assert unsupported_reason(seed) is None
    bad = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.GELU()))
    assert "GELU" in unsupported_reason(bad)
    with pytest.raises(ValueError, match=r"model\[1\]\[0\] \(GELU\)"):
        margin_lower_bounds(bad, torch.rand(1, 2), torch.tensor([0]), 0.1)
    with pytest.raises(ValueError, match="nn.Sequential"):
        certify(nn.Linear(2, 2), torch.rand(1, 2), torch.tensor([0]), 0.1)
    with pytest.raises(ValueError, match="BatchNorm2d.*eval"):
        applicable_method(nn.Sequential(nn.BatchNorm2d(1).train()))
    with pytest.raises(ValueError, match="unknown bound method"):
        applicable_method(mlp(), "lp")


def test_training_loss_is_natural_before_the_ramp_and_above_it_after() -> None:
    assert linear_ramp(0.05, 0.1, 0.6) == 0.0
    assert linear_ramp(0.35, 0.1, 0.6) == pytest.approx(0.5)
    assert linear_ramp(0.9, 0.1, 0.6) == 1.0
    model, x, y, _ = net_and_batch("cnn")
    model = model.float()
    x = x.float()
    natural = nn.functional.cross_entropy(model(x), y)
    for bound in ("ibp", "crown-ibp"):
        defense = CertifiedTraining(eps=0.05, bound=bound)
        assert defense.training_loss(model, x, y, 0.0).item() == pytest.approx(natural.item())
        assert defense.training_loss(model, x, y, 0.5) > natural  # worst case ≥ clean loss
    with pytest.raises(ValueError):
        CertifiedTraining(bound="lp")
    with_norm = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.BatchNorm1d(4))
    ctx = TrainContext(TrainSettings(epochs=1), torch.device("cpu"), 0)
    with pytest.raises(ValueError, match="certified-training cannot train.*BatchNorm1d"):
        CertifiedTraining().fit(with_norm, Split(torch.rand(4, 1, 2, 2), torch.zeros(4).long()),
                                ctx)


# ----------------------------------------------------------------------- trained models


ARCHITECTURES = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(),
                                 nn.Linear(100, 10)),
    "ibp-cnn": lambda: IBPCNN().build((1, 28, 28), 10),
}


def train(fashion, architecture: str, loss) -> nn.Module:
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture]()
    train_split = fashion["train"].subset(torch.arange(3000))
    ctx = TrainContext(TrainSettings(epochs=2, batch_size=100, lr=3e-3), torch.device("cpu"), 0)
    train_classifier(model, train_split, ctx, loss)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def trained_pair(request, fashion) -> dict[str, nn.Module]:
    """One architecture trained identically with the certified-training and the natural loss
    (3000 images, 2 epochs)."""
    defense = CertifiedTraining(eps=0.1, ramp_start=0.0, ramp_end=0.5)
    natural = lambda m, x, y, p: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    return {name: train(fashion, request.param, loss)
            for name, loss in (("certified", defense.training_loss), ("none", natural))}


@pytest.mark.slow
def test_certified_training_certifies_more_than_natural_training(fashion, trained_pair) -> None:
    x, y = fashion["test"].x[:300], fashion["test"].y[:300]
    eps = 0.05
    model = trained_pair["certified"]
    assert (model(x).argmax(1) == y).float().mean() > 0.5  # not a collapsed constant classifier
    rates = {name: certify(model, x, y, eps).float().mean().item()
             for name, model in trained_pair.items()}
    assert rates["certified"] > rates["none"] + 0.1


@pytest.fixture(scope="module")
def pgd_broken(fashion, trained_pair) -> torch.Tensor:
    x, y = fashion["test"].x[:150], fashion["test"].y[:150]
    worst = pgd_margins(trained_pair["certified"], x, y, 0.08, steps=30)
    return worst.scatter(1, y[:, None], float("inf")).min(1).values < 0


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_certified_samples_survive_pgd(fashion, trained_pair, pgd_broken, method: str) -> None:
    x, y = fashion["test"].x[:150], fashion["test"].y[:150]
    certified = certify(trained_pair["certified"], x, y, 0.08, method)
    assert certified.any() and pgd_broken.any()  # neither side is vacuous
    assert not (certified & pgd_broken).any()
