"""The seal: an attack can neither change what it is graded with nor dodge the oracle's counts.

Plugins run in the harness's process, and ``gc.get_objects()`` reaches every tensor, so hiding
things does not work. Instead the harness keeps bit-exact pristine copies of the defended model's
tensors (taken once per defended model) and of the tensors a cell is graded with, compares them
after every attack batch, restores them when they differ and marks the cell invalid. Forward
pre-hooks on every submodule record any forward pass that does not come through the oracle, and
the oracle's charges are tallied here, outside the object the attack holds.

Public, like the gate, so that the conformance kit (:mod:`advbench.conformance`) checks an
attack under the very seal the harness grades with; a plugin itself never needs it.

What no in-process check can catch (torch functional ops applied to parameter tensors found via
``gc``, monkeypatching the harness, threads left running) needs a process boundary; see
docs/bad-inputs.md, "Plugins that cheat".
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from advbench.oracle import ACCESS_LEVELS, counts_tensor

SHOWN = 3  # names listed in a reason before "and N more"
_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


class SealBroken(RuntimeError):
    """The pristine copy itself was changed: the defended model can no longer be restored."""


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality: a NaN equals the same NaN, and 0.0 differs from −0.0."""
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    bits = _BITS.get(a.element_size()) if a.is_floating_point() else None
    return torch.equal(a.view(bits), b.view(bits)) if bits else torch.equal(a, b)


def fingerprint(tensors: Iterable[torch.Tensor]) -> bytes:
    """A digest of the tensors' dtypes, shapes and bytes (to check the pristine copies once per
    cell: a hostile plugin that changed a model and its copy alike would pass ``identical``)."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        flat = tensor.detach().contiguous().view(-1)
        digest.update(flat.view(torch.uint8).cpu().numpy().tobytes())
    return digest.digest()


def listed(names: list[str]) -> str:
    """``a, b, c and 4 more``: a reason names what changed without running on."""
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def put_back(original: torch.Tensor, copy: torch.Tensor) -> None:
    """Write ``copy`` into ``original`` in place (by ``.data`` when its dtype or shape moved)."""
    with torch.no_grad():
        if original.dtype == copy.dtype and original.shape == copy.shape and (
                original.device == copy.device):
            original.copy_(copy)
        else:
            original.data = copy.clone()


class Pristine:
    """Named tensors the harness relies on, with a bit-exact copy of each and a digest of the
    copies. ``originals`` are the harness's own references: grade with them, not with whatever
    a container reachable by plugins holds now."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.originals = dict(tensors)
        self.copies = {name: t.detach().clone() for name, t in self.originals.items()}
        self.digest = fingerprint(self.copies.values())

    def changed(self) -> list[str]:
        return [name for name, t in self.originals.items() if not identical(t, self.copies[name])]

    def restore(self) -> None:
        for name in self.changed():
            put_back(self.originals[name], self.copies[name])

    def intact(self) -> bool:
        return fingerprint(self.copies.values()) == self.digest


@dataclass
class Layout:
    """One module as sealed: what its dicts hold (by identity), its mode, its own ``forward``."""

    training: bool
    parameters: dict[str, Any]
    buffers: dict[str, Any]
    modules: dict[str, Any]
    pre_hooks: dict[int, Any]
    hooks: dict[int, Any]
    forward: Any

    @classmethod
    def of(cls, module: nn.Module) -> Layout:
        return cls(module.training, dict(module._parameters), dict(module._buffers),
                   dict(module._modules), dict(module._forward_pre_hooks),
                   dict(module._forward_hooks), vars(module).get("forward"))

    def differences(self, module: nn.Module, name: str) -> list[str]:
        found = []
        if module.training != self.training:
            found.append(f"train/eval mode of {name}")
        for kind, saved, now in (("parameters", self.parameters, module._parameters),
                                 ("buffers", self.buffers, module._buffers),
                                 ("submodules", self.modules, module._modules)):
            if saved.keys() != now.keys() or any(now[k] is not v for k, v in saved.items()):
                found.append(f"{kind} of {name} replaced")
        if vars(module).get("forward") is not self.forward:
            found.append(f"forward of {name} replaced")
        return found

    def restore(self, module: nn.Module) -> None:
        module.training = self.training
        tables: tuple[tuple[dict[Any, Any], dict[Any, Any]], ...] = (
            (self.parameters, module._parameters), (self.buffers, module._buffers),
            (self.modules, module._modules), (self.pre_hooks, module._forward_pre_hooks),
            (self.hooks, module._forward_hooks))
        for saved, now in tables:
            now.clear()
            now.update(saved)
        if self.forward is None:
            vars(module).pop("forward", None)
        else:
            vars(module)["forward"] = self.forward


