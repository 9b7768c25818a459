"""Presets: training and evaluation sizes for the hardware at hand. Flags override them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from advbench.errors import UsageError

if TYPE_CHECKING:
    from advbench.attack import Attack
    from advbench.defense import Defense


@dataclass(frozen=True)
class Preset:
    """Sizes of a run. Plugins size themselves per preset (``Attack.presets``,
    ``Defense.presets`` and ``Defense.preset_epochs``), so that a third party's costly plugin
    can say it is costly and the core names no plugin."""

    name: str
    n_train: int | None  # None: the whole training split
    epochs: int
    n_eval: int
    description: str
    # Whether a run cascades by default (``--cascade``/``--no-cascade`` decide otherwise): the
    # cpu and paper presets, for one worst case as strong as AutoAttack's at a fraction of the
    # full matrix's cost; smoke, which checks that every attack runs, gives each attack every
    # sample.
    cascade: bool = False

    def epochs_for(self, defense: type[Defense]) -> int:
        """The defense's own epochs for this preset, else the preset's."""
        return defense.preset_epochs.get(self.name, self.epochs)

    def options_for(self, plugin: type[Attack] | type[Defense]) -> dict[str, Any]:
        """The constructor arguments the plugin declares for this preset (recorded in each
        row's configs); the user's ``--set`` arguments override them."""
        return dict(plugin.presets.get(self.name, {}))


PRESETS = {
    preset.name: preset
    for preset in (
        Preset("smoke", 10000, 1, 200, "seconds: checks that everything runs, numbers are rough"),
        # Half the training split: with the cascade at AutoAttack's strength, the README's
        # first line (install included) stays within 10 minutes on 2 cores.
        Preset("cpu", 30000, 3, 150, "default: the whole matrix as a cascade in about 8 "
               "minutes on a 2-core CPU; half the training split, adversarial training 1 "
               "epoch", cascade=True),
        Preset("paper", None, 10, 500, "larger: 10 epochs (5 for FGSM-adversarial and certified "
               "training), 500 evaluation samples; over an hour on a 2-core CPU", cascade=True),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
