"""What a training-time defense gets from the run (issue #17): a seeded generator, the threat
models, the dataset; the loop's order; ε from the run keying the cached model; the KL loss and
the normalizers a TRADES plugin needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import advbench
from advbench.algorithms.training import train_classifier
from advbench.defense import Defense, TrainContext, TrainSettings
from advbench.running.model_cache import content_key
from advbench.running.plan import RunConfig, build_plan
from advbench.running.worker import Worker
from advbench.threat import ThreatModel
from advbench_plugins.adv_train_pgd import AdvTrainPGD

CPU = torch.device("cpu")


SETTINGS = TrainSettings(epochs=1, batch_size=8)


def tiny_split(n: int = 24) -> advbench.Split:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return advbench.Split(x, torch.arange(n) % 3)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


# --- the context ------------------------------------------------------------------------------


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


# --- the KL loss and the normalizers ----------------------------------------------------------
