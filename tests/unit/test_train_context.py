"""What a training-time defense gets from the run (issue #17): a seeded generator, the threat
models, the dataset; the loop's order; ε from the run keying the cached model; the KL loss and
the normalizers a TRADES plugin needs."""

from __future__ import annotations

import math

import pytest
import torch

import advbench
from advbench.algorithms.losses import kl_divergence, kl_loss
from advbench.defense import DatasetInfo, TrainContext, TrainSettings
from advbench.running.plan import RunConfig, build_plan
from advbench.running.worker import Worker
from advbench.threat import ThreatModel, l2_normalize, normalize
from advbench_plugins.adv_train_fgsm import AdvTrainFGSM
from advbench_plugins.adv_train_pgd import AdvTrainPGD
from advbench_plugins.certified_training import CertifiedTraining

CPU = torch.device("cpu")


SETTINGS = TrainSettings(epochs=1, batch_size=8)


CIFAR = DatasetInfo("cifar10", (3, 32, 32), 10, {"linf": 8 / 255, "l2": 0.5})


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


# --- the loop's order -------------------------------------------------------------------------


# --- ε from the run ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [AdvTrainFGSM, AdvTrainPGD, CertifiedTraining])
def test_training_time_defenses_take_eps_from_the_run_unless_set(cls):
    run = TrainContext(SETTINGS, CPU, 0, threats=(ThreatModel("linf", 8 / 255),), dataset=CIFAR)
    assert cls().eps is None
    assert cls().resolved_training_config(run)["eps"] == 8 / 255
    assert cls(eps=0.05).resolved_training_config(run)["eps"] == 0.05
    assert cls().config()["eps"] is None  # rows record the field as the user left it


def test_the_worker_hands_the_run_to_training(registry):
    config = RunConfig(attacks="fgsm,pgd-l2", defenses="none", preset="smoke", n_train=60,
                       n_eval=20, eps={"linf": [0.05, 0.1], "l2": [1.5]}, device="cpu")
    plan = build_plan(config, registry)
    ctx = Worker(plan, None).models.train_context(plan.build(plan.defenses[0]))
    assert sorted((t.norm, t.eps) for t in ctx.threats) == [("l2", 1.5), ("linf", 0.05),
                                                            ("linf", 0.1)]
    assert ctx.dataset == DatasetInfo("fashion-mnist", (1, 28, 28), 10,
                                      {"linf": 0.1, "l2": 1.5, "l1": 10, "l0": 1})
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
