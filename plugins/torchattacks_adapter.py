"""torchattacks (Kim 2020, https://github.com/Harry24k/adversarial-attacks-pytorch) as gated
bench attacks: ``ta-cw``, ``ta-deepfool``, ``ta-square``, ... one per line of ``SPECS``.

Install with ``pip install 'advbench[torchattacks]'``. Without torchattacks this module raises
:class:`advbench.PluginUnavailable`: ``bench list`` shows the adapter as unavailable with that
install line, runs say nothing, and every other plugin loads.

How an upstream attack is made honest:

- **Every model call is an oracle query.** torchattacks gets
  :class:`advbench.adapters.OracleModel`, an ``nn.Module`` holding no model, only the oracle:
  its forward is ``oracle.logits`` (gradient access) or, for score-based attacks, the log of
  ``oracle.scores`` (no gradient; a softmax of log-probabilities gives the probabilities back,
  and their differences are the logit margins, so Square, SPSA, Pixle and OnePixel compute
  exactly what they would from logits).
- **Each sample pays for its own queries.** Attacks that work one image at a time upstream
  (``per_sample``) are called one image at a time, and every query is charged to that image:
  exact. Batched attacks charge a full-batch call row by row; a call on fewer or more rows (Square
  and APGD on the images still unbroken, SPSA's sample batches) charges each row to the clean
  image it is nearest to in the threat model's norm — exact whenever no two clean images of a
  batch lie within 2ε of each other. Either way the total equals the rows the attack sent.
- **Randomness** comes from ``ctx.generator``: the global torch and numpy RNGs, which upstream
  draws from (and Square, FAB and APGD reseed), are seeded from it and restored afterwards.
- **Minimum-norm attacks** (CW, DeepFool, FAB, SparseFool, JSMA, Pixle) may return points
  outside the ε-ball: the adapter projects their output onto the ball (L∞ clamp, L2 rescale, L0
  keeping the ε most-changed pixels) and the box, and says so (``projected: true`` in
  ``attack_config``). The gate checks the result as it checks any attack's. The size of each
  unprojected perturbation is kept as ``last_norms`` (``inf`` where the attack gave the image back
  unchanged) and written to ``ctx.record["norm_before_projection"]``: the row's ``median_norm``
  (the field's way of comparing minimum-norm attacks) is their median over attacked samples.

Arguments are each upstream constructor's own (``--set ta-cw.c=10``), with upstream's defaults
unless ``SPECS`` says otherwise; ε, the norm, the seed and verbosity are the harness's.
Adapted attacks see one gradient per query, no EOT average, against randomized defenses.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from advbench import Attack, AttackContext, Oracle, PluginUnavailable, ThreatModel, hookimpl
from advbench.adapters import (
    AdaptedAttack,
    AdaptedSpec,
    OracleModel,
    adapted_class,
    draw_seed,
    project_minimum_norm,
    seeded_global_rng,
)

try:
    import torchattacks
except ImportError as exc:
    # Listed by `bench list` as unavailable, with how to install it; runs are not warned.
    raise PluginUnavailable("the ta-* attacks need torchattacks: pip install "
                            "'advbench[torchattacks]'") from exc

UPSTREAM_NORM = {"linf": "Linf", "l2": "L2"}
HARNESS_ARGS = {"model", "eps", "norm", "seed", "verbose", "pixels", "n_classes"}
INT_ARGS = {"steps", "n_queries", "n_restarts", "restarts", "max_iterations", "popsize",
            "inf_batch", "nb_iter", "nb_sample", "max_batch_size", "eot_iter",
            "binary_search_steps"}


@dataclass(frozen=True)
class Spec(AdaptedSpec):
    """One adapted torchattacks attack (the common fields: :class:`AdaptedSpec`);
    ``per_sample`` where upstream loops over images anyway, or couples the batch (CW's early stop
    on the summed loss). ``defaults``: where ours differ from upstream's."""

    always_targeted: bool = False  # upstream's untargeted mode aims at class (y + 1) mod K
    defaults: dict[str, Any] = field(default_factory=dict)

