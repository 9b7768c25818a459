"""No defense: the model trained normally (or the user's model exactly as given)."""

from __future__ import annotations

from torch import nn

from advbench import Defense, Split, TrainContext, hookimpl


class NoDefense(Defense):
    name = "none"
    # The cpu preset trains on half the split: twice the epochs keep the steps (and accuracy).
    preset_epochs = {"cpu": 6}
    description = "standard training, no defense: the baseline every defense is measured against"

    def fit(self, model: nn.Module, train: Split, ctx: TrainContext) -> nn.Module:
        if ctx.pretrained:
            return model
        return super().fit(model, train, ctx)


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [NoDefense]
