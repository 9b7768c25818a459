"""The TRADES example trains at the run's ε, from the run's generator, and keeps curves."""

from __future__ import annotations

import torch
from advbench import Split, ThreatModel, TrainContext, TrainSettings, kl_divergence
from advbench.conformance import check_defense

from bench_example_plugin.trades import Trades

FAST = {"steps": 2, "holdout": 8, "monitor": 8, "guard_steps": 2}


class Recorded(Trades):
    """Trades keeping every batch of adversarial examples it trained on."""

    def adversarial_examples(self, model, x, y, generator):
        x_adv = super().adversarial_examples(model, x, y, generator)
        self.seen.append((x, x_adv, generator))
        return x_adv


def synthetic() -> Split:
    """72 random 1×6×6 images, 3 classes told apart by their mean brightness."""
    x = torch.rand(72, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    return Split(x, (x.mean(dim=(1, 2, 3)) * 3 - 0.5).clamp(0, 2).long())


def context(eps: float = 0.05) -> TrainContext:
    settings = TrainSettings(epochs=2, batch_size=16)
    return TrainContext(settings, torch.device("cpu"), 0,
                        threats=(ThreatModel("linf", 0.02), ThreatModel("linf", eps)))


def fit(defense: Trades, ctx: TrainContext) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    return defense.fit(model, synthetic(), ctx)


def test_trades_trains_inside_the_runs_eps_with_its_generator_and_keeps_curves():
    defense, ctx = Recorded(**FAST), context(0.05)
    defense.seen = []
    model = fit(defense, ctx)
    assert len(defense.seen) == 2 * 4  # 64 samples trained on (8 held out), batches of 16
    for x, x_adv, generator in defense.seen:
        assert generator is ctx.generator
        size = (x_adv - x).abs().amax()
        assert 0.049 < float(size) <= 0.05 + 1e-6  # the run's largest L∞ ε, not 0.1
        assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
    history = defense.history
    assert [r.epoch for r in history.records] == [1.0, 2.0]
    assert history.config["eps"] == 0.05 and history.defense == "trades"
    assert not model.training and defense.context is None


def test_an_eps_the_user_set_wins_and_keys_the_model():
    ctx = context(0.05)
    assert Trades().resolved_training_config(ctx)["eps"] == 0.05
    assert Trades(eps=0.02).resolved_training_config(ctx)["eps"] == 0.02
    defense = Recorded(eps=0.02, **FAST)
    defense.seen = []
    fit(defense, ctx)
    assert max(float((a - x).abs().amax()) for x, a, _ in defense.seen) <= 0.02 + 1e-6


def test_the_loss_is_clean_cross_entropy_plus_beta_kl():
    defense, ctx = Trades(beta=2.0, steps=1), context(0.1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    x, y = synthetic().x[:8], synthetic().y[:8]
    with defense.using(ctx):
        ctx.generator.manual_seed(1)
        loss = defense.training_loss(model, x, y, 0.0)
        x_adv = defense.adversarial_examples(model, x, y, ctx.generator.manual_seed(1))
    clean = torch.nn.functional.cross_entropy(model(x), y)
    torch.testing.assert_close(loss, clean + 2.0 * kl_divergence(model(x_adv), model(x)).mean())
    assert float(loss.detach()) > float(clean.detach()) + 1e-4  # the KL term counts


def test_trades_passes_the_kit():
    check_defense(Trades, params=FAST)