def module_name(name: str, module: nn.Module) -> str:
    return f"{name} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"


class ModelSeal:
    """The defended model as it was sealed: every module's layout, every parameter and buffer
    (bit-exact copies), and which parameters required gradients. Taken once per defended
    model, before any attack sees it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = list(model.named_modules())
        self.layouts = [Layout.of(module) for _, module in self.modules]
        tensors = {}
        for prefix, module in self.modules:
            for kind, table in (("parameter", module._parameters), ("buffer", module._buffers)):
                for key, tensor in table.items():
                    if tensor is not None:
                        tensors[f"{kind} {prefix + '.' if prefix else ''}{key}"] = tensor
        self.tensors = Pristine(tensors)
        self.requires_grad = {name: t.requires_grad for name, t in tensors.items()}

    def changes(self) -> list[str]:
        """What differs from the sealed model, named (empty when nothing does)."""
        found = [difference for (name, module), layout in zip(self.modules, self.layouts,
                                                               strict=True)
                 for difference in layout.differences(module, module_name(name, module))]
        found += self.tensors.changed()
        found += [f"requires_grad of {name}" for name, t in self.tensors.originals.items()
                  if t.requires_grad != self.requires_grad[name]]
        return found

    def restore(self) -> None:
        for (_, module), layout in zip(self.modules, self.layouts, strict=True):
            layout.restore(module)
        self.tensors.restore()
        for name, tensor in self.tensors.originals.items():
            tensor.requires_grad_(self.requires_grad[name])


def rank(level: str) -> int:
    """Higher is more access: decision 0, scores 1, gradient 2."""
    return len(ACCESS_LEVELS) - 1 - ACCESS_LEVELS.index(level)


@dataclass
class Watch:
    """One attack batch as the harness sees it: the terms it was given (kept here, not on the
    oracle the attack holds), the queries charged per sample, and the rules it broke. The
    counts are NumPy's, so that an attack inside ``torch.func`` never sees them. It is the
    :class:`advbench.oracle.Watch` an :class:`~advbench.oracle.Oracle` is given in a cell."""

    access: str
    max_queries: int | None
    eot_samples: int
    counts: np.ndarray
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    depth: int = 0  # > 0 while the oracle runs the model
    allowance: int | None = 0  # rows the model may still see in this query (None: any)
    violations: list[str] = field(default_factory=list)

    @property
    def queries(self) -> torch.Tensor:
        """The harness's tally per sample, as the oracle shows its own (dtype, device)."""
        return counts_tensor(self.counts, self.device)

    def violate(self, reason: str) -> None:
        if reason not in self.violations:
            self.violations.append(reason)

    @contextlib.contextmanager
    def query(self, level: str, positions: np.ndarray, rows: int | None) -> Iterator[None]:
        """The oracle runs the model on ``rows`` inputs (None: the model's own ``predict``
        decides how often) for the samples at ``positions`` (one entry per row charged), at
        access ``level``."""
        if rank(level) > rank(self.access):
            self.violate(f"it used {level} access but declared access={self.access!r}")
        np.add.at(self.counts, np.asarray(positions, dtype=np.int64), 1)
        if self.max_queries is not None and bool((self.counts > self.max_queries).any()):
            self.violate(f"it went past its budget of {self.max_queries} queries per sample")
        self.depth += 1
        self.allowance = rows
        try:
            yield
        finally:
            self.depth -= 1
            self.allowance = 0


