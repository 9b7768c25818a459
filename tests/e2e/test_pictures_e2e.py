"""Cell pictures come from the examples the cell made: kept by ``attack_cell``, drawn by the
driver, never by running the attack again."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from support.pictures import assert_png
from torch import nn

from advbench import Attack, ThreatModel
from advbench.data import Split
from advbench.gate import check_adversarial
from advbench.running.evaluate import SHOWN, CellOutcome, CellSpec, attack_cell
from advbench.threat import perturbation_size
from advbench_plugins.fgsm import FGSM
from advbench_plugins.one_pixel import OnePixel

LINF = ThreatModel("linf", 0.1)
CPU = torch.device("cpu")


def run_cell(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor,
             threat: ThreatModel = LINF, batch_size: int = 5, **kwargs) -> CellOutcome:
    clean = model(x).argmax(dim=1)
    return attack_cell(model, attack, Split(x.clone(), y.clone()), clean, threat,
                       CellSpec(batch_size=batch_size, device=CPU, seed=0, **kwargs))


def test_a_cell_keeps_its_first_attacked_samples_gate_checked_examples(trained_cnn, batch):
    x, y = batch[0][:40], batch[1][:40]
    outcome = run_cell(trained_cnn, FGSM(), x, y)  # batches of 5: the kept rows span two
    correct = torch.nonzero(trained_cnn(x).argmax(dim=1) == y).flatten()
    assert torch.equal(outcome.shown, correct[:SHOWN])
    assert outcome.shown_adv.shape == (SHOWN, *x.shape[1:])
    # FGSM is deterministic: what is kept is exactly the gate's output on those samples.
    xs, ys = x[outcome.shown], y[outcome.shown]
    grad_sign = torch.func.grad(
        lambda z: nn.functional.cross_entropy(trained_cnn(z), ys, reduction="sum"))(xs).sign()
    torch.testing.assert_close(outcome.shown_adv,
                               check_adversarial(xs, xs + 0.1 * grad_sign, LINF).x_adv)
    # the predictions drawn are the harness's, on exactly these images
    assert torch.equal(outcome.adv_pred[outcome.shown],
                       trained_cnn(outcome.shown_adv).argmax(dim=1))


def test_one_pixel_examples_change_at_most_k_pixels(trained_cnn, batch):
    x, y = batch[0][:12], batch[1][:12]
    outcome = run_cell(trained_cnn, OnePixel(population=8, iterations=2), x, y,
                       ThreatModel("l0", 1))
    sizes = perturbation_size(outcome.shown_adv - x[outcome.shown], "l0")
    assert bool((sizes <= 1).all())


def test_targeted_cells_keep_only_samples_whose_target_differs(trained_cnn, batch):
    x, y = batch[0][:30], batch[1][:30]
    targets = y.clone()
    targets[::2] = (y[::2] + 1) % 10  # odd rows: the target is the label, never attacked
    outcome = run_cell(trained_cnn, FGSM(), x, y, targets=targets)
    assert len(outcome.shown) and bool((targets[outcome.shown] != y[outcome.shown]).all())


@dataclass(kw_only=True)
class Unclamped(Attack):
    """Steps ε up everywhere without clipping to the box: the gate clips."""

    name = "unclamped"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        return x + threat.eps


def test_kept_examples_are_the_gate_clipped_ones(trained_cnn, batch):
    x, y = batch[0][:20], batch[1][:20]
    outcome = run_cell(trained_cnn, Unclamped(), x, y)
    torch.testing.assert_close(outcome.shown_adv, (x[outcome.shown] + 0.1).clamp(0, 1))


def test_a_run_draws_pictures_from_its_cells_without_attacking_again(tmp_path, monkeypatch):
    """The examples grid per cell, one ε-sweep picture per attack and norm, and FGSM's run
    called exactly once per cell batch: the driver never attacks."""
    from advbench import run_matrix

    calls = []
    original = FGSM.run
    monkeypatch.setattr(FGSM, "run", lambda self, *a: calls.append(1) or original(self, *a))
    out = tmp_path / "out"
    run_matrix(attacks="fgsm", defenses="none", preset="smoke", n_train=2000, n_eval=30,
               eps={"linf": [0.05, 0.1]}, out=out, cache_dir=tmp_path / "cache")
    assert len(calls) == 2  # two cells of one batch each
    for eps in ("0.05", "0.1"):
        assert_png(out / "figures" / f"fgsm_none_test_linf_{eps}_examples.png")
    assert_png(out / "figures" / "fgsm_none_test_linf_eps.png", height_at_least=50)
