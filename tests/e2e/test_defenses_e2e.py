"""Defenses of issue 5: adversarial training (FGSM, PGD) and Gaussian randomized smoothing."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import advbench.algorithms.adversarial_training as at
from advbench import ThreatModel
from advbench.algorithms.adversarial_training import EpochRecord, TrainingHistory
from advbench.algorithms.smoothing import (
    SmoothedClassifier,
)
from advbench.defense import TrainContext, TrainSettings
from advbench.reporting.figures import plot_training_curves
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench.running.model_cache import ModelCache, content_key
from advbench_plugins.adv_train_fgsm import AdvTrainFGSM
from advbench_plugins.adv_train_pgd import AdvTrainPGD
from advbench_plugins.gaussian_smoothing import GaussianSmoothing
from advbench_plugins.none import NoDefense
from advbench_plugins.pgd_linf import PGDLinf
from advbench_plugins.seed_cnn import SeedCNN

PNG = b"\x89PNG\r\n\x1a\n"


CPU = torch.device("cpu")
LINF = ThreatModel("linf", 0.1)


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SeedCNN().build((1, 28, 28), 10)


def fit(defense, data, epochs: int = 2, seed: int = 0) -> nn.Module:
    model = defense.fit(cnn(seed), data, TrainContext(TrainSettings(epochs=epochs), CPU, seed))
    return model.eval()


def pgd_robust_accuracy(model: nn.Module, data) -> float:
    clean = predict(model, data.x, 500, CPU)
    outcome = attack_cell(model, PGDLinf(steps=10), data, clean, LINF, CellSpec(batch_size=500,
                          device=CPU, seed=0))
    return float(outcome.robust.float().mean())


@pytest.fixture(scope="module")
def small(fashion):
    return fashion["train"].subset(torch.arange(3000)), fashion["test"].subset(torch.arange(500))


@pytest.fixture(scope="module")
def none_robust(small) -> float:
    return pgd_robust_accuracy(fit(NoDefense(), small[0]), small[1])


# --- adversarial training -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("defense", [
    AdvTrainFGSM(holdout=128, monitor=128, guard_steps=5),
    AdvTrainPGD(steps=2, holdout=128, monitor=128, guard_steps=5),
], ids=["fgsm", "pgd"])
def test_adversarial_training_beats_none_under_pgd(small, none_robust, defense):
    train, test = small
    robust = pgd_robust_accuracy(fit(defense, train), test)
    assert robust > none_robust + 0.1, (robust, none_robust)
    history = defense.history
    assert [r.epoch for r in history.records] == [1.0, 2.0]
    assert all(0 <= r.val_robust <= r.val_clean <= 1 for r in history.records)
    assert all(0 <= r.train_robust <= r.train_clean <= 1 for r in history.records)


def test_guard_restores_last_good_weights_on_a_collapse(fashion, monkeypatch):
    robust_per_check = iter([0.30, 0.40, 0.05, 0.40])
    seen: list[dict[str, torch.Tensor]] = []
    real_measure = at.measure

    def fake_measure(model, data, threat, steps, device, seed):
        clean, _ = real_measure(model, data, threat, 0, device, seed)
        if len(data) == 64:  # the validation set (holdout), measured second at each check
            seen.append({k: v.clone() for k, v in model.state_dict().items()})
            return clean, next(robust_per_check)
        return clean, 0.0

    monkeypatch.setattr(at, "measure", fake_measure)
    defense = AdvTrainFGSM(holdout=64, monitor=32, checks_per_epoch=2)
    model = fit(defense, fashion["train"].subset(torch.arange(576)))  # 4 batches an epoch
    history = defense.history
    assert len(history.records) == 3 and len(seen) == 3  # stopped at the collapse
    assert history.stopped_early
    assert history.collapse == {"epoch": 1.5, "robust": 0.05, "best": 0.40,
                                "restored_epoch": 1.0}
    restored = model.state_dict()
    assert all(torch.equal(restored[k], seen[1][k]) for k in restored)
    assert not all(torch.equal(restored[k], seen[2][k]) for k in restored)


def test_clean_fraction_keeps_that_share_of_the_batch_clean(batch, monkeypatch):
    x, y = batch[0][:10], batch[1][:10]
    model = cnn()
    everything_clean = AdvTrainFGSM(clean_fraction=1.0).training_loss(model, x, y, 0.0)
    assert torch.equal(everything_clean, nn.functional.cross_entropy(model(x), y))
    attacked: list[torch.Tensor] = []

    def record(self, model, x_part, y_part, generator):
        attacked.append(x_part)
        return torch.zeros_like(x_part)

    monkeypatch.setattr(AdvTrainFGSM, "adversarial_examples", record)
    mixed = AdvTrainFGSM(clean_fraction=0.3).training_loss(model, x, y, 0.0)
    assert len(attacked) == 1 and torch.equal(attacked[0], x[3:])
    inputs = torch.cat([x[:3], torch.zeros_like(x[3:])])
    assert torch.equal(mixed, nn.functional.cross_entropy(model(inputs), y))


def test_training_curves_are_written(tmp_path):
    history = TrainingHistory("adv-train-fgsm", {"eps": 0.1}, "FGSM-RS")
    history.records = [EpochRecord(1.0, 10, 1.2, 1e-3, 3.0, 0.6, 0.3, 0.55, 0.28),
                       EpochRecord(2.0, 20, 0.9, 1e-4, 6.0, 0.8, 0.02, 0.75, 0.01)]
    history.collapse = {"epoch": 2.0, "robust": 0.01, "best": 0.28, "restored_epoch": 1.0}
    # The harness keeps a history as JSON beside the cached model and reads it back.
    assert TrainingHistory.from_dict(json.loads(json.dumps(history.to_dict()))) == history
    png = plot_training_curves(history, tmp_path / "curves.png")
    assert png.read_bytes().startswith(PNG)
    # The run draws the dict read back from the cache: the same picture.
    again = plot_training_curves(history.to_dict(), tmp_path / "again.png")
    assert again.read_bytes() == png.read_bytes()


# --- randomized smoothing -------------------------------------------------------------------


def test_soft_forward_is_differentiable_and_random(fashion):
    smoothed = SmoothedClassifier(cnn(), 0.25, m=4, batch=16).eval()
    x = fashion["test"].x[:6].clone().requires_grad_(True)
    log_probs = smoothed(x)
    assert log_probs.shape == (6, 10)
    assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(6), atol=1e-5)
    (grad,) = torch.autograd.grad(log_probs[:, 0].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        again = smoothed(x)
        smoothed.reseed(0)
        replay = smoothed(x)
    assert not torch.equal(again, log_probs.detach())
    assert torch.equal(replay, log_probs.detach())


def test_noise_trained_model_is_reproducible_and_cached_bit_identically(fashion, tmp_path):
    train = fashion["train"].subset(torch.arange(1000))
    defense = GaussianSmoothing(sigma=0.25)
    model = fit(defense, train, epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(
        model.state_dict().values(), fit(defense, train, epochs=1).state_dict().values(),
        strict=True))
    parts = {"defense": defense.name, "defense_config": defense.config(), "seed": 0}
    cache = ModelCache(tmp_path)
    cache.save(content_key(parts), parts, model)
    reloaded = cnn(seed=1)
    assert cache.load(content_key(parts), parts, reloaded)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name])
    changed = {**parts, "defense_config": GaussianSmoothing(sigma=0.5).config()}
    assert content_key(changed) != content_key(parts)
    assert not cache.load(content_key(changed), changed, cnn(seed=1))  # retrain
    x = fashion["test"].x[:10]
    first, second = (SmoothedClassifier(m, 0.25, n=50, seed=3) for m in (model, reloaded))
    assert torch.equal(first.predict(x), second.predict(x))
