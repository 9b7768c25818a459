"""The seal (issue #15): an attack cannot change the model or what it is graded with, nor run
the model behind the oracle's back or tamper with its counts. Each cheater's cell is invalid
with the reason, and the honest cell after it has exactly the numbers of a run without it."""

from __future__ import annotations

import cheating_plugins
import pytest
import torch
from torch import nn

from advbench.conformance import ConformanceError, check_attack, tiny_model
from advbench.seal import ModelSeal, Pristine, Seal, SealBroken, identical


def test_the_seal_is_in_the_conformance_kit():
    with pytest.raises(ConformanceError, match="rule 'sealed'.*modified the model"):
        check_attack(cheating_plugins.ZeroesWeights)
    with pytest.raises(ConformanceError, match="rule 'sealed'.*outside the oracle"):
        check_attack(cheating_plugins.ForwardsOutside)


def test_identical_compares_bits():
    assert identical(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0]))
    assert not identical(torch.tensor([0.0]), torch.tensor([-0.0]))
    assert not identical(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64))
    assert identical(torch.tensor([1, 2]), torch.tensor([1, 2]))


def test_replaced_parts_of_a_model_are_named_and_put_back():
    model = tiny_model()
    seal = ModelSeal(model)
    before = [p.clone() for p in model.parameters()]
    relu, weight = model[1], model[0].weight
    model[1] = nn.Identity()
    model[0].weight = nn.Parameter(torch.zeros_like(weight))
    model[3].bias.data = model[3].bias.data.double()
    model.train()
    changes = seal.changes()
    assert "submodules of the model (Sequential) replaced" in changes
    assert "parameters of 0 (Conv2d) replaced" in changes
    assert "parameter 3.bias" in changes and "train/eval mode of 1 (ReLU)" not in changes
    assert "train/eval mode of the model (Sequential)" in changes
    seal.restore()
    assert seal.changes() == []
    assert model[1] is relu and model[0].weight is weight and not model.training
    assert all(identical(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_a_changed_pristine_copy_breaks_the_seal():
    model = tiny_model()
    x = torch.rand(4, 1, 8, 8)
    seal = Seal(model, [Pristine({"images": x})])
    with seal.cell():
        pass
    seal.model.tensors.copies["parameter 0.weight"].zero_()
    with pytest.raises(SealBroken), seal.cell():
        pass
