"""Declarations of the plugin catalog (#29): a field's type crosses as data and comes back the
same annotation, and a declaration the harness cannot use is refused with a reason."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any, Literal

import pytest
import torch

from advbench.plugin_system.catalog_process import build_one, declaration, hint_to_json
from advbench.plugin_system.declared import (
    DeclarationError,
    DeclaredAttack,
    DeclaredDefense,
    canonical,
    declared_class,
    hint_from_json,
)
from advbench_plugins.gaussian_smoothing import GaussianSmoothing
from advbench_plugins.none import NoDefense
from advbench_plugins.one_pixel import OnePixel
from advbench_plugins.pgd_linf import PGDLinf


@pytest.mark.parametrize("hint", [int, float, bool, str, Path, float | None, tuple[int, ...],
                                  tuple[int, str], list[float], dict[str, int], Any,
                                  Literal["a", "b"], Literal[1, 2] | None, tuple, list, dict])
def test_a_field_type_crosses_as_data_and_comes_back(hint: Any) -> None:
    assert hint_from_json(hint_to_json(hint)) == hint


def test_what_the_grammar_cannot_say_is_any() -> None:
    assert hint_from_json(hint_to_json(complex)) is Any


def test_a_built_in_attack_declared_has_its_fields_and_class_attributes() -> None:
    decl = declaration(PGDLinf)
    cls = declared_class(copy.deepcopy(decl))
    assert issubclass(cls, DeclaredAttack) and cls.__qualname__ == PGDLinf.__qualname__
    for attribute in ("name", "norms", "access", "single_step", "targeted", "presets",
                      "minimum_norm", "against_randomized", "description"):
        assert getattr(cls, attribute) == getattr(PGDLinf, attribute), attribute
    # its config is the real class's once the catalog resolved it (PGD fills rel_step_size)
    attack = cls()
    assert attack.config() == attack.arguments() != PGDLinf().config()
    cls.resolved[canonical(attack.arguments())] = build_one(
        {"module": decl["module"], "qualname": decl["qualname"],
         "arguments": attack.arguments()})
    assert attack.config() == PGDLinf().config() and attack.max_queries is None
    assert pickle.loads(pickle.dumps(cls)) is cls  # one class per declaration in a process
    assert isinstance(cls().real(), PGDLinf)


def test_a_budget_computed_from_the_arguments_is_never_guessed() -> None:
    cls = declared_class(declaration(OnePixel))
    assert cls.declared["max_queries"] == "computed"
    with pytest.raises(RuntimeError, match="not resolved"):
        _ = cls().max_queries


@pytest.mark.parametrize("change, reason", [
    ({"access": "telepathy"}, "access 'telepathy'"),
    ({"norms": ["l7"]}, "norms"),
    ({"norms": []}, "norms"),
    ({"targeted": "yes"}, "booleans"),
    ({"name": 3}, "not a string"),
    ({"max_queries": 1.5}, "max_queries"),
    ({"presets": {"cpu": 3}}, "presets"),
    ({"fields": [{"name": "not an identifier", "default": 1, "bounds": {},
                  "hint": {"t": "int"}}]}, "fields"),
    ({"fields": [{"name": "steps", "default": 1, "bounds": {}, "hint": {"t": "eval"}}]},
     "type is malformed"),
    ({"fields": [{"name": "name", "default": 1, "bounds": {}, "hint": {"t": "int"}}]},
     "fields"),
])
def test_a_malformed_declaration_is_refused(change: dict[str, Any], reason: str) -> None:
    decl = {**declaration(PGDLinf), **change}
    with pytest.raises(DeclarationError, match=reason):
        declared_class(decl)


def test_a_defense_declares_whether_it_wraps_its_model_and_has_a_surrogate() -> None:
    smoothing = declared_class(declaration(GaussianSmoothing))
    assert issubclass(smoothing, DeclaredDefense) and smoothing.randomized
    assert (smoothing.declared["wraps"], smoothing.declared["surrogate"]) == (True, False)
    assert smoothing.wrapper_fields == GaussianSmoothing.wrapper_fields
    plain_training = declared_class(declaration(NoDefense))
    assert (plain_training.declared["wraps"], plain_training.declared["surrogate"]) == (
        False, False)
    model = torch.nn.Linear(2, 2)
    assert plain_training().wrap(model) is model  # nothing to serve: no process started
    assert plain_training().bpda_surrogate(model) is None
    with pytest.raises(DeclarationError, match="wraps and surrogate"):
        declared_class({**declaration(NoDefense), "wraps": "sometimes"})
