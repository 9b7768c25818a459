"""The conformance kit: check an attack or defense class against bench's plugin contract.

Like scikit-learn's ``check_estimator``: ``check_attack(MyAttack)`` and ``check_defense(MyDefense)``
run every rule on a tiny deterministic world the kit builds itself (a small conv net, random 8×8
images in [0, 1], 3 classes, all seeded, all on the CPU) and raise :class:`ConformanceError`
(an ``AssertionError``) whose one-line message names the class and the rule it broke.
``attack_checks(cls)`` / ``defense_checks(cls)`` yield the same rules as ``(name, check)`` pairs,
so a plugin's test suite can give each rule its own pytest test::

    CHECKS = dict(attack_checks(MyAttack))

    @pytest.mark.parametrize("rule", CHECKS)
    def test_conformance(rule):
        CHECKS[rule]()

Attack rules: ``attributes``, ``constructible``, ``config``, ``threat-model`` (every declared norm
at ε = 0 and two larger ε, through the harness's gate), ``shapes``, ``inputs-unchanged``,
``sealed`` (it changes neither the model nor the tensors it is graded with, runs the model only
through the oracle and leaves the oracle's terms and counts alone: :mod:`advbench.seal`),
``isolated`` (in an attack process, as ``bench run`` runs a third party's attack, it gives what
it gives in-process), ``deterministic``, ``randomized`` (a class declaring ``randomized=False``
must not depend on the seed), ``batch-size-invariant`` (``randomized=False`` only), ``targeted`` and
``targeted-progress`` (``targeted=True`` only: it takes targets, and moves toward them);
``access`` and ``query-budget`` are reported by whichever run first breaks them.
Defense rules: ``attributes``, ``constructible``, ``config``, ``fit``, ``wrap``, ``randomized``,
``deterministic`` (``randomized=False`` only), ``global-rng`` (fit, wrap and forward draw
nothing from torch's global RNG), ``bpda-surrogate`` (a declared surrogate gives the wrapped
model's logit shape and an input gradient), ``training-loss`` (no ``.backward()`` inside
it), ``served`` (a defense with its own ``wrap`` or ``bpda_surrogate``, served from a model
server as ``bench run`` serves a third party's, answers as in-process). The kit leaves the
global RNG as it found it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import torch
from torch import nn

from advbench._util import one_line
from advbench.attack import Attack, AttackContext
from advbench.data import Split
from advbench.defense import (
    Defense,
    Reseedable,
    TrainContext,
    TrainSettings,
    bpda_surrogate,
    declared_surrogate,
)
from advbench.gate import GateResult
from advbench.oracle import ACCESS_LEVELS, AccessError, Oracle, QueryBudgetExceeded
from advbench.seal import Pristine, Seal, Watch
from advbench.threat import NORMS, ThreatModel

Check = Callable[[], None]

NUM_CLASSES = 3
SIDE = 8
BATCH = 8
TRAIN_SIZE = 64
SEED = 0
EPSILONS = {"linf": (0.0, 0.05, 0.3), "l2": (0.0, 0.5, 2.0), "l1": (0.0, 2.0, 10.0),
            "l0": (0.0, 1.0, 3.0)}
BATCH_TOLERANCE = 1e-5  # batched and split forward passes may differ by float rounding
# How far (nats) a targeted output may lower the target's mean log-probability on the kit's
# model: honest random attacks lower it by < 0.01, targeted FGSM with its sign flipped by 0.06.
TARGET_TOLERANCE = 0.01


class ConformanceError(AssertionError):
    """A plugin class breaks a rule of the contract; the message names the class and the rule."""


def fail(cls: type[Any], rule: str, reason: str) -> NoReturn:
    label = getattr(cls, "name", None)
    who = f"{label!r} ({cls.__qualname__})" if isinstance(label, str) else cls.__qualname__
    text = " ".join(reason.split())
    raise ConformanceError(f"{who} breaks rule '{rule}': {text}")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy machine the thread pool's
    synchronisation makes each tiny op hundreds of times slower: run the kit on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_threaded(checks: Iterator[tuple[str, Check]]) -> Iterator[tuple[str, Check]]:
    for name, check in checks:
        yield name, one_thread()(check)


# The tiny world ---------------------------------------------------------------------------------


def tiny_model(channels: int = 1, seed: int = SEED) -> nn.Module:
    """A small conv net (conv 4×3×3, ReLU, linear) for ``channels``×8×8 inputs, 3 classes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * SIDE * SIDE, NUM_CLASSES),
        )
    return model.eval()


