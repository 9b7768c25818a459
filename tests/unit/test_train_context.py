"""What a training-time defense gets from the run (issue #17): a seeded generator, the threat
models, the dataset; the loop's order; ε from the run keying the cached model; the KL loss and
the normalizers a TRADES plugin needs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import advbench
from advbench.algorithms.losses import kl_divergence, kl_loss
from advbench.algorithms.training import train_classifier
from advbench.defense import DatasetInfo, Defense, TrainContext, TrainSettings
from advbench.running.model_cache import content_key
from advbench.running.plan import RunConfig, build_plan
from advbench.running.worker import Worker
from advbench.threat import ThreatModel, l2_normalize, normalize
from advbench_plugins.adv_train_fgsm import AdvTrainFGSM
from advbench_plugins.adv_train_pgd import AdvTrainPGD
from advbench_plugins.certified_training import CertifiedTraining

CPU = torch.device("cpu")
SETTINGS = TrainSettings(epochs=1, batch_size=8)
CIFAR = DatasetInfo("cifar10", (3, 32, 32), 10, {"linf": 8 / 255, "l2": 0.5})


def tiny_split(n: int = 24) -> advbench.Split:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return advbench.Split(x, torch.arange(n) % 3)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


# --- the context ------------------------------------------------------------------------------

def test_the_old_constructor_works_and_the_generator_is_seeded_from_the_run():
    ctx = TrainContext(SETTINGS, CPU, 5)
    assert ctx.threats == () and ctx.dataset is None and not ctx.pretrained
    expected = torch.rand(4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.rand(4, generator=ctx.generator), expected)
    other = torch.rand(4, generator=TrainContext(SETTINGS, CPU, 6).generator)
    assert not torch.equal(other, expected)


def test_eps_for_prefers_the_users_then_the_runs_largest_then_the_datasets():
    threats = (ThreatModel("linf", 0.05), ThreatModel("linf", 0.2), ThreatModel("l2", 1.0))
    ctx = TrainContext(SETTINGS, CPU, 0, threats=threats, dataset=CIFAR)
    assert ctx.eps_for("linf") == 0.2 and ctx.eps_for("l2") == 1.0
    assert ctx.eps_for("linf", 0.03) == 0.03
    only_l2 = TrainContext(SETTINGS, CPU, 0, threats=threats[2:], dataset=CIFAR)
    assert only_l2.eps_for("linf") == 8 / 255  # no L∞ attack: the dataset's L∞ budget
    assert TrainContext(SETTINGS, CPU, 0).eps_for("linf") == 0.1  # no run at all
    with pytest.raises(ValueError, match="l0"):
        TrainContext(SETTINGS, CPU, 0).eps_for("l0")


class Peeking(Defense):
    """An old-style defense: ``training_loss(model, x, y, progress)``, reading the context."""

    name = "peeking"

    def __init__(self) -> None:
        self.seen: list[TrainContext | None] = []

    def training_loss(self, model, x, y, progress):
        self.seen.append(self.context)
        return nn.functional.cross_entropy(model(x), y)


@dataclass(frozen=True, kw_only=True)
class Frozen(Defense):
    """A frozen third-party defense: the context still reaches its loss."""

    name = "frozen"
    scale: float = 1.0

    def training_loss(self, model, x, y, progress):
        assert self.context is not None and self.context.seed == 3
        return self.scale * nn.functional.cross_entropy(model(x), y)


def test_the_default_fit_shows_the_context_to_the_loss_and_only_during_fit():
    defense, ctx = Peeking(), TrainContext(SETTINGS, CPU, 0)
    model = defense.fit(tiny_model(), tiny_split(), ctx)
    assert defense.seen == [ctx] * 3 and defense.context is None
    assert not model.training and "context" not in defense.config()
    frozen = Frozen()
    frozen.fit(tiny_model(), tiny_split(), TrainContext(SETTINGS, CPU, 3))
    assert frozen.context is None and frozen.config() == {"scale": 1.0}


# --- the loop's order -------------------------------------------------------------------------

def test_each_batch_starts_in_train_mode_and_a_loss_cannot_leak_gradients():
    modes: list[bool] = []

    def clean(model, x, y, progress):
        modes.append(model.training)
        return nn.functional.cross_entropy(model(x), y)

    def messy(model, x, y, progress):
        loss = clean(model, x, y, progress)
        model.eval()  # e.g. to attack; left so
        for parameter in model.parameters():
            parameter.grad = torch.full_like(parameter, 1e3)  # junk gradients, e.g. from attacking
        return loss

    models = []
    for loss_fn in (clean, messy):
        model = tiny_model()
        train_classifier(model, tiny_split(), TrainContext(SETTINGS, CPU, 0), loss_fn)
        models.append(model)
    assert modes == [True] * 6
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


# --- ε from the run ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [AdvTrainFGSM, AdvTrainPGD, CertifiedTraining])
def test_training_time_defenses_take_eps_from_the_run_unless_set(cls):
    run = TrainContext(SETTINGS, CPU, 0, threats=(ThreatModel("linf", 8 / 255),), dataset=CIFAR)
    assert cls().eps is None
    assert cls().resolved_training_config(run)["eps"] == 8 / 255
    assert cls(eps=0.05).resolved_training_config(run)["eps"] == 0.05
    assert cls().config()["eps"] is None  # rows record the field as the user left it


def test_adversarial_training_attacks_inside_the_runs_eps(monkeypatch):
    sizes: list[float] = []
    make = AdvTrainPGD.adversarial_examples

    def record(self, model, x, y, generator):
        assert generator is self.context.generator
        x_adv = make(self, model, x, y, generator)
        sizes.append(float((x_adv - x).abs().amax()))
        return x_adv

    monkeypatch.setattr(AdvTrainPGD, "adversarial_examples", record)
    defense = AdvTrainPGD(steps=2, holdout=0, monitor=4, guard_steps=1)
    ctx = TrainContext(SETTINGS, CPU, 0, threats=(ThreatModel("linf", 0.03),))
    defense.fit(tiny_model(), tiny_split(), ctx)
    assert len(sizes) == 3 and all(0.029 < s <= 0.03 + 1e-6 for s in sizes)
    assert defense.history.config["eps"] == 0.03 and "ε=0.03" in defense.history.attack


def run_key(registry, defense: str, eps: float, options=None) -> str:
    config = RunConfig(attacks="fgsm", defenses=defense, preset="smoke", n_train=60, n_eval=20,
                       eps={"linf": [eps]}, options=options, device="cpu")
    plan = build_plan(config, registry)
    return content_key(Worker(plan, None).models.model_parts(plan.build(plan.defenses[0])))


def test_runs_at_different_eps_never_share_a_cached_adversarially_trained_model(registry):
    assert run_key(registry, "adv-train-pgd", 0.05) != run_key(registry, "adv-train-pgd", 0.1)
    assert run_key(registry, "certified-training", 0.05) != run_key(registry,
                                                                   "certified-training", 0.1)
    pinned = {"adv-train-pgd": {"eps": 0.05}}  # --set adv-train-pgd.eps=0.05 wins over --eps
    assert run_key(registry, "adv-train-pgd", 0.1, pinned) == run_key(registry,
                                                                       "adv-train-pgd", 0.2, pinned)
    assert run_key(registry, "adv-train-pgd", 0.1, {"adv-train-pgd": {"eps": 0.1}}) == run_key(
        registry, "adv-train-pgd", 0.1)  # the same ε trains the same model, however given
    assert run_key(registry, "none", 0.05) == run_key(registry, "none", 0.1)  # not ε-bound


def test_the_worker_hands_the_run_to_training(registry):
    config = RunConfig(attacks="fgsm,pgd-l2", defenses="none", preset="smoke", n_train=60,
                       n_eval=20, eps={"linf": [0.05, 0.1], "l2": [1.5]}, device="cpu")
    plan = build_plan(config, registry)
    ctx = Worker(plan, None).models.train_context(plan.build(plan.defenses[0]))
    assert sorted((t.norm, t.eps) for t in ctx.threats) == [("l2", 1.5), ("linf", 0.05),
                                                            ("linf", 0.1)]
    assert ctx.dataset == DatasetInfo("fashion-mnist", (1, 28, 28), 10,
                                      {"linf": 0.1, "l2": 1.5, "l0": 1})
    assert ctx.seed == 0 and ctx.eps_for("linf") == 0.1


# --- the KL loss and the normalizers ----------------------------------------------------------

def test_kl_divergence_exact_values_and_export():
    reference = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]])  # softmax: (1/4, 3/4)
    logits = torch.tensor([[5.0, 5.0], [1.0, 2.0]])  # (1/2, 1/2); the second row agrees
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    per_sample = kl_divergence(logits, reference)
    assert per_sample.tolist() == pytest.approx([expected, 0.0], abs=1e-7)
    assert float(kl_loss(logits, reference)) == pytest.approx(expected, abs=1e-7)
    assert float(kl_divergence(reference, logits)[0]) == pytest.approx(
        0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0), abs=1e-7)  # not symmetric
    assert advbench.kl_loss is kl_loss and advbench.kl_divergence is kl_divergence


def test_normalizers_exact_values():
    grad = torch.tensor([[3.0, -4.0], [0.0, 0.0], [1.0, 1.0]])
    expected = {"l1": [[3 / 7, -4 / 7], [0.0, 0.0], [0.5, 0.5]],
                "l2": [[0.6, -0.8], [0.0, 0.0], [2 ** -0.5, 2 ** -0.5]],
                "linf": [[0.75, -1.0], [0.0, 0.0], [1.0, 1.0]]}  # zero stays zero
    for norm, values in expected.items():
        torch.testing.assert_close(normalize(grad, norm), torch.tensor(values))
    torch.testing.assert_close(l2_normalize(grad), torch.tensor(expected["l2"]))
    images = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for norm, order in (("l1", 1), ("l2", 2), ("linf", math.inf)):
        sizes = torch.linalg.vector_norm(normalize(images, norm).flatten(1), ord=order, dim=1)
        assert sizes.tolist() == pytest.approx([1.0] * 3)
