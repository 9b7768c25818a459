"""The torchattacks adapter: every adapted attack runs a gated cell, pays for each model call
through the oracle, keeps to its access level, and passes the conformance kit."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers import Counting

pytest.importorskip("torchattacks")

import torchattacks

import advbench_plugins.torchattacks_adapter as ta
from advbench import AccessError, AttackContext, Oracle, Split, ThreatModel
from advbench.adapters import OracleModel, seeded_global_rng
from advbench.conformance import check_attack
from advbench.plugin_system.options import arguments_of
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench.threat import perturbation_size

BY_NAME = {cls.name: cls for cls in ta.ADAPTED}


EPS = {"linf": 0.1, "l2": 1.5, "l0": 3.0}
TINY_EPS = {"linf": 0.1, "l2": 0.5, "l0": 3.0}
# Small settings, so each test takes seconds; the defaults are the kit's business.
FAST = {"ta-cw": {"steps": 20, "c": 10.0, "lr": 0.05}, "ta-fab": {"steps": 3},
        "ta-square": {"n_queries": 60}, "ta-sparsefool": {"steps": 1}, "ta-jsma": {"gamma": 0.03},
        "ta-pixle": {"restarts": 3, "max_iterations": 3}, "ta-onepixel": {"steps": 3},
        "ta-spsa": {"nb_sample": 16, "nb_iter": 3}, "ta-apgd": {"steps": 5},
        "ta-deepfool": {"steps": 10}}


@pytest.fixture
def correct(trained_cnn, batch):
    """The three test images (of the first 50) the trained CNN classifies correctly with the
    least confidence: "it bites" must not hang on how robust three arbitrary samples happen to
    be (the trained model differs a little from one CPU to another)."""
    x, y = batch
    with torch.no_grad():
        confidence = trained_cnn(x[:50]).softmax(dim=1).amax(dim=1)
    correct = torch.nonzero(predict(trained_cnn, x[:50], 50, torch.device("cpu")) == y[:50])
    correct = correct.flatten()
    index = correct[confidence[correct].argsort()[:3]]
    return x[index], y[index]


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_adapted_attack_runs_a_gated_cell(name, trained_cnn, correct):
    cls = BY_NAME[name]
    x, y = correct
    data = Split(x, y)
    clean = predict(trained_cnn, x, 64, torch.device("cpu"))
    for norm in cls.norms:
        outcome = attack_cell(trained_cnn, cls(**FAST.get(name, {})), data, clean,
                              ThreatModel(norm, EPS[norm]), CellSpec(batch_size=64,
                              device=torch.device("cpu"), seed=0))
        assert outcome.invalid_reason is None, (name, norm, outcome.invalid_reason)
        assert bool((outcome.queries[outcome.clean_correct] > 0).all()), (name, norm)
        # Weak here: one to three pixels (L0), SPSA's few samples, and DeepFool, which stalls
        # against the box on the black background (it spends every step, then is projected).
        if name not in ("ta-jsma", "ta-sparsefool", "ta-spsa", "ta-onepixel", "ta-deepfool"):
            assert int(outcome.robust.sum()) < len(y), (name, norm)  # it bites


@pytest.mark.parametrize("name", ["ta-deepfool", "ta-cw", "ta-jsma", "ta-onepixel"])
def test_a_per_sample_attack_charges_each_image_its_own_model_calls(name, tiny):
    """Upstream run image by image on a counting model gives each image's true number of
    model calls; the adapter's oracle must charge exactly those."""
    cls, (net, x, y) = BY_NAME[name], tiny
    attack, threat = cls(**FAST.get(name, {})), ThreatModel(cls.norms[0], TINY_EPS[cls.norms[0]])
    counting = Counting(net)
    oracle = Oracle(counting, cls.access, len(y))
    generator = torch.Generator().manual_seed(3)
    attack.perturb(oracle, x, y, threat, AttackContext(generator))
    assert int(oracle.queries.sum()) == counting.rows  # every row paid, none twice

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(3)))
    alone, truth = Counting(net), []
    with seeded_global_rng(seed, x.device):
        upstream = cls.upstream_class(alone, **attack.arguments(threat, seed))
        labels = y
        if cls.spec.always_targeted:  # as upstream's own untargeted mode: class y + 1
            upstream.set_mode_targeted_by_label(quiet=True)
            labels = (y + 1) % 10
        for i in range(len(y)):
            before = alone.rows
            upstream(x[i:i + 1], labels[i:i + 1])
            truth.append(alone.rows - before)
    if cls.spec.always_targeted:
        truth[0] += 1  # the adapter's one query for the number of classes
    assert oracle.queries.tolist() == truth