def tiny_images(n: int, channels: int = 1, seed: int = SEED) -> torch.Tensor:
    """``n`` random images in [0, 1], float32 N×C×8×8."""
    return torch.rand(n, channels, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch an attack is run on: the frozen model, inputs, its own labels, other targets."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor


def tiny_batch(n: int = BATCH, channels: int = 1) -> Batch:
    """The model's own labels, so every sample counts as correctly classified (the runner only
    attacks those); targets are the next class."""
    model = tiny_model(channels)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    x = tiny_images(n, channels)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return Batch(model, x, y, (y + 1) % NUM_CLASSES)


# Rules shared by attacks and defenses -----------------------------------------------------------


def check_constructible(cls: type[Any]) -> Any:
    """``cls()`` works and every constructor parameter is keyword-only (so ``all`` builds it)."""
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [p.name for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if positional:
        fail(cls, "constructible", f"constructor parameters must be keyword-only, not "
             f"{', '.join(positional)} (write @dataclass(kw_only=True))")
    try:
        return cls()
    except Exception as exc:
        fail(cls, "constructible", f"{cls.__qualname__}() raised {one_line(exc)}; give every "
             "field a default")


def check_config(cls: type[Any], instance: Any) -> None:
    """``config()`` is a dict that JSON can write (it goes into every result row)."""
    try:
        config = instance.config()
    except Exception as exc:
        fail(cls, "config", f"config() raised {one_line(exc)}")
    if not isinstance(config, dict):
        fail(cls, "config", f"config() returned {type(config).__name__}, not a dict")
    try:
        json.dumps(config, sort_keys=True)
    except (TypeError, ValueError) as exc:
        fail(cls, "config", f"config() is not JSON-serialisable: {one_line(exc)}")


def check_common_attributes(cls: type[Any], base: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConformanceError(f"{cls!r} breaks rule 'attributes': not a subclass of "
                               f"advbench.{base.__name__}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        fail(cls, "attributes", f"'name' must be a non-empty string, got {name!r}")
    if not isinstance(getattr(cls, "description", ""), str):
        fail(cls, "attributes", "'description' must be a string")
    if not isinstance(getattr(cls, "randomized", None), bool):
        fail(cls, "attributes", "'randomized' must be a bool, got "
             f"{getattr(cls, 'randomized', None)!r}")


# Attacks ----------------------------------------------------------------------------------------


def check_attack_attributes(cls: type[Any]) -> None:
    check_common_attributes(cls, Attack)
    norms = getattr(cls, "norms", None)
    if not isinstance(norms, (tuple, list)) or not norms:
        fail(cls, "attributes", f"'norms' must be a non-empty tuple, got {norms!r}")
    unknown = [norm for norm in norms if norm not in NORMS]
    if unknown:
        fail(cls, "attributes", f"unknown norm(s) {', '.join(map(repr, unknown))} in 'norms'; "
             f"choose among {', '.join(NORMS)}")
    if cls.access not in ACCESS_LEVELS:
        fail(cls, "attributes", f"'access' is {cls.access!r}; choose one of "
             f"{', '.join(ACCESS_LEVELS)}")
    for flag in ("targeted", "single_step", "against_randomized", "minimum_norm"):
        if not isinstance(getattr(cls, flag), bool):
            fail(cls, "attributes", f"{flag!r} must be a bool, got {getattr(cls, flag)!r}")


class AttackProbe:
    """Runs one attack class on the tiny world the way the runner would, mapping every
    failure to the rule it breaks. Construction and the batches are built once, lazily."""

    def __init__(self, cls: type[Any], norms: tuple[str, ...] | None,
                 params: Mapping[str, Any] | None) -> None:
        self.cls, self.requested, self.params = cls, norms, dict(params or {})

    @functools.cached_property
    def attack(self) -> Attack:
        """The instance the behavioural rules use, after the static rules pass."""
        check_attack_attributes(self.cls)
        instance: Attack = check_constructible(self.cls)
        if not self.params:
            return instance
        try:
            built: Attack = self.cls(**self.params)
            return built
        except Exception as exc:
            fail(self.cls, "constructible", f"{self.cls.__qualname__}(**params) raised "
                 f"{one_line(exc)}")

    @functools.cached_property
    def norms(self) -> tuple[str, ...]:
        """The declared norms the behavioural rules run, once the static rules pass."""
        _ = self.attack
        declared = tuple(self.cls.norms)
        if self.requested is None:
            return declared
        extra = set(self.requested) - set(declared)
        if extra:
            raise ValueError(f"norms {sorted(extra)} are not declared by {self.cls.__qualname__}")
        return tuple(norm for norm in declared if norm in self.requested)

    @functools.cached_property
    def batch(self) -> Batch:
        return tiny_batch()

    def threat(self, norm: str, level: int = 1) -> ThreatModel:
        return ThreatModel(norm, EPSILONS[norm][level])

    def run(self, rule: str, batch: Batch, threat: ThreatModel, *, seed: int = SEED,
            targeted: bool = False, global_seed: int = 0, raw: bool = False,
            watch: Watch | None = None, isolated: bool = False) -> torch.Tensor:
        """The attack's gated output (or, ``raw``, what ``run`` returned on the very inputs);
        ``watch``: the seal's watch over this batch; ``isolated``: run in an attack process,
        as ``bench run`` runs third-party attacks (``advbench.run_isolated``)."""
        attack = self.attack
        oracle = Oracle(batch.model, self.cls.access, len(batch.x),
                        attack.max_queries, guard=watch)
        self.oracle = oracle
        ctx = AttackContext(torch.Generator().manual_seed(seed),
                            batch.targets if targeted else None)
        where = f"{threat.norm} ε={threat.eps:g}" + (" targeted" if targeted else "")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)  # an attack drawing from the global RNG shows
            try:
                if raw:
                    return attack.run(oracle, batch.x, batch.y, threat, ctx)
                if isolated:
                    import advbench  # the machinery's door (advbench/__init__.py)

                    result: GateResult = advbench.run_isolated(attack, oracle, batch.x,
                                                               batch.y, threat, ctx)
                else:
                    result = attack.perturb(oracle, batch.x, batch.y, threat, ctx)
            except AccessError as exc:
                fail(self.cls, "access", f"declared access={self.cls.access!r} but asked the "
                     f"oracle for more ({exc}) at {where}")
            except QueryBudgetExceeded as exc:
                fail(self.cls, "query-budget", f"went past its own max_queries at {where} ({exc})")
            except ConformanceError:
                raise
            except Exception as exc:
                fail(self.cls, rule, f"raised {one_line(exc)} at {where}")
        if result.x_adv is None:
            fail(self.cls, "threat-model", f"the gate rejected its output at {where}: "
                 f"{result.reason}")
        return result.x_adv

    # The behavioural rules --------------------------------------------------------------------

    def threat_model(self) -> None:
        """Every declared norm at every ε of the kit, ε = 0 included, passes the gate."""
        for norm in self.norms:
            for level in range(len(EPSILONS[norm])):
                self.run("threat-model", self.batch, self.threat(norm, level))

    def shapes(self) -> None:
        """A single sample and a 3-channel batch work as well as the 1-channel batch."""
        threat = self.threat(self.norms[0])
        for batch in (tiny_batch(1), tiny_batch(3, channels=3)):
            out = self.run("shapes", batch, threat)
            if out.shape != batch.x.shape:  # the gate checks this too; say which shape failed
                fail(self.cls, "shapes", f"output {tuple(out.shape)} for {tuple(batch.x.shape)}")

    def inputs_unchanged(self) -> None:
        """``run`` must not write into x, y or the targets (the harness keeps using them)."""
        modes = (False, True) if self.cls.targeted else (False,)
        for norm in self.norms:
            for targeted in modes:
                batch = dataclasses.replace(  # copies, so a culprit spoils no other rule
                    self.batch, x=self.batch.x.clone(), y=self.batch.y.clone(),
                    targets=self.batch.targets.clone())
                originals = self.batch.x, self.batch.y, self.batch.targets
                # a crash with targets breaks the 'targeted' rule, not this one
                self.run("targeted" if targeted else "inputs-unchanged", batch,
                         self.threat(norm), raw=True, targeted=targeted)
                for label, before, after in zip(("x", "y", "targets"), originals,
                                                (batch.x, batch.y, batch.targets), strict=True):
                    if not torch.equal(before, after):
                        fail(self.cls, "inputs-unchanged", f"run() modified its input {label} "
                             f"in place ({norm}); work on a copy")

    def sealed(self) -> None:
        """Run under the harness's seal (targeted too, when declared), each time on a fresh
        tiny world: the model, x, y and targets unchanged, every forward through the oracle,
        the oracle's access, budget and counts untouched."""
        modes = (False, True) if self.cls.targeted else (False,)
        for norm in self.norms:
            for targeted in modes:
                batch = tiny_batch()
                seal = Seal(batch.model, [Pristine({"x": batch.x, "y": batch.y,
                                                     "targets": batch.targets})])
                with seal.cell():
                    watch = seal.watch(self.cls.access, self.attack.max_queries,
                                       1, len(batch.x))
                    self.run("sealed", batch, self.threat(norm), targeted=targeted, watch=watch)
                    reason = seal.verdict(watch, self.oracle, self.attack)
                if reason is not None:
                    fail(self.cls, "sealed", f"{reason} ({norm}{' targeted' if targeted else ''})")

    def isolated(self) -> None:
        """Run in an attack process (the default for a third party's attack in ``bench run``:
        docs/isolation.md), through the oracle's public interface only, it gives what it gives
        in-process. Its class must be importable by module path (defined at a module's top)."""
        for norm in self.norms:
            threat = self.threat(norm)
            here = self.run("isolated", self.batch, threat)
            there = self.run("isolated", self.batch, threat, isolated=True)
            if not torch.equal(here, there):
                fail(self.cls, "isolated", f"its output in an attack process differs from its "
                     f"output in-process ({norm}): use only the oracle's public interface")

    def deterministic(self) -> None:
        """The same ``ctx.generator`` seed gives the same output, whatever the global RNG."""
        for norm in self.norms:
            threat = self.threat(norm)
            first = self.run("deterministic", self.batch, threat, global_seed=1)
            second = self.run("deterministic", self.batch, threat, global_seed=2)
            if not torch.equal(first, second):
                fail(self.cls, "deterministic", f"two runs with the same seed differ ({norm}); "
                     "draw random numbers from ctx.generator only")

    def randomized(self) -> None:
        """A class declaring ``randomized=False`` gives the same output under any seed."""
        if self.cls.randomized:
            return
        for norm in self.norms:
            threat = self.threat(norm)
            first = self.run("randomized", self.batch, threat, seed=1)
            second = self.run("randomized", self.batch, threat, seed=2)
            if not torch.equal(first, second):
                fail(self.cls, "randomized", f"declares randomized=False but its output depends "
                     f"on ctx.generator's seed ({norm})")

    def batch_size_invariant(self) -> None:
        """A deterministic attack gives each sample the same result in a batch of 8 as in two
        batches of 4 (randomized attacks may legitimately draw differently)."""
        if self.cls.randomized:
            return
        whole = self.batch
        halves = [Batch(whole.model, whole.x[part], whole.y[part], whole.targets[part])
                  for part in (slice(0, BATCH // 2), slice(BATCH // 2, BATCH))]
        for norm in self.norms:
            threat = self.threat(norm)
            together = self.run("batch-size-invariant", whole, threat)
            apart = torch.cat([self.run("batch-size-invariant", half, threat) for half in halves])
            gap = float((together - apart).abs().max())
            if gap > BATCH_TOLERANCE:
                fail(self.cls, "batch-size-invariant", f"a batch of {BATCH} and two of "
                     f"{BATCH // 2} differ by up to {gap:.3g} ({norm}); samples must not "
                     "influence each other")

    @functools.cached_property
    def targeted_outputs(self) -> dict[str, torch.Tensor]:
        """Each declared norm's targeted output, run once for both targeted rules."""
        return {norm: self.run("targeted", self.batch, self.threat(norm), targeted=True)
                for norm in self.norms}

    def targeted(self) -> None:
        """A class declaring ``targeted=True`` runs with ``ctx.targets`` for every norm."""
        if self.cls.targeted:
            _ = self.targeted_outputs

    def targeted_progress(self) -> None:
        """A targeted attack moves samples toward their targets: the target class's mean
        log-probability must not fall (a gradient attack raises it, random noise leaves it
        about where it was, a sign error — climbing the target's loss — lowers it)."""
        if not self.cls.targeted:
            return
        batch = self.batch

        def target_log_prob(x: torch.Tensor) -> float:
            with torch.no_grad():
                scores = batch.model(x).log_softmax(dim=1)
            return float(scores.gather(1, batch.targets[:, None]).mean())

        clean = target_log_prob(batch.x)
        for norm, x_adv in self.targeted_outputs.items():
            drop = clean - target_log_prob(x_adv)
            if drop > TARGET_TOLERANCE:
                fail(self.cls, "targeted-progress", f"its targeted output lowers the target "
                     f"class's mean log-probability by {drop:.3g} ({norm} "
                     f"ε={self.threat(norm).eps:g}): it moves away from ctx.targets; descend "
                     "the loss of the targets (or ascend their score), not ascend it")

    def checks(self) -> Iterator[tuple[str, Check]]:
        yield "attributes", lambda: check_attack_attributes(self.cls)
        yield "constructible", lambda: check_constructible(self.cls)
        yield "config", lambda: check_config(self.cls, self.attack)
        yield "threat-model", self.threat_model
        yield "shapes", self.shapes
        yield "inputs-unchanged", self.inputs_unchanged
        yield "sealed", self.sealed
        yield "isolated", self.isolated
        yield "deterministic", self.deterministic
        yield "randomized", self.randomized
        yield "batch-size-invariant", self.batch_size_invariant
        yield "targeted", self.targeted
        yield "targeted-progress", self.targeted_progress


def attack_checks(
    cls: type[Any], *, norms: tuple[str, ...] | None = None, params: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, Check]]:
    """The attack rules as ``(name, check)`` pairs; each check raises ConformanceError.

    ``norms`` limits the behavioural rules to some declared norms; ``params`` builds the
    instance they run with (e.g. a smaller budget for speed), while ``constructible`` still
    checks that ``cls()`` works.
    """
    probe = AttackProbe(cls, None if norms is None else tuple(norms), params)
    yield from single_threaded(probe.checks())


def check_attack(
    cls: type[Any], *, norms: tuple[str, ...] | None = None, params: Mapping[str, Any] | None = None
) -> None:
    """Run every attack rule on ``cls``; raise ConformanceError at the first one it breaks."""
    for _, check in attack_checks(cls, norms=norms, params=params):
        check()


# Defenses ---------------------------------------------------------------------------------------


def check_defense_attributes(cls: type[Any]) -> None:
    check_common_attributes(cls, Defense)
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(getattr(cls, "wrapper_fields", ())) - fields)
    if unknown:
        fail(cls, "attributes", f"'wrapper_fields' names no field: {', '.join(unknown)}")


def tiny_split() -> Split:
    """64 random 1×8×8 images with random labels among 3 classes."""
    generator = torch.Generator().manual_seed(SEED + 1)
    return Split(tiny_images(TRAIN_SIZE, seed=SEED + 1),
                 torch.randint(0, NUM_CLASSES, (TRAIN_SIZE,), generator=generator))


def train_context() -> TrainContext:
    settings = TrainSettings(epochs=1, batch_size=16, n_train=TRAIN_SIZE)
    return TrainContext(settings, torch.device("cpu"), seed=SEED)


class DefenseProbe:
    """Fits one defense class on the tiny split as the runner would (global RNG seeded before
    building and fitting), mapping every failure to the rule it breaks."""

    def __init__(self, cls: type[Any], params: Mapping[str, Any] | None) -> None:
        self.cls, self.params = cls, dict(params or {})
        self.x = tiny_images(BATCH, seed=SEED + 2)
        self.global_draws: set[str] = set()  # which of fit, wrap, forward drew from it

    @contextlib.contextmanager
    def global_rng_watched(self, step: str, seed: int = SEED) -> Iterator[None]:
        """Run ``step`` on a copy of the global RNG seeded as the runner does (which hides such
        draws from 'deterministic'), noting whether it drew from it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = torch.random.get_rng_state()
            yield
            if not torch.equal(state, torch.random.get_rng_state()):
                self.global_draws.add(step)

    def instance(self) -> Defense:
        check_defense_attributes(self.cls)
        default: Defense = check_constructible(self.cls)
        if not self.params:
            return default
        try:
            built: Defense = self.cls(**self.params)
            return built
        except Exception as exc:
            fail(self.cls, "constructible", f"{self.cls.__qualname__}(**params) raised "
                 f"{one_line(exc)}")

    def fit(self) -> tuple[Defense, nn.Module]:
        """A fresh instance fitted on a fresh tiny model (the instance too: the runner wraps
        with the instance that fitted, which may have kept state); checks the 'fit' rule."""
        defense, split = self.instance(), tiny_split()
        before = split.x.clone(), split.y.clone()
        with self.global_rng_watched("fit"):
            model = tiny_model()
            try:
                fitted = defense.fit(model, split, train_context())
            except Exception as exc:
                fail(self.cls, "fit", f"fit() raised {one_line(exc)}")
        if not isinstance(fitted, nn.Module):
            fail(self.cls, "fit", f"fit() returned {type(fitted).__name__}, not an nn.Module")
        if any(module.training for module in fitted.modules()):
            fail(self.cls, "fit", "fit() returned a module in train mode; call model.eval()")
        if not (torch.equal(before[0], split.x) and torch.equal(before[1], split.y)):
            fail(self.cls, "fit", "fit() modified the training data in place")
        self.check_output("fit", fitted, "the fitted model")
        return defense, fitted

    @functools.cached_property
    def fitted(self) -> tuple[Defense, nn.Module]:
        return self.fit()

    def wrap(self, defense: Defense, fitted: nn.Module) -> nn.Module:
        try:
            with self.global_rng_watched("wrap"):
                wrapped = defense.wrap(fitted)
        except Exception as exc:
            fail(self.cls, "wrap", f"wrap() raised {one_line(exc)}")
        if not isinstance(wrapped, nn.Module):
            fail(self.cls, "wrap", f"wrap() returned {type(wrapped).__name__}, not an nn.Module")
        return wrapped.eval()

    @functools.cached_property
    def wrapped(self) -> nn.Module:
        return self.wrap(*self.fitted)

    def outputs(self, rule: str, model: nn.Module, global_seed: int = SEED) -> torch.Tensor:
        x = self.x.clone()
        try:
            with torch.no_grad(), self.global_rng_watched("the forward pass", global_seed):
                logits: torch.Tensor = model(x)
        except Exception as exc:
            fail(self.cls, rule, f"forward pass raised {one_line(exc)}")
        if not torch.equal(x, self.x):
            fail(self.cls, rule, "the model modified its input in place")
        return logits

    def check_output(self, rule: str, model: nn.Module, what: str) -> torch.Tensor:
        logits = self.outputs(rule, model)
        expected = (BATCH, NUM_CLASSES)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            fail(self.cls, rule, f"{what} returned {shape}, expected logits of shape {expected}")
        if not bool(torch.isfinite(logits).all()):
            fail(self.cls, rule, f"{what} returned non-finite logits")
        return logits

    def check_fit(self) -> None:
        """``fit`` returns an eval-mode module giving finite (N, 3) logits."""
        _ = self.fitted

    def check_wrap(self) -> None:
        """``wrap`` gives a module with logits of the same shape; its ``predict``, if any,
        returns one label per sample, −1 meaning abstain."""
        wrapped = self.wrapped
        self.check_output("wrap", wrapped, "the wrapped model")
        predict = getattr(wrapped, "predict", None)
        if not callable(predict):
            return
        with torch.no_grad():
            labels = predict(self.x.clone())
        if (not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (BATCH,)
                or labels.dtype.is_floating_point):
            fail(self.cls, "wrap", "predict() must return one integer label per sample")
        if bool(((labels < -1) | (labels >= NUM_CLASSES)).any()):
            fail(self.cls, "wrap", "predict() returned labels outside [-1, num_classes)")

    def randomized(self) -> None:
        """A class declaring ``randomized=False`` answers the same twice (the runner detects
        randomness this way and switches gradient attacks to EOT)."""
        if self.cls.randomized:
            return
        first, second = (self.outputs("randomized", self.wrapped, global_seed=seed)
                         for seed in (1, 2))
        if not torch.equal(first, second):
            fail(self.cls, "randomized", "declares randomized=False but two forward passes "
                 "of the defended model differ")

    def deterministic(self) -> None:
        """Two fits from the same seed give identical predictions (cached models rely on it)."""
        if self.cls.randomized:
            return
        again = self.wrap(*self.fit())
        if not torch.equal(self.outputs("deterministic", self.wrapped),
                           self.outputs("deterministic", again)):
            fail(self.cls, "deterministic", "two fits with the same seed predict differently; "
                 "seed every random draw from ctx.seed")

    def global_rng(self) -> None:
        """Neither ``fit``, ``wrap`` nor the defended model's forward pass draws from torch's
        global RNG (its state depends on whatever ran before, so the model would too)."""
        self.outputs("global-rng", self.wrapped)
        if self.global_draws:
            fail(self.cls, "global-rng", f"{' and '.join(sorted(self.global_draws))} drew from "
                 "torch's global RNG; draw from ctx.generator in training (a torch.Generator "
                 "seeded from ctx.seed), and from the wrapper's own generator, restarted by "
                 "its reseed(seed), at inference")

    def bpda_surrogate(self) -> None:
        """A declared ``bpda_surrogate`` of the fitted model is an ``nn.Module`` giving finite
        logits of the wrapped model's shape, differentiable with respect to the input (gradient
        attacks differentiate it under BPDA)."""
        defense, fitted = self.fitted
        try:
            surrogate = bpda_surrogate(defense, fitted)
        except Exception as exc:
            fail(self.cls, "bpda-surrogate", f"bpda_surrogate() raised {one_line(exc)}")
        if surrogate is fitted:
            return
        self.check_output("bpda-surrogate", surrogate, "the BPDA surrogate")
        x = self.x.clone().requires_grad_(True)
        try:
            with torch.enable_grad(), torch.random.fork_rng(devices=[]):
                (grad,) = torch.autograd.grad(surrogate(x).sum(), x)
        except RuntimeError as exc:
            fail(self.cls, "bpda-surrogate", f"the BPDA surrogate is not differentiable with "
                 f"respect to its input ({one_line(exc)})")
        if not bool(torch.isfinite(grad).all()):
            fail(self.cls, "bpda-surrogate", "the BPDA surrogate's input gradient is not finite")

    def training_loss(self) -> None:
        """``training_loss`` returns a scalar attached to the graph and leaves ``backward`` to
        the training loop (a ``.backward()`` left inside frees the graph or doubles the
        step)."""
        defense, split = self.instance(), tiny_split()
        model = tiny_model().train()
        with torch.random.fork_rng(devices=[]), defense.using(train_context()):
            torch.manual_seed(SEED)
            try:
                loss = defense.training_loss(model, split.x[:16], split.y[:16], 0.5)
            except Exception as exc:
                fail(self.cls, "training-loss", f"training_loss() raised {one_line(exc)}")
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad):
            fail(self.cls, "training-loss", "training_loss() must return a scalar tensor "
                 "attached to the model's graph")
        parameters = list(model.parameters())
        try:
            grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        except RuntimeError as exc:
            fail(self.cls, "training-loss", f"the training loop cannot backpropagate the loss "
                 f"training_loss() returned ({one_line(exc)}); remove its .backward(): the "
                 "loop calls it")
        held = [(grad, p.grad) for grad, p in zip(grads, parameters, strict=True)
                if grad is not None and p.grad is not None]
        if held and all(torch.allclose(grad, left) for grad, left in held):
            fail(self.cls, "training-loss", "the parameters already hold the gradient of the "
                 "loss training_loss() returned: remove its .backward(), the loop calls it")

    def served(self) -> None:
        """Served from a model server, as ``bench run`` serves a third party's defense that
        wraps its model (docs/isolation.md), the defended model and its BPDA surrogate give
        what they give in-process: logits, input gradient, ``predict``. Its class must be
        importable by module path (defined at a module's top)."""
        if all(getattr(self.cls, method) is getattr(Defense, method)
               for method in ("wrap", "bpda_surrogate")):
            return
        defense, fitted = self.fitted
        here = [self.wrap(defense, fitted), declared_surrogate(defense, fitted)]
        import advbench  # the machinery's door (advbench/__init__.py)

        try:
            with advbench.served_defense(defense, fitted) as there:
                for what, mine, theirs in zip(("the defended model", "the BPDA surrogate"),
                                              here, there, strict=True):
                    if (mine is None) != (theirs is None) or mine is not None and not all(
                            torch.equal(a, b) for a, b in zip(
                                self.answers(mine), self.answers(theirs), strict=True)):
                        fail(self.cls, "served", f"{what} served from a model server answers "
                             "differently than in-process: keep wrap's module deterministic "
                             "given its seed and the global random state")
        except ConformanceError:
            raise
        except Exception as exc:
            fail(self.cls, "served", f"serving it failed: {one_line(exc)}")

    def answers(self, model: nn.Module) -> list[torch.Tensor]:
        """What the harness reads of a defended model: logits, an input gradient and its own
        ``predict``, from the same seeds."""
        if isinstance(model, Reseedable):
            model.reseed(SEED)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            x = self.x.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                (grad,) = torch.autograd.grad(logits.sum(), x, allow_unused=True,
                                              materialize_grads=True)
            predict = getattr(model, "predict", None)
            with torch.no_grad():
                labels = predict(self.x.clone()) if callable(predict) else grad[:0]
        return [logits.detach(), grad, labels]

    def checks(self) -> Iterator[tuple[str, Check]]:
        yield "attributes", lambda: check_defense_attributes(self.cls)
        yield "constructible", lambda: check_constructible(self.cls)
        yield "config", lambda: check_config(self.cls, self.instance())
        yield "fit", self.check_fit
        yield "wrap", self.check_wrap
        yield "randomized", self.randomized
        yield "deterministic", self.deterministic
        yield "global-rng", self.global_rng
        yield "bpda-surrogate", self.bpda_surrogate
        yield "training-loss", self.training_loss
        yield "served", self.served


def defense_checks(
    cls: type[Any], *, params: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, Check]]:
    """The defense rules as ``(name, check)`` pairs; each check raises ConformanceError."""
    yield from single_threaded(DefenseProbe(cls, params).checks())


def check_defense(cls: type[Any], *, params: Mapping[str, Any] | None = None) -> None:
    """Run every defense rule on ``cls``; raise ConformanceError at the first one it breaks."""
    for _, check in defense_checks(cls, params=params):
        check()
