"""The ART adapter: every adapted attack runs a gated cell, pays for each model call through the
oracle, keeps to its access level, is reproducible from its seed, and is absent without ART."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Counting
from torch import nn

pytest.importorskip("art", reason="the ART adapter's tests need adversarial-robustness-toolbox")

from art.estimators.classification import (
    BlackBoxClassifierNeuralNetwork,
    PyTorchClassifier,
)
from support.art_adapter import BY_NAME, FAST

from advbench import AttackContext, Oracle, Split, ThreatModel
from advbench.adapters import seeded_global_rng
from advbench.conformance import check_attack
from advbench.plugin_system.options import arguments_of
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench.threat import perturbation_size

EPS = {"linf": 0.1, "l2": 1.5}
TINY_EPS = {"linf": 0.1, "l2": 0.5}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_adapted_attack_runs_a_gated_cell(name, tiny):
    cls, (net, x, y) = BY_NAME[name], tiny
    clean = predict(net, x, 64, torch.device("cpu"))
    for norm in cls.norms:
        outcome = attack_cell(net, cls(**FAST[name]), Split(x, y), clean,
                              ThreatModel(norm, EPS[norm]), CellSpec(batch_size=64,
                              device=torch.device("cpu"), seed=0))
        assert outcome.invalid_reason is None, (name, norm, outcome.invalid_reason)
        assert bool((outcome.queries[outcome.clean_correct] > 0).all()), (name, norm)
        assert int(outcome.robust.sum()) < len(y), (name, norm)  # it bites


@pytest.mark.parametrize("name", ["art-deepfool", "art-cw-l2", "art-elastic-net"])
def test_a_gradient_attack_charges_each_image_the_model_calls_art_made(name, tiny):
    """ART run image by image on a counting model gives each image's true number of model
    calls and the size of each perturbation; the adapter must charge exactly those calls (and
    one to learn the number of classes) and report those sizes."""
    cls, (net, x, y) = BY_NAME[name], tiny
    attack, threat = cls(**FAST[name]), ThreatModel("l2", TINY_EPS["l2"])
    counting = Counting(net)
    oracle = Oracle(counting, "gradient", len(y))
    attack.perturb(oracle, x, y, threat, AttackContext(torch.Generator().manual_seed(3)))
    assert int(oracle.queries.sum()) == counting.rows  # every row paid, none twice

    alone, truth, sizes = Counting(net), [], []
    classifier = PyTorchClassifier(alone, nn.CrossEntropyLoss(), (1, 8, 8), 10,
                                   clip_values=(0.0, 1.0), device_type="cpu")
    upstream = cls.upstream_class(classifier, **attack.arguments(threat, len(y), False))
    for i in range(len(y)):
        before = alone.rows
        out = torch.from_numpy(upstream.generate(x[i:i + 1].numpy(), y[i:i + 1].numpy()))
        truth.append(alone.rows - before)
        sizes.append(perturbation_size(out - x[i:i + 1], "l2").item())
    truth[0] += 1  # the adapter's one query for the number of classes
    assert oracle.queries.tolist() == truth
    found = [s if s > 0 else float("inf") for s in sizes]
    torch.testing.assert_close(attack.last_norms, torch.tensor(found), atol=1e-4, rtol=0)


def test_square_pays_for_every_model_call_of_art_and_keeps_its_budget(tiny):
    """The same seed through the adapter and straight on a counting model: the oracle's total
    is ART's rows plus the class-count query, the outputs agree, no sample exceeds its budget."""
    cls, (net, x, y) = BY_NAME["art-square"], tiny
    attack, threat = cls(**FAST["art-square"]), ThreatModel("linf", TINY_EPS["linf"])
    counting = Counting(net)
    oracle = Oracle(counting, "scores", len(y), attack.max_queries)
    result = attack.perturb(oracle, x, y, threat, AttackContext(torch.Generator().manual_seed(5)))
    assert result.x_adv is not None
    assert int(oracle.queries.sum()) == counting.rows

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(5)))
    alone = Counting(net)
    classifier = BlackBoxClassifierNeuralNetwork(
        lambda a: alone(torch.from_numpy(a)).log_softmax(dim=1).numpy(), (1, 8, 8), 10,
        clip_values=(0.0, 1.0))
    with seeded_global_rng(seed, x.device):
        upstream = cls.upstream_class(classifier, **attack.arguments(threat, len(y), False))
        expected = upstream.generate(x.numpy(), y.numpy())
    assert alone.rows + 1 == counting.rows
    torch.testing.assert_close(result.x_adv, torch.from_numpy(expected), atol=1e-5, rtol=0)
    assert int(oracle.queries.max()) <= attack.max_queries == 1 + 3 * 31


@pytest.mark.parametrize("name", ["art-hopskipjump", "art-boundary"])
def test_a_decision_attack_sees_labels_only_and_is_reproducible(name, tiny):
    """Under a labels-only oracle (scores would raise AccessError) every row is paid for, the
    same seed gives the same output, and the global RNGs are left as they were."""
    cls, (net, x, y) = BY_NAME[name], tiny
    outputs = []
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    for _ in range(2):
        counting = Counting(net)
        oracle = Oracle(counting, "decision", len(y))
        ctx = AttackContext(torch.Generator().manual_seed(7))
        result = cls(**FAST[name]).perturb(oracle, x, y, ThreatModel("l2", 0.5), ctx)
        assert result.x_adv is not None
        assert int(oracle.queries.sum()) == counting.rows and bool((oracle.queries > 0).all())
        outputs.append(result.x_adv)
    assert torch.equal(outputs[0], outputs[1])
    assert bool((net(outputs[0]).argmax(dim=1) != y).any())  # it bites
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_decision_attack_goes_for_its_target(tiny):
    net, x, y = tiny
    targets = (y + 1) % 10
    ctx = AttackContext(torch.Generator().manual_seed(2), targets=targets)
    attack = BY_NAME["art-hopskipjump"](**{**FAST["art-hopskipjump"], "init_size": 100})
    result = attack.perturb(Oracle(net, "decision", len(y)), x, y, ThreatModel("l2", 3.0), ctx)
    assert result.x_adv is not None
    assert bool((net(result.x_adv).argmax(dim=1) == targets).any())


def test_minimum_norm_output_is_projected_and_the_median_norm_reported(tiny):
    net, x, y = tiny
    y = y.clone()
    y[0] = (y[0] + 1) % 10  # misclassified: not attacked, no norm
    clean = predict(net, x, 8, torch.device("cpu"))
    attack = BY_NAME["art-deepfool"](max_iter=20)
    outcome = attack_cell(net, attack, Split(x, y), clean, ThreatModel("l2", 0.1),
                          CellSpec(batch_size=4, device=torch.device("cpu"), seed=0))
    assert outcome.invalid_reason is None  # projected: the gate accepts it
    attacked = clean == y
    needed = outcome.needed_norm
    assert bool(needed[~attacked].isnan().all()) and not bool(needed[attacked].isnan().any())
    assert float(needed[attacked & torch.isfinite(needed)].max()) > 0.1  # some left the ball
    assert attack.config()["projected"] is True
    assert "projected" in BY_NAME["art-deepfool"].description
    assert "projected" not in arguments_of(BY_NAME["art-deepfool"])  # the user cannot turn it off
    assert BY_NAME["art-square"]().config()["projected"] is False


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_conformance_kit(name):
    check_attack(BY_NAME[name], params=FAST[name])
