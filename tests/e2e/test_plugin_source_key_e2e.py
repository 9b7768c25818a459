"""An edited plugin recomputes exactly what it concerns (issue #26, point 4): cells and models
are keyed on the plugin's own source, not only on its distribution's version, which an editable
install keeps while its author fixes the code."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from advbench import load_registry, run_matrix
from advbench.running.worker import Worker

ATTACK = '''
from dataclasses import dataclass
from advbench import Attack
from {package}.helpers import STEP


@dataclass(kw_only=True)
class {cls}(Attack):
    name = "{name}"
    norms = ("linf",)
    access = "gradient"

    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y)
        return x + STEP * {scale} * threat.eps * grad.sign()
'''

DEFENSE = '''
from dataclasses import dataclass
from advbench import Defense


@dataclass(kw_only=True)
class Halved(Defense):
    name = "halved"

    def wrap(self, model):
        return model  # {comment}
'''

REGISTER = '''
from advbench import hookimpl
from {package}.first import First
from {package}.second import Second
from {package}.defense import Halved


@hookimpl
def bench_attacks():
    return [First, Second]


@hookimpl
def bench_defenses():
    return [Halved]
'''


class Package:
    """A plugin package written to ``root`` and imported afresh after each edit, as a new
    process would after ``pip install -e``."""

    def __init__(self, root: Path, name: str) -> None:
        self.folder, self.name = root / name, name
        self.folder.mkdir()
        sys.path.insert(0, str(root))
        self.write("__init__.py", "")
        self.write("helpers.py", "STEP = 1.0\n")
        self.write("first.py", ATTACK.format(package=name, cls="First", name="first",
                                             scale="1.0"))
        self.write("second.py", ATTACK.format(package=name, cls="Second", name="second",
                                              scale="0.5"))
        self.write("defense.py", DEFENSE.format(comment="as trained"))
        self.write("register.py", REGISTER.format(package=name))

    def write(self, file: str, text: str) -> None:
        (self.folder / file).write_text(textwrap.dedent(text))

    def load(self):
        for module in [m for m in sys.modules if m == self.name or m.startswith(self.name + ".")]:
            del sys.modules[module]
        importlib.invalidate_caches()
        return importlib.import_module(f"{self.name}.register")

    def remove(self, root: Path) -> None:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m == self.name or m.startswith(self.name + ".")]:
            del sys.modules[module]


@pytest.fixture
def package(tmp_path):
    made = Package(tmp_path, "edited_plugins_under_test")
    yield made
    made.remove(tmp_path)


def computed(monkeypatch) -> list[tuple[str, str]]:
    """The (defense, attack) of every cell the worker actually runs."""
    ran: list[tuple[str, str]] = []
    run_cell = Worker.run_cell

    def spy(self, cell, *args):
        ran.append((cell.defense.name, cell.attack_name))
        return run_cell(self, cell, *args)

    monkeypatch.setattr(Worker, "run_cell", spy)
    return ran


def test_an_edited_plugin_recomputes_exactly_its_cells(package, tmp_path, monkeypatch):
    ran = computed(monkeypatch)
    cache = tmp_path / "cache"

    def run(out: str):
        ran.clear()
        registry = load_registry(extra=[package.load()])
        frame = run_matrix(attacks="first,second", defenses="none,halved", registry=registry,
                           preset="smoke", n_train=300, n_eval=20, eps={"linf": [0.1]},
                           out=tmp_path / out, cache_dir=cache)
        return frame.attrs["manifest"]["reused_cells"], sorted(ran)

    reused, cells = run("first")
    assert reused == 0 and len(cells) == 4
    assert run("again") == (4, [])  # nothing edited: every cell reused
    models = set((cache / "models").glob("*.safetensors")) if (cache / "models").is_dir() \
        else set(cache.rglob("*.safetensors"))

    package.write("first.py", ATTACK.format(package=package.name, cls="First", name="first",
                                            scale="0.75"))  # the attack fixed, same version
    assert run("attack-edited") == (2, [("halved", "first"), ("none", "first")])

    package.write("helpers.py", "STEP = 0.9\n")  # what both attacks import from their package
    assert run("helper-edited") == (0, sorted([("halved", "first"), ("halved", "second"),
                                               ("none", "first"), ("none", "second")]))

    package.write("defense.py", DEFENSE.format(comment="edited"))
    assert run("defense-edited") == (2, [("halved", "first"), ("halved", "second")])
    after = set(cache.rglob("*.safetensors"))
    assert len(after - models) == 1  # only the edited defense's model trained again
