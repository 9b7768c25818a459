"""Cell pictures come from the examples the cell made: kept by ``attack_cell``, drawn by the
driver, never by running the attack again."""

from __future__ import annotations

import pytest
import torch
from support.pictures import assert_png

from advbench.reporting.pictures import (
    adversarial_examples_grid,
    cell_stem,
    eps_grid_figure,
    label_name,
    signed_perturbation,
    sweep_series,
)
from advbench.running.evaluate import CellOutcome, either_fooled
from advbench_plugins.fashion_mnist import FashionMNIST

CLASSES = FashionMNIST.classes


def test_bpda_merge_keeps_the_example_that_fooled():
    labels = torch.tensor([0, 1, 2])
    shown = torch.tensor([0, 1, 2])
    plain = CellOutcome(torch.ones(3, dtype=torch.bool), torch.tensor([5, 1, 2]), labels,
                        torch.ones(3, dtype=torch.long), None, shown, torch.zeros(3, 1, 2, 2))
    bpda = CellOutcome(torch.ones(3, dtype=torch.bool), torch.tensor([0, 7, 2]), labels,
                       torch.ones(3, dtype=torch.long), None, shown, torch.ones(3, 1, 2, 2))
    merged = either_fooled(plain, bpda)
    assert merged.adv_pred.tolist() == [5, 7, 2]
    # sample 0: plain fooled (kept); sample 1: only BPDA fooled (its example); 2: neither
    assert merged.shown_adv.flatten(1).mean(dim=1).tolist() == [0.0, 1.0, 0.0]


def test_examples_grid_three_channels(tmp_path):
    x = torch.rand(4, 3, 32, 32)
    x_adv = (x + 8 / 255).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 3])
    path = adversarial_examples_grid(x, x_adv, y, y, torch.tensor([0, 5, 2, 3]), ("c",) * 10,
                                     "rgb", tmp_path / "rgb_examples.png")
    assert_png(path)


def test_sweep_series_orders_cells_by_eps(tmp_path):
    images = {eps: torch.full((1, 4, 4), eps) for eps in (0.3, 0.1, 0.2)}
    series = sweep_series([(eps, image, int(eps * 10)) for eps, image in images.items()])
    assert series.eps == (0.1, 0.2, 0.3)
    assert series.pred.tolist() == [1, 2, 3]
    assert [float(image.max()) for image in series.x_adv] == pytest.approx([0.1, 0.2, 0.3])
    assert_png(eps_grid_figure(series, 1, CLASSES, "linf", "sweep", tmp_path / "s_eps.png"),
               height_at_least=50)


def test_names():
    assert cell_stem("fgsm", "none", "test", "linf", 0.1) == "fgsm_none_test_linf_0.1"
    assert cell_stem("fgsm", "none", "test", "linf") == "fgsm_none_test_linf"
    assert label_name(0, CLASSES) == CLASSES[0]
    assert label_name(-1, CLASSES) == "abstain"
    assert label_name(12, CLASSES) == "12"


def test_signed_perturbation_keeps_the_largest_channel_change():
    delta = torch.zeros(1, 3, 2, 2)
    delta[0, :, 0, 0] = torch.tensor([0.1, -0.5, 0.2])
    delta[0, 2, 1, 1] = 0.3
    assert torch.equal(signed_perturbation(delta), torch.tensor([[[-0.5, 0.0], [0.0, 0.3]]]))
