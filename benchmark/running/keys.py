"""A cell's names: its key in the run folder, its key in the cell cache, its identity columns.

The keys hash everything that decides a cell's numbers, so that a resumed run and the cell
cache reuse a cell only where it would come out the same. Changing what they hash invalidates
every cached cell and every resumable run folder: do it on purpose only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advbench.attack import Attack
from advbench.defense import Defense
from advbench.running.cell_cache import code_version
from advbench.running.isolation import isolated
from advbench.running.model_cache import content_key, data_fingerprint, tensor_hash
from advbench.running.plan import Cell, Plan, choose_targets
from advbench.running.plugin_code import plugin_code


class Keys:
    """The keys and identity columns of the cells of one plan. ``model_parts`` gives what the
    model cache keys a defended model on (``Preparer.model_parts``)."""

    def __init__(self, plan: Plan, user_model: nn.Module | None,
                 model_parts: Callable[[Defense], dict[str, Any]]) -> None:
        self.plan, self.user_model, self.model_parts = plan, user_model, model_parts

    def cell_key(self, cell: Cell, attack_config: str, defense_config: str) -> str:
        """Hash of everything that determines a cell's numbers (the model follows from them):
        the evaluation images and labels themselves (another --data-root with as many samples
        must not reuse a cell), not only their indices; a cascade's cell that skips nothing is
        the plain cell."""
        plan = self.plan
        skipped = {"skip": content_key(list(cell.skip))} if cell.skip else {}
        return content_key({**skipped,
            "dataset": plan.dataset.name, "model": plan.model_plugin.name,
            "defense": cell.defense.name, "attack": cell.attack_name,
            "norm": cell.threat.norm, "eps": cell.threat.eps, "split": cell.split,
            "seed": plan.config.seed, "attack_config": attack_config,
            "defense_config": defense_config, "targeted": plan.config.targeted or "",
            "sample": plan.sample_hashes[cell.split],
            "data": data_fingerprint(plan.evaluation[cell.split]),
            "targets": self.targets_fingerprint(cell.split),
            "training": plan.settings[cell.defense.cls.name],
            "batch_size": plan.config.batch_size})

    def targets_fingerprint(self, split: str) -> str:
        """A hash of the targets of ``--targeted random`` or a class, which the data decide;
        least-likely targets follow from the model and the data, both already in the key."""
        config, data = self.plan.config, self.plan.evaluation[split]
        if config.targeted in (None, "least-likely"):
            return ""
        return tensor_hash(choose_targets(config.targeted, nn.Identity(), data,
                                          self.plan.dataset.num_classes, config.batch_size,
                                          torch.device("cpu"), config.seed))

    def cache_key(self, cell: Cell, defense: Defense, attack_config: str,
                  defense_config: str) -> str:
        """The cell cache's key: the run folder's cell key, and what it leaves to the run
        folder being the same: the defended model's own key (the model cache's, with a hash of
        the user's weights when they are the start), the attack's code, the draws against
        randomness, the device and bench's code."""
        assert cell.attack is not None
        model: list[Any] = [content_key(self.model_parts(defense))]
        if self.user_model is not None:
            state = self.user_model.state_dict()
            model += [type(self.user_model).__qualname__, list(state),
                      tensor_hash(*state.values())]
        attack = cell.attack.cls
        return content_key({
            "cell": self.cell_key(cell, attack_config, defense_config), "model": model,
            "attack_class": f"{attack.__module__}.{attack.__qualname__}",
            "attack_source": [cell.attack.source.distribution, cell.attack.source.version],
            "attack_code": plugin_code(attack),  # an editable install keeps its version
            "eot_samples": self.plan.config.eot_samples, "device": str(self.plan.device),
            "isolated": isolated(self.plan.config.isolation, cell.attack.source.distribution),
            "bench": code_version(), "format": 1})

    def identity(self, cell: Cell, attack: Attack | None = None,
                 defense: Defense | None = None) -> dict[str, Any]:
        """The columns that name a cell's row, its key and terms among them, for
        :func:`advbench.reporting.results.cell_row` (``attack``, ``defense``: as built for the
        cell, None where building failed)."""
        plan = self.plan
        attack_config = json.dumps(attack.config() if attack else {}, sort_keys=True)
        defense_config = json.dumps(defense.config() if defense else {}, sort_keys=True)
        return {
            "dataset": plan.dataset.name, "model": plan.model_plugin.name,
            "defense": cell.defense.name, "attack": cell.attack_name,
            "norm": cell.threat.norm, "eps": cell.threat.eps, "split": cell.split,
            "n_samples": len(plan.evaluation[cell.split]), "seed": plan.config.seed,
            "attack_config": attack_config, "defense_config": defense_config,
            "targeted": plan.config.targeted or "",
            "cell_key": self.cell_key(cell, attack_config, defense_config),
            "query_budget": (attack.max_queries if attack else None) or float("nan"),
            "eot_samples": 1, "batch_size": plan.config.batch_size,
        }
