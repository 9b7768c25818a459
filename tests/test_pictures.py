"""Cell pictures (seed figures 5, 6, 8, 13, 14): files are PNGs, the adversarial images drawn are
the gate-checked ones, and the predictions drawn are the model's."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.image
import pytest
import torch
from torch import nn

from advbench import Attack, ThreatModel
from advbench.gate import check_adversarial
from advbench.reporting.pictures import (
    cell_pictures,
    draw_cell_pictures,
    eps_values,
    label_name,
    signed_perturbation,
)
from advbench.threat import perturbation_size
from advbench_plugins.fashion_mnist import FashionMNIST
from advbench_plugins.fgsm import FGSM
from advbench_plugins.one_pixel import OnePixel
from advbench_plugins.pgd_linf import PGDLinf

CLASSES = FashionMNIST.classes
LINF = ThreatModel("linf", 0.1)


@pytest.fixture
def correct(trained_cnn, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight test images the trained CNN classifies correctly."""
    x, y = batch
    keep = trained_cnn(x[:64]).argmax(dim=1) == y[:64]
    return x[:64][keep][:8], y[:64][keep][:8]


def assert_png(path, height_at_least: int = 100) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= height_at_least and image.shape[1] >= height_at_least


def test_fgsm_pictures_show_gate_checked_examples_and_model_predictions(
        trained_cnn, correct, tmp_path):
    x, y = correct
    drawn = draw_cell_pictures(trained_cnn, FGSM(), x, y, LINF, CLASSES, tmp_path / "fgsm_none",
                               generator_seed=0)
    assert [p.name for p in drawn.paths] == ["fgsm_none_examples.png", "fgsm_none_eps.png"]
    for path in drawn.paths:
        assert_png(path)
    # FGSM is deterministic: what is drawn is exactly the gate's output for the same call.
    grad_sign = torch.func.grad(
        lambda z: nn.functional.cross_entropy(trained_cnn(z), y, reduction="sum"))(x).sign()
    expected = check_adversarial(x, x + 0.1 * grad_sign, LINF).x_adv
    torch.testing.assert_close(drawn.x_adv, expected)
    assert float((drawn.x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert torch.equal(drawn.pred_clean, trained_cnn(x).argmax(dim=1))
    assert torch.equal(drawn.pred_clean, y)
    assert torch.equal(drawn.pred_adv, trained_cnn(drawn.x_adv).argmax(dim=1))
    series = drawn.series
    assert series.eps == pytest.approx((0.0, 0.02, 0.05, 0.1, 0.2, 0.3))
    assert torch.equal(series.x_adv[0], x[0])  # ε = 0: the clean image
    assert series.reasons == (None,) * 6
    sizes = perturbation_size(series.x_adv - x[:1], "linf")
    assert bool((sizes <= torch.tensor(series.eps) + 1e-6).all())
    assert torch.equal(series.pred, trained_cnn(series.x_adv).argmax(dim=1))
    # the ε = 0.1 panel is the examples grid's first image
    torch.testing.assert_close(series.x_adv[3], drawn.x_adv[0])


def test_pgd_pictures_are_seeded_and_inside_the_ball(trained_cnn, correct, tmp_path):
    x, y = correct
    attack = PGDLinf(steps=5)
    first = draw_cell_pictures(trained_cnn, attack, x, y, LINF, CLASSES, tmp_path / "a",
                               generator_seed=3, eps_grid=False)
    again = draw_cell_pictures(trained_cnn, attack, x, y, LINF, CLASSES, tmp_path / "b",
                               generator_seed=3, eps_grid=False)
    assert [p.name for p in first.paths] == ["a_examples.png"]
    assert first.series is None
    assert torch.equal(first.x_adv, again.x_adv)
    assert float((first.x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(first.x_adv.min()) >= 0 and float(first.x_adv.max()) <= 1
    assert torch.equal(first.pred_adv, trained_cnn(first.x_adv).argmax(dim=1))
    assert bool((first.pred_adv != y).any())  # PGD at ε = 0.1 fools some of them


def test_one_pixel_pictures_change_at_most_k_pixels(trained_cnn, correct, tmp_path):
    x, y = correct
    threat = ThreatModel("l0", 1)
    drawn = draw_cell_pictures(trained_cnn, OnePixel(population=8, iterations=2), x[:3], y[:3],
                               threat, CLASSES, tmp_path / "op", generator_seed=0)
    for path in drawn.paths:
        assert_png(path)
    assert bool((perturbation_size(drawn.x_adv - x[:3], "l0") <= 1).all())
    assert drawn.series.eps == (0.0, 1.0, 2.0, 3.0, 5.0)
    sizes = perturbation_size(drawn.series.x_adv - x[:1], "l0")
    assert bool((sizes <= torch.tensor(drawn.series.eps)).all())
    assert torch.equal(drawn.pred_adv, trained_cnn(drawn.x_adv).argmax(dim=1))


def test_three_channel_images(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 15 * 15, 10)).eval()
    x = torch.rand(4, 3, 32, 32)
    y = model(x).argmax(dim=1)
    threat = ThreatModel("linf", 8 / 255)
    drawn = draw_cell_pictures(model, FGSM(), x, y, threat, ("c",) * 10, tmp_path / "rgb",
                               generator_seed=0)
    for path in drawn.paths:
        assert_png(path)
    assert drawn.x_adv.shape == x.shape
    assert float((drawn.x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert torch.equal(drawn.pred_adv, model(drawn.x_adv).argmax(dim=1))


class Abstainer(nn.Module):
    """A model whose decision (``predict``) abstains on every image."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), -1, dtype=torch.long, device=x.device)


def test_predictions_come_from_the_models_predict(trained_cnn, correct, tmp_path):
    x, y = correct
    drawn = draw_cell_pictures(Abstainer(trained_cnn), FGSM(), x[:2], y[:2], LINF, CLASSES,
                               tmp_path / "abstain", generator_seed=0, eps_grid=False)
    assert drawn.pred_clean.tolist() == [-1, -1] and drawn.pred_adv.tolist() == [-1, -1]


def test_targets_reach_the_attack(trained_cnn, correct, tmp_path):
    x, y = correct
    targets = (y + 1) % 10
    drawn = draw_cell_pictures(trained_cnn, FGSM(), x, y, LINF, CLASSES, tmp_path / "t",
                               generator_seed=0, targets=targets)
    grad_sign = torch.func.grad(
        lambda z: nn.functional.cross_entropy(trained_cnn(z), targets, reduction="sum"))(x).sign()
    torch.testing.assert_close(drawn.x_adv, (x - 0.1 * grad_sign).clamp(0, 1))
    assert drawn.series.reasons == (None,) * 6


def test_label_names():
    assert label_name(-1, CLASSES) == "abstain"
    assert label_name(torch.tensor(4), CLASSES) == "Coat"
    assert label_name(12, CLASSES) == "12"
    assert label_name(3, ()) == "3"


def test_eps_values_scale_with_the_cell():
    assert eps_values(ThreatModel("linf", 8 / 255)) == pytest.approx(
        tuple(m * 8 / 255 for m in (0, 0.2, 0.5, 1, 2, 3)))
    assert eps_values(ThreatModel("linf", 0.5)) == pytest.approx((0, 0.1, 0.25, 0.5, 1.0))
    assert eps_values(ThreatModel("l2", 1.5)) == pytest.approx((0, 0.3, 0.75, 1.5, 3.0, 4.5))
    assert eps_values(ThreatModel("l0", 4)) == (0, 1, 2, 3, 4, 5)


def test_signed_perturbation_keeps_the_largest_channel_change():
    delta = torch.zeros(1, 3, 2, 2)
    delta[0, :, 0, 0] = torch.tensor([0.1, -0.5, 0.2])
    delta[0, 2, 1, 1] = 0.3
    assert torch.equal(signed_perturbation(delta), torch.tensor([[[-0.5, 0.0], [0.0, 0.3]]]))


@dataclass(kw_only=True)
class Unclamped(Attack):
    """Steps ε up everywhere without clipping to the box: the gate clips."""

    name = "unclamped"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        return x + threat.eps


@dataclass(kw_only=True)
class FixedStep(Attack):
    """Ignores ε and always steps 0.1: valid only where ε ≥ 0.1."""

    name = "fixed-step"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        return (x - 0.1).clamp(0, 1)


@dataclass(kw_only=True)
class Raises(Attack):
    name = "raises"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        raise RuntimeError("boom")


def test_drawn_examples_are_clipped_by_the_gate(trained_cnn, correct, tmp_path):
    x, y = correct
    drawn = draw_cell_pictures(trained_cnn, Unclamped(), x, y, LINF, CLASSES, tmp_path / "u",
                               generator_seed=0, eps_grid=False)
    torch.testing.assert_close(drawn.x_adv, (x + 0.1).clamp(0, 1))


def test_gate_rejections(trained_cnn, correct, tmp_path):
    x, y = correct
    with pytest.raises(ValueError, match="gate rejected"):
        cell_pictures(trained_cnn, FixedStep(), x, y, ThreatModel("linf", 0.05), CLASSES,
                      tmp_path / "bad", 0)
    assert not list(tmp_path.iterdir())
    drawn = draw_cell_pictures(trained_cnn, FixedStep(), x, y, LINF, CLASSES, tmp_path / "ok",
                               generator_seed=0)
    rejected = [reason is not None for reason in drawn.series.reasons]
    assert rejected == [False, True, True, False, False, False]  # ε = 0, 0.02, 0.05, 0.1, ...
    assert torch.equal(drawn.series.x_adv[1], x[0])
    assert_png(drawn.paths[1])


def test_attack_errors_propagate_and_empty_input_draws_nothing(trained_cnn, correct, tmp_path):
    x, y = correct
    with pytest.raises(RuntimeError, match="boom"):
        cell_pictures(trained_cnn, Raises(), x, y, LINF, CLASSES, tmp_path / "r", 0)
    assert cell_pictures(trained_cnn, FGSM(), x[:0], y[:0], LINF, CLASSES, tmp_path / "e",
                         0) == []
    assert not list(tmp_path.iterdir())
