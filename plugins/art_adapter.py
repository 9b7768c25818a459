"""ART, IBM's Adversarial Robustness Toolbox (Nicolae et al. 2018,
https://github.com/Trusted-AI/adversarial-robustness-toolbox), as gated bench attacks:
``art-cw-l2``, ``art-deepfool``, ``art-elastic-net``, ``art-square``, ``art-hopskipjump``,
``art-boundary``, one per line of ``SPECS``: attacks bench has no own version of.

Install with ``pip install 'advbench[art]'``. Without ART this module raises
:class:`advbench.PluginUnavailable`: ``bench list`` shows the adapter as unavailable with that
install line, runs say nothing, and every other plugin loads.

ART's evasion attacks take a classifier object; the adapter builds one around the oracle, so
every model call is an oracle query of the attack's declared access, counted and judged:

- **gradient** (CW, DeepFool, EAD): ART's ``PyTorchClassifier`` (``clip_values=(0, 1)``) around
  :class:`advbench.adapters.OracleModel`, whose forward is ``oracle.logits``: each ``predict``
  and each ``class_gradient`` (one forward, a backward per class) is one query per row.
- **scores** (Square): ``BlackBoxClassifierNeuralNetwork`` whose predict is the log of
  ``oracle.scores``: their differences are the logit margins Square's loss reads.
- **decision** (HopSkipJump, Boundary): ``BlackBoxClassifier`` whose predict is a one-hot of
  ``oracle.labels``. Labels alone do not tell how many classes there are, so the columns are
  the classes of the batch's labels and targets plus one for *any other class* (and for an
  abstention): ART's decisions (is the label the original one? the target?) are exactly the
  model's.

Each sample pays for its own queries: attacks ART runs one image at a time anyway (all but
Square) are called one image at a time, every query charged to that image; Square's calls on the
whole batch are charged row by row, those on the images still unbroken to the clean image
nearest in the threat model's norm (see the torchattacks adapter). Gradient and score attacks
make one query more, charged to the batch's first sample, to learn the number of classes.

Randomness comes from ``ctx.generator``: numpy's global RNG, which ART draws from, is seeded
from it and restored. HopSkipJump and Boundary draw their random starting point from a fresh,
unseeded ``np.random.RandomState`` instead; so the adapter draws the start itself (uniform
noise from ``ctx.generator``, up to ``init_size`` label queries per sample, the same search) and
hands it to ART as ``x_adv_init``; a sample with no adversarial start is given back unchanged.

Minimum-norm attacks (CW, DeepFool, EAD, HopSkipJump, Boundary) may return points outside the
ε-ball: their output is projected onto the ball and the box (``projected: true`` in
``attack_config``) and each unprojected size goes to ``ctx.record["norm_before_projection"]``,
the row's ``median_norm``. EAD minimizes an L1+L2 objective; bench has no L1 threat model, so it
is offered under L2. Arguments are each ART constructor's own (``--set art-cw-l2.confidence=1``)
with ART's defaults, smaller ones only in the ``smoke`` and ``cpu`` presets where ART's
defaults cost hours on a CPU (``--set`` overrides them); ε, the norm, targeting, batching, the
seed and verbosity are the harness's.

Kept although the torchattacks adapter has a namesake: CW (ART's searches c by bisection and
the step by line search; torchattacks' keeps c fixed), DeepFool and Square, a second
implementation to cross-check the first. Left out: ART's FGSM, PGD, AutoPGD, C&W L∞, JSMA and
the like (bench or the torchattacks adapter have them); attacks that read a model's inner
layers (``get_activations``: feature adversaries), which the oracle does not expose; universal
and patch attacks, which make one perturbation for a data set, not one per image of a cell.
ZOO, SimBA, Sign-OPT and GeoDA (score and decision attacks, one image at a time) were not
tried: each is one more line of ``SPECS`` once its cost on a CPU and its randomness are
checked. CW and EAD end with ART's own success-rate log, a prediction on the clean and the
adversarial image: two queries per image, charged like the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

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
    import art
    from art.attacks import evasion
    from art.estimators.classification import (
        BlackBoxClassifier,
        BlackBoxClassifierNeuralNetwork,
        PyTorchClassifier,
    )
except ImportError as exc:
    # Listed by `bench list` as unavailable, with how to install it; runs are not warned.
    raise PluginUnavailable("the art-* attacks need ART: pip install 'advbench[art]'") from exc

UPSTREAM_NORM = {"linf": np.inf, "l2": 2}
HARNESS_ARGS = {"classifier", "estimator", "targeted", "norm", "eps", "batch_size", "verbose",
                "adv_criterion", "loss"}
SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Spec(AdaptedSpec):
    """One adapted ART attack (the common fields: :class:`AdaptedSpec`), by default one image
    at a time (ART loops over images anyway) and projected. ``random_start``: ART would draw its
    starting point unseeded, so the adapter draws it. ``presets``: smaller arguments where ART's
    defaults take hours on a CPU."""

    per_sample: bool = True
    minimum_norm: bool = True
    random_start: bool = False
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

SPECS = (
    Spec("art-cw-l2", "CarliniL2Method", ("l2",),
         "Carlini-Wagner L2 (2017), binary search over c, line search", targeted=True,
         # fewer bisection steps need a start nearer a useful c than ART's 0.01 (at 3 steps it
         # reaches 0.04 and finds nothing on the seed CNN)
         presets={"smoke": {"binary_search_steps": 3, "initial_const": 1.0},
                  "cpu": {"binary_search_steps": 5, "initial_const": 1.0}}),
    Spec("art-deepfool", "DeepFool", ("l2",), "DeepFool (Moosavi-Dezfooli et al. 2016)",
         presets={"smoke": {"max_iter": 20}, "cpu": {"max_iter": 50}}),
    Spec("art-elastic-net", "ElasticNet", ("l2",), "EAD elastic-net attack (Chen et al. 2018)",
         targeted=True, choices={"decision_rule": ("EN", "L1", "L2")},
         presets={"smoke": {"max_iter": 20, "binary_search_steps": 3, "initial_const": 1.0},
                  "cpu": {"max_iter": 50, "binary_search_steps": 5, "initial_const": 1.0}}),
    Spec("art-square", "SquareAttack", ("linf", "l2"),
         "Square Attack (Andriushchenko et al. 2020), random square updates", access="scores",
         randomized=True, per_sample=False, minimum_norm=False,
         # the class-count query, then per restart and iteration: all rows, old and new loss
         budget=lambda a: 1 + a.nb_restarts * 3 * (a.max_iter + 1)),
    Spec("art-hopskipjump", "HopSkipJump", ("linf", "l2"),
         "HopSkipJump (Chen, Jordan, Wainwright 2020), boundary gradient estimates",
         access="decision", targeted=True, randomized=True, random_start=True,
         presets={"smoke": {"max_iter": 5, "max_eval": 500}, "cpu": {"max_iter": 10,
                                                                     "max_eval": 1000}}),
    Spec("art-boundary", "BoundaryAttack", ("l2",), "Boundary Attack (Brendel et al. 2018)",
         access="decision", targeted=True, randomized=True, random_start=True,
         presets={"smoke": {"max_iter": 100}, "cpu": {"max_iter": 500}}),
)


class ArtAttack(AdaptedAttack):
    """Base of the adapted attacks; each subclass is built from one ``Spec``."""

    spec: ClassVar[Spec]

    def arguments(self, threat: ThreatModel, batch: int, targeted: bool) -> dict[str, Any]:
        """The ART constructor's arguments but the classifier: the user's, then the harness's."""
        return self.upstream_arguments({
            "targeted": targeted, "norm": UPSTREAM_NORM.get(threat.norm), "eps": threat.eps,
            "batch_size": max(1, batch), "verbose": False})

    def classifier(self, model: OracleModel, x: torch.Tensor, labels: torch.Tensor) -> Any:
        """The ART classifier of the attack's access, every call through ``model``."""
        shape = tuple(x.shape[1:])

        def tensor(batch: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(batch).to(device=x.device, dtype=x.dtype)

        if self.access == "decision":
            known = int(labels.max()) + 1  # the last column: any other class, or abstained

            def one_hot(batch: np.ndarray) -> np.ndarray:
                predicted = model(tensor(batch))
                column = torch.where((predicted >= 0) & (predicted < known), predicted, known)
                return nn.functional.one_hot(column, known + 1).cpu().numpy()

            return BlackBoxClassifier(one_hot, shape, known + 1, clip_values=(0.0, 1.0))
        model.owner = 0
        with torch.no_grad():
            classes = model(x[:1]).shape[1]  # one query, to size ART's outputs
        model.owner = None
        if self.access == "scores":
            return BlackBoxClassifierNeuralNetwork(
                lambda batch: model(tensor(batch)).cpu().numpy(), shape, classes,
                clip_values=(0.0, 1.0))
        return PyTorchClassifier(model, nn.CrossEntropyLoss(), shape, classes,
                                 clip_values=(0.0, 1.0),
                                 device_type="gpu" if x.is_cuda else "cpu")

    def random_starts(self, oracle: Oracle, x: torch.Tensor, goal: torch.Tensor, targeted: bool,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, the first of up to ``init_size`` uniform noise images the model labels
        adversarially, and whether one was found; one batched label query per draw."""
        starts, found = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(int(getattr(self, "init_size", 100))):
            active = torch.nonzero(~found).flatten()
            if active.numel() == 0:
                break
            noise = torch.rand(x[active].shape, generator=generator, device=x.device,
                               dtype=x.dtype)
            labels = oracle.labels(noise, active).to(x.device)
            hit = labels == goal[active] if targeted else labels != goal[active]
            starts[active[hit]], found[active[hit]] = noise[hit], True
        return starts, found

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        if threat.eps == 0 or x.shape[0] == 0:
            return x
        seed = draw_seed(ctx.generator)
        targeted = ctx.targets is not None
        goal = y if ctx.targets is None else ctx.targets
        model = OracleModel(oracle, x, threat.norm, self.access)
        here = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
        with seeded_global_rng(seed, x.device), here, torch.enable_grad():
            labels = goal if not targeted else torch.cat([y, goal])
            attack = self.upstream_class(self.classifier(model, x, labels),
                                         **self.arguments(threat, x.shape[0], targeted))
            clean, wanted = x.detach().cpu().numpy(), goal.cpu().numpy()
            if self.spec.random_start:
                starts, found = self.random_starts(oracle, x, goal, targeted, ctx.generator)
                begin = starts.cpu().numpy()
            if self.spec.per_sample:
                parts = []
                for i in range(x.shape[0]):
                    model.owner = i
                    extra = {}
                    if self.spec.random_start:
                        if not bool(found[i]):
                            parts.append(clean[i:i + 1])
                            continue
                        extra = {"x_adv_init": begin[i:i + 1]}
                    parts.append(attack.generate(clean[i:i + 1], wanted[i:i + 1], **extra))
                raw = np.concatenate(parts)
            else:
                raw = attack.generate(clean, wanted)
        x_adv, self.last_norms = project_minimum_norm(
            x, torch.from_numpy(raw).to(device=x.device, dtype=x.dtype), threat)
        ctx.record["norm_before_projection"] = self.last_norms  # the row's median_norm
        return x_adv


def field_for(parameter: inspect.Parameter, spec: Spec) -> tuple[str, Any, Any]:
    """A dataclass field for one ART argument: its type from ART's annotation, numbers bounded
    below by 0, strings limited to ``choices``."""
    name, default = parameter.name, parameter.default
    annotation = str(parameter.annotation)
    metadata: dict[str, Any] = {}
    if name in spec.choices:
        kind: Any = Literal[spec.choices[name]]
    elif annotation in SCALARS:
        kind = SCALARS[annotation]
        if kind in (int, float):
            metadata, default = {"ge": 0}, kind(default)
    else:
        raise TypeError(f"{spec.upstream}.{name}: no field type for {annotation!r}")
    return name, kind, dataclasses.field(default=default, metadata=metadata)


def adapted(spec: Spec) -> type[ArtAttack]:
    """The bench attack class of one ``Spec``: a dataclass of ART's arguments."""
    upstream = getattr(evasion, spec.upstream)
    fields = [field_for(p, spec) for p in inspect.signature(upstream).parameters.values()
              if p.name not in HARNESS_ARGS]
    return adapted_class(spec, ArtAttack, upstream, fields, title="ART", package="art",
                         version=art.__version__, prefix="ART", module=__name__,
                         presets=spec.presets)


ADAPTED: list[type[ArtAttack]] = [adapted(spec) for spec in SPECS]


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return list(ADAPTED)
