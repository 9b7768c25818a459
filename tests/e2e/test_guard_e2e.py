"""The seal (issue #15): an attack cannot change the model or what it is graded with, nor run
the model behind the oracle's back or tamper with its counts. Each cheater's cell is invalid
with the reason, and the honest cell after it has exactly the numbers of a run without it."""

from __future__ import annotations

import cheating_plugins
import pytest
import torch

from advbench import Split, ThreatModel, load_registry, run_matrix
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench_plugins.fgsm import FGSM

SMALL = {"preset": "smoke", "n_train": 1000, "n_eval": cheating_plugins.N_EVAL,
         "eps": {"linf": [0.1]}, "batch_size": 16}
NUMBERS = ["clean_accuracy", "robust_accuracy", "attack_success_rate", "queries_mean"]
BN_MODEL = "cheating_plugins:bn_cnn"

# attack → (what its reason must say, the model it runs against)
CHEATERS = {
    "zeroes-weights": ("the attack modified the model: parameter 0.weight", None),
    "scores-but-gradients": ("with gradients outside the oracle (declared access='scores')",
                             None),
    "raises-its-access": ("it used gradient access but declared access='scores'", None),
    "forwards-outside": ("outside the oracle (declared access='decision')", None),
    "resets-queries": ("it changed oracle.queries", None),
    "raises-its-budget": ("it went past its budget of 2 queries", None),
    "train-mode-forward": ("the attack modified the model: buffer 1.running_mean", BN_MODEL),
    "edits-graded-data": ("modified what it is graded with: evaluation labels (test)", None),
    "edits-graded-images": ("modified what it is graded with: evaluation images (test)", None),
    "moves-the-reference": ("the batch the gate measured its output against", None),
    "cheats-then-raises": ("the attack modified the model: parameter 0.weight", None),
    "clears-hooks": ("it removed the harness's hooks from the model (Sequential)", None),
}
# Queries the harness counted for the cheaters that make them (isolated, the attack's reset
# of its oracle's count changes nothing).
ISOLATED_QUERIES = {"resets-queries": 3}


@pytest.fixture(scope="module")
def cheats():
    return load_registry(extra=[cheating_plugins])


@pytest.fixture(scope="module")
def run(cheats, tmp_path_factory):
    """``run(attacks, defenses, model)``: the rows of a small run, by (defense, attack)."""
    cache = tmp_path_factory.mktemp("guard-cache")

    def run_it(attacks: str, defenses: str = "none", model: str | None = None):
        extra = {"model": model} if model else {}
        frame = run_matrix(attacks=attacks, defenses=defenses, registry=cheats,
                           cache_dir=cache, isolation="none", **SMALL, **extra)
        return frame[frame["attack"] != ""].set_index(["defense", "attack"])

    return run_it


@pytest.fixture(scope="module")
def honest(run):
    """FGSM's row without any cheater, per model."""
    return {model: run("fgsm", model=model).loc[("none", "fgsm")] for model in (None, BN_MODEL)}


@pytest.mark.parametrize("cheater", CHEATERS)
def test_a_cheater_is_invalid_and_the_next_cell_is_unaffected(cheater, run, honest):
    reason, model = CHEATERS[cheater]
    rows = run(f"{cheater},fgsm", model=model)
    caught = rows.loc[("none", cheater)]
    assert caught["status"] == "invalid", caught["invalid_reason"]
    assert reason in caught["invalid_reason"]
    assert caught["robust_accuracy"] != caught["robust_accuracy"]  # NaN: never reported
    after = rows.loc[("none", "fgsm")]
    assert after["status"] == "ok"
    assert after[NUMBERS].tolist() == honest[model][NUMBERS].tolist()


def test_isolated_every_cheat_fails_or_is_inert_and_the_honest_cell_is_unaffected(
        cheats, tmp_path, honest):
    """Run isolated (#29), in one run, every cheater reaches only its own process: it raises
    there (no ``oracle._model``, the harness's access and budget) or its cheat changes nothing
    the harness grades with; FGSM after them has exactly the numbers of a run without them."""
    names = [name for name, (_, model) in CHEATERS.items() if model is None]
    frame = run_matrix(attacks=",".join([*names, "fgsm"]), defenses="none", registry=cheats,
                       cache_dir=tmp_path, cascade=False, **SMALL)
    rows = frame.set_index("attack")
    for name in names:
        row = rows.loc[name]
        assert row["grading"] == "isolated"
        if row["status"] == "ok":  # inert: the attack did nothing to the harness's samples
            assert row["robust_accuracy"] == row["clean_accuracy"], name
            assert row["queries_mean"] == ISOLATED_QUERIES.get(name, 0), name
        else:
            assert row["invalid_reason"], name
    assert rows.loc["resets-queries", "status"] == "ok"  # the harness's count, not the reset
    assert rows.loc["fgsm", NUMBERS].tolist() == honest[None][NUMBERS].tolist()


def test_a_defense_whose_fit_edits_the_evaluation_data_fails(run, honest):
    rows = run("fgsm", defenses="edits-evaluation-data,none")
    failed = rows.loc[("edits-evaluation-data", "fgsm")]
    assert failed["status"] == "error"
    assert "fit or wrap modified evaluation images (test)" in failed["invalid_reason"]
    after = rows.loc[("none", "fgsm")]
    assert after["status"] == "ok"
    assert after[NUMBERS].tolist() == honest[None][NUMBERS].tolist()


def test_an_honest_cell_is_the_same_sealed_or_not(trained_cnn, batch):
    x, y = batch
    x, y = x[:100], y[:100]
    clean = predict(trained_cnn, x, 50, torch.device("cpu"))
    outcomes = [attack_cell(trained_cnn, FGSM(), Split(x, y), clean, ThreatModel("linf", 0.1),
                            CellSpec(batch_size=50, device=torch.device("cpu"), seed=0,
                                     sealed=sealed))
                for sealed in (True, False)]
    assert outcomes[0].invalid_reason is None
    assert torch.equal(outcomes[0].adv_pred, outcomes[1].adv_pred)
    assert torch.equal(outcomes[0].queries, outcomes[1].queries)
    assert all(not module._forward_pre_hooks for module in trained_cnn.modules())
