"""The layout's rules: no import cycle in the core, public modules never lean on internal ones,
shared helpers live in one leaf module, and built-in plugins use the public API only.

The rule, in full:

- *public*: the package ``advbench`` itself, the modules at its top (``advbench.attack``,
  ``advbench.oracle``, ...) and ``advbench.algorithms.*`` -- what plugins may import
  (docs/writing-plugins.md, "What you may import").
- *internal*: ``advbench.plugin_system``, ``advbench.running``, ``advbench.reporting`` and
  ``advbench.cli`` -- the harness's machinery, free to change in any release.
- *leaf*: a private module at the top, ``advbench._name``; it imports nothing from advbench, so
  anyone in the core may import it (plugins may not: it is not public).

A public module imports only public modules and leaves: not at its top, not inside a function,
not under ``if TYPE_CHECKING:``. Internal modules import whatever they need. The one door from
the public side into the machinery is ``advbench/__init__.py``'s lazy ``__getattr__``, which
re-exports a few chosen names (``run_matrix``, ``RunConfig``, ``load_registry``, ...) by string
and is, by design, outside this import graph.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "benchmark"
# What a plugin may import: the package itself, the base types at its top, and the building blocks.
PUBLIC = {"advbench", "advbench.errors", "advbench.threat", "advbench.oracle", "advbench.gate",
          "advbench.attack", "advbench.defense", "advbench.data", "advbench.models",
          "advbench.hookspecs", "advbench.conformance", "advbench.adapters", "advbench.seal"}
PUBLIC_PACKAGES = ("advbench.algorithms",)


def module_name(path: Path) -> str:
    parts = ["advbench", *path.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


CORE_MODULES = {module_name(path): path for path in CORE.rglob("*.py")}


INTERNAL_PACKAGES = ("advbench.plugin_system", "advbench.running", "advbench.reporting")
INTERNAL_MODULES = {"advbench.cli"}
# Public modules allowed to import an internal one, each with the reason. Keep it empty.
ALLOWED_PUBLIC_TO_INTERNAL: dict[str, set[str]] = {}
SHARED_HELPERS = ("one_line", "write_atomic")


def is_internal(name: str) -> bool:
    return name in INTERNAL_MODULES or any(
        name == package or name.startswith(package + ".") for package in INTERNAL_PACKAGES)


def is_leaf(name: str) -> bool:
    return name.count(".") == 1 and name.split(".")[1].startswith("_")


def runtime_imports(path: Path) -> set[str]:
    """Every advbench module ``path`` imports when it runs, function-local imports included
    (only ``if TYPE_CHECKING:`` blocks, which never run, are left out)."""
    return imports(path, type_checking=False)


def imports(path: Path, type_checking: bool = True) -> set[str]:
    """Every advbench module ``path`` names in an import statement anywhere: at the top, inside
    functions, and (unless ``type_checking`` is False) under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (not type_checking and isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test)):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in CORE_MODULES}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the core imports absolutely")
    return {name for name in found if name.split(".")[0] == "advbench"}


def test_no_import_cycle_among_core_modules():
    graph = {name: runtime_imports(path) - {name, "advbench"}
             for name, path in CORE_MODULES.items() if name != "advbench"}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def test_no_import_cycle_even_under_type_checking():
    """Type checkers read ``if TYPE_CHECKING:`` imports too: two modules naming each other there
    are still one layer reaching back into another."""
    graph = {name: imports(path) - {name, "advbench"}
             for name, path in CORE_MODULES.items() if name != "advbench"}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def test_every_imported_core_module_exists():
    for path in [*CORE.rglob("*.py"), *(ROOT / "plugins").glob("*.py")]:
        for name in runtime_imports(path):
            assert name in CORE_MODULES, f"{path.name} imports {name}, which is not a module"


@pytest.mark.parametrize("plugin", sorted((ROOT / "plugins").glob("*.py")), ids=lambda p: p.stem)
def test_built_in_plugins_import_only_the_public_api(plugin):
    private = {name for name in runtime_imports(plugin)
               if name not in PUBLIC and not name.startswith(PUBLIC_PACKAGES)}
    assert not private, f"{plugin.name} imports private modules {sorted(private)}"


PUBLIC_CORE = sorted(name for name in CORE_MODULES if not is_internal(name) and not is_leaf(name))
LEAVES = sorted(name for name in CORE_MODULES if is_leaf(name))


def test_the_rule_sorts_every_core_module():
    """A module added under a new subpackage must be sorted into public or internal on purpose."""
    known = ("advbench.algorithms", *INTERNAL_PACKAGES)
    unsorted = [name for name in CORE_MODULES
                if name.count(".") > 1 and not name.startswith(known)]
    assert not unsorted, f"decide whether these are public or internal: {unsorted}"
    assert "advbench.oracle" in PUBLIC_CORE and "advbench.algorithms.pgd" in PUBLIC_CORE
    assert "advbench.running.cells" not in PUBLIC_CORE and "advbench.cli" not in PUBLIC_CORE


@pytest.mark.parametrize("module", PUBLIC_CORE)
def test_public_modules_import_no_internal_module(module):
    reaching = {name for name in imports(CORE_MODULES[module]) if is_internal(name)}
    reaching -= ALLOWED_PUBLIC_TO_INTERNAL.get(module, set())
    assert not reaching, f"public {module} imports internal {sorted(reaching)}"


@pytest.mark.parametrize("module", LEAVES)
def test_leaf_modules_import_nothing_from_advbench(module):
    found = imports(CORE_MODULES[module]) - {module}
    assert not found, f"leaf {module} imports {sorted(found)}"


def definitions(name: str) -> list[str]:
    """The modules (core and built-in plugins) that define a function called ``name``."""
    where = []
    for path in [*CORE.rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
               for node in ast.walk(tree)):
            where.append(str(path.relative_to(ROOT)))
    return where


@pytest.mark.parametrize("helper", SHARED_HELPERS)
def test_shared_helpers_are_defined_once_in_a_leaf(helper):
    where = definitions(helper)
    assert len(where) == 1, f"{helper} is defined in {where or 'no module'}; keep one, in a leaf"
    module = module_name(ROOT / where[0])
    assert is_leaf(module), f"{helper} lives in {module}, not in a leaf module (advbench._name)"