SPECS = (
    Spec("ta-cw", "CW", ("l2",), "Carlini-Wagner L2 (2017), Adam in tanh space, fixed c",
         targeted=True, per_sample=True, minimum_norm=True),
    Spec("ta-deepfool", "DeepFool", ("l2",), "DeepFool (Moosavi-Dezfooli et al. 2016)",
         per_sample=True, minimum_norm=True),
    Spec("ta-fab", "FAB", ("linf", "l2"), "Fast Adaptive Boundary (Croce, Hein 2020)",
         randomized=True, per_sample=True, minimum_norm=True),
    Spec("ta-sparsefool", "SparseFool", ("l0",), "SparseFool (Modas et al. 2019)",
         per_sample=True, minimum_norm=True),
    Spec("ta-jsma", "JSMA", ("l0",), "Jacobian saliency map (Papernot et al. 2016)",
         targeted=True, per_sample=True, minimum_norm=True, always_targeted=True),
    Spec("ta-pixle", "Pixle", ("l0",), "Pixle pixel rearrangement (Pomponi et al. 2022)",
         access="scores", targeted=True, randomized=True, per_sample=True, minimum_norm=True,
         choices={"pixel_mapping": ("random", "similarity", "similarity_random", "distance",
                                    "distance_random")}),
    Spec("ta-onepixel", "OnePixel", ("l0",), "differential evolution on ε pixels (Su et al.)",
         access="scores", targeted=True, randomized=True, per_sample=True),
    Spec("ta-square", "Square", ("linf", "l2"), "Square Attack (Andriushchenko et al. 2020)",
         access="scores", targeted=True, randomized=True, defaults={"n_queries": 1000},
         choices={"loss": ("margin", "ce")},
         budget=lambda a: 1 + a.n_restarts * (a.n_queries + 2)),
    Spec("ta-spsa", "SPSA", ("linf",), "SPSA gradient estimate (Uesato et al. 2018)",
         access="scores", targeted=True, randomized=True),
    Spec("ta-mifgsm", "MIFGSM", ("linf",), "momentum iterative FGSM (Dong et al. 2018)",
         targeted=True),
    Spec("ta-pgd", "PGD", ("linf",), "PGD with random start (Madry et al. 2018)",
         targeted=True, randomized=True),
    Spec("ta-pgdl2", "PGDL2", ("l2",), "PGD L2 with random start (Madry et al. 2018)",
         targeted=True, randomized=True),
    Spec("ta-apgd", "APGD", ("linf", "l2"), "Auto-PGD (Croce, Hein 2020)", randomized=True,
         choices={"loss": ("ce", "dlr")}),
)


class TorchattacksAttack(AdaptedAttack):
    """Base of the adapted attacks; each subclass is built from one ``Spec``."""

    spec: ClassVar[Spec]

    def arguments(self, threat: ThreatModel, seed: int) -> dict[str, Any]:
        """The upstream constructor's arguments: the user's, then the harness's."""
        return self.upstream_arguments({
            "eps": threat.eps, "norm": UPSTREAM_NORM.get(threat.norm), "seed": seed,
            "verbose": False, "pixels": int(threat.eps)})

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        if threat.eps == 0 or x.shape[0] == 0:
            return x
        seed = draw_seed(ctx.generator)
        model = OracleModel(oracle, x, threat.norm, self.access)
        with seeded_global_rng(seed, x.device), torch.enable_grad():
            attack = self.upstream_class(model, **self.arguments(threat, seed))
            goal = ctx.targets
            if goal is None and self.spec.always_targeted:
                model.owner = 0
                with torch.no_grad():
                    classes = model(x[:1]).shape[1]
                model.owner = None
                goal = (y + 1) % classes
            if goal is not None:
                attack.set_mode_targeted_by_label(quiet=True)
            labels = y if goal is None else goal
            if self.spec.per_sample:
                parts = []
                for i in range(x.shape[0]):
                    model.owner = i
                    parts.append(attack(x[i:i + 1], labels[i:i + 1]).detach())
                raw = torch.cat(parts)
            else:
                raw = attack(x, labels).detach()
        x_adv = self.finish(x, raw.to(device=x.device, dtype=x.dtype), threat)
        ctx.record["norm_before_projection"] = self.last_norms  # the row's median_norm
        return x_adv

    def finish(self, x: torch.Tensor, raw: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
        """Clip to the box, record each perturbation's size, project onto the ball."""
        x_adv, self.last_norms = project_minimum_norm(x, raw, threat)
        return x_adv


def field_for(name: str, default: Any, spec: Spec) -> tuple[str, Any, Any]:
    """A dataclass field for one upstream argument: its type from the default (counts are
    ints, other numbers floats), numbers bounded below by 0, strings limited to ``choices``."""
    default = spec.defaults.get(name, default)
    metadata: dict[str, Any] = {}
    if name in spec.choices:
        kind: Any = Literal[spec.choices[name]]
    elif isinstance(default, bool) or isinstance(default, str):
        kind = type(default)
    elif isinstance(default, (int, float)):
        kind, metadata = (int if name in INT_ARGS else float), {"ge": 0}
        default = kind(default)
    elif isinstance(default, tuple):
        kind = tuple[int | float, ...]
    else:
        raise TypeError(f"{spec.upstream}.{name}: no field type for default {default!r}")
    return name, kind, dataclasses.field(default=default, metadata=metadata)


def adapted(spec: Spec) -> type[TorchattacksAttack]:
    """The bench attack class of one ``Spec``: a dataclass of upstream's arguments."""
    upstream = getattr(torchattacks, spec.upstream)
    fields = [field_for(p.name, p.default, spec)
              for p in inspect.signature(upstream).parameters.values()
              if p.name not in HARNESS_ARGS]
    return adapted_class(spec, TorchattacksAttack, upstream, fields, title="torchattacks",
                         package="torchattacks", version=torchattacks.__version__, prefix="TA",
                         module=__name__)


ADAPTED = [adapted(spec) for spec in SPECS]


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return list(ADAPTED)