class Seal:
    """A defended model and the tensors its cells are graded with, sealed between the harness's
    own uses: :meth:`cell` opens it for one cell, :meth:`watch` for each attack batch,
    :meth:`verdict` checks (and restores) after the batch."""

    def __init__(self, model: nn.Module, graded: Iterable[Pristine]) -> None:
        self.model = ModelSeal(model)
        self.graded = list(graded)
        self.current: Watch | None = None
        self.handles: list[tuple[nn.Module, RemovableHandle, Any]] = []
        self.broken: str | None = None

    def tensor(self, name: str) -> torch.Tensor:
        """The harness's own reference to a graded tensor."""
        for part in self.graded:
            if name in part.originals:
                return part.originals[name]
        raise KeyError(name)

    def covers(self, tensors: Iterable[torch.Tensor]) -> None:
        """A cell grades only with tensors this seal holds (the harness's own references)."""
        held = {id(t) for part in self.graded for t in part.originals.values()}
        if any(id(t) not in held for t in tensors):
            raise ValueError("the cell's tensors are not the ones this seal holds")

    def repair(self, force: bool = False) -> None:
        """Put back anything changed since the seal was taken (``force``: the modules' hook
        tables too, which the cheap comparison leaves out: the harness's own hooks come and
        go)."""
        if force or self.model.changes():
            self.model.restore()
        for part in self.graded:
            part.restore()

    def check_copies(self) -> None:
        """Raise :class:`SealBroken` (once and for good) if a pristine copy was changed."""
        if self.broken is None and not all(
                p.intact() for p in (self.model.tensors, *self.graded)):
            self.broken = "the harness's pristine copy of the model or its data was modified"
        if self.broken is not None:
            raise SealBroken(self.broken)

    @contextlib.contextmanager
    def cell(self) -> Iterator[Seal]:
        """One cell: repair damage done outside cells, hook every module, unhook after."""
        self.check_copies()
        self.repair()
        self.install()
        try:
            yield self
        finally:
            self.current = None
            self.uninstall()
            self.repair()

    def install(self) -> None:
        top = self.model.model
        for name, module in self.model.modules:
            hook = self.outside_hook(module_name(name, module), module is top)
            self.handles.append((module, module.register_forward_pre_hook(hook), hook))

    def uninstall(self) -> None:
        for _, handle, _ in self.handles:
            handle.remove()
        self.handles.clear()

    def outside_hook(self, name: str, top: bool) -> Any:
        """A forward pre-hook: outside the oracle during an attack batch is a violation; at the
        top module, more rows than the oracle charged is one too."""

        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            watch = self.current
            if watch is None:
                return
            if watch.depth == 0:
                grads = " with gradients" if torch.is_grad_enabled() else ""
                watch.violate(f"it ran {name}{grads} outside the oracle (declared "
                              f"access={watch.access!r})")
            elif top and watch.allowance is not None:
                rows = args[0].shape[0] if args and isinstance(args[0], torch.Tensor) else 1
                if rows > watch.allowance:
                    watch.violate("the model ran on more inputs than the oracle charged")
                watch.allowance = max(0, watch.allowance - rows)

        return hook

    def watch(self, access: str, max_queries: int | None, eot_samples: int, n: int) -> Watch:
        """Arm the hooks for one attack batch of ``n`` samples under the harness's terms."""
        device = next(iter(self.model.model.parameters()), torch.empty(0)).device  # as Oracle
        self.current = Watch(access, max_queries, eot_samples, np.zeros(n, dtype=np.int64),
                             device)
        return self.current

    def verdict(self, watch: Watch, oracle: Any, attack: Any) -> str | None:
        """After a batch of ``attack`` on ``oracle``: why the cell is invalid (None if it is
        not). Whatever changed is restored before this returns: nothing the harness runs next
        sees it."""
        self.current = None
        reasons = list(watch.violations)
        missing = [module_name(name, module) for (name, _), (module, handle, hook) in zip(
            self.model.modules, self.handles, strict=True)
            if module._forward_pre_hooks.get(handle.id) is not hook]
        if missing:
            reasons.append(f"it removed the harness's hooks from {listed(missing)}")
        terms = [f"{who}.{key}" for who, owner, keys in (
            ("oracle", oracle, ("access", "max_queries", "eot_samples")),
            ("its own", attack, ("access", "max_queries"))) for key in keys
            if getattr(owner, key, None) != getattr(watch, key)]
        if terms:
            reasons.append(f"it changed {listed(terms)}")
        counted = getattr(oracle, "queries", None)
        if not isinstance(counted, torch.Tensor) or not identical(counted, watch.queries):
            reasons.append(f"it changed oracle.queries (the harness counted "
                           f"{int(watch.counts.sum())} queries)")
        changed = self.model.changes()
        if changed:
            reasons.append(f"the attack modified the model: {listed(changed)}")
        data = [name for part in self.graded for name in part.changed()]
        if data:
            reasons.append(f"the attack modified what it is graded with: {listed(data)}")
        if changed or data or missing:
            self.repair(force=bool(missing))  # this drops the harness's hooks: put them back
            self.uninstall()
            self.install()
        return "; ".join(reasons) or None