@pytest.mark.parametrize("name", ["ta-square", "ta-spsa", "ta-mifgsm", "ta-apgd", "ta-pgd"])
def test_a_batched_attack_pays_for_every_model_call_of_upstream(name, tiny):
    """The same seed run through the adapter and straight on a counting model: the oracle's
    total equals upstream's rows and the outputs agree (the projection is a no-op)."""
    cls, (net, x, y) = BY_NAME[name], tiny
    attack, threat = cls(**FAST.get(name, {})), ThreatModel(cls.norms[0], TINY_EPS[cls.norms[0]])
    counting = Counting(net)
    oracle = Oracle(counting, cls.access, len(y), attack.max_queries)
    result = attack.perturb(oracle, x, y, threat, AttackContext(torch.Generator().manual_seed(5)))
    assert result.x_adv is not None
    assert int(oracle.queries.sum()) == counting.rows

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(5)))
    alone = Counting(net)
    with seeded_global_rng(seed, x.device):
        expected = cls.upstream_class(alone, **attack.arguments(threat, seed))(x, y)
    assert alone.rows == counting.rows
    torch.testing.assert_close(result.x_adv, expected.clamp(0, 1), atol=1e-5, rtol=0)
    if attack.max_queries is not None:
        assert int(oracle.queries.max()) <= attack.max_queries


def test_a_score_based_attack_never_sees_a_gradient(trained_cnn, correct):
    x, y = correct
    oracle = Oracle(trained_cnn, "scores", len(y))
    model = OracleModel(oracle, x, "linf", "scores")
    out = model(x.clone().requires_grad_(True))
    assert not out.requires_grad  # nothing to differentiate
    torch.testing.assert_close(out.softmax(dim=1), trained_cnn(x).softmax(dim=1))
    with pytest.raises(AccessError):  # a white-box attack under a score-only oracle fails
        BY_NAME["ta-cw"](steps=2).run(Oracle(trained_cnn, "scores", len(y)), x, y,
                                      ThreatModel("l2", 1.0),
                                      AttackContext(torch.Generator().manual_seed(0)))
    assert BY_NAME["ta-square"].access == "scores" and BY_NAME["ta-cw"].access == "gradient"


def test_minimum_norm_output_is_projected_and_says_so(trained_cnn, correct):
    x, y = correct
    cls = BY_NAME["ta-cw"]
    attack, threat = cls(steps=30, c=10.0, lr=0.05), ThreatModel("l2", 0.3)
    oracle = Oracle(trained_cnn, "gradient", len(y))
    ctx = AttackContext(torch.Generator())
    result = attack.perturb(oracle, x, y, threat, ctx)
    assert result.x_adv is not None  # the gate accepts it
    assert torch.equal(ctx.record["norm_before_projection"], attack.last_norms)
    assert bool((perturbation_size(result.x_adv - x, "l2") <= 0.3 + 1e-6).all())
    assert float(attack.last_norms[torch.isfinite(attack.last_norms)].max()) > 0.3
    assert attack.config()["projected"] is True and "projected" in cls.description
    assert attack.config()["upstream"] == f"torchattacks.CW {torchattacks.__version__}"
    assert "projected" not in arguments_of(cls)  # the user cannot turn it off
    assert BY_NAME["ta-square"]().config()["projected"] is False


def test_a_cell_reports_the_median_norm_minimum_norm_attacks_needed(trained_cnn, batch):
    x, y = batch[0][:12], batch[1][:12]
    clean = predict(trained_cnn, x, 12, torch.device("cpu"))
    attack = BY_NAME["ta-deepfool"](steps=20)
    outcome = attack_cell(trained_cnn, attack, Split(x, y), clean, ThreatModel("l2", 0.3),
                          CellSpec(batch_size=5, device=torch.device("cpu"), seed=0))
    attacked = clean == y
    needed = outcome.needed_norm
    assert bool(needed[~attacked].isnan().all()) and not bool(needed[attacked].isnan().any())
    # DeepFool steps just past the boundary: where the projected example still fools the
    # model, the size it needed was within the ball
    fooled = attacked & ~outcome.adv_correct
    assert bool((needed[fooled] <= 0.3 + 1e-4).all())


def test_median_norm_column_in_a_run(tmp_path):
    from advbench import run_matrix

    frame = run_matrix(attacks="ta-deepfool,fgm", defenses="none", preset="smoke",
                       n_train=2000, n_eval=20, eps={"l2": [0.5]}, cache_dir=tmp_path)
    rows = frame.set_index("attack")
    assert 0 < rows.loc["ta-deepfool", "median_norm"] < float("inf")
    assert pd.isna(rows.loc["fgm", "median_norm"])  # FGM reports none: not a minimum-norm attack


def test_global_random_state_is_left_alone(correct, trained_cnn):
    x, y = correct
    before = torch.get_rng_state()
    BY_NAME["ta-square"](n_queries=5).perturb(
        Oracle(trained_cnn, "scores", len(y)), x, y, ThreatModel("linf", 0.1),
        AttackContext(torch.Generator().manual_seed(1)))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_conformance_kit(name):
    check_attack(BY_NAME[name], params=FAST.get(name))
