"""The layout's rules: no import cycle in the core, and built-in plugins use the public API only."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "benchmark"
# What a plugin may import: the package itself, the base types at its top, and the building blocks.
PUBLIC = {"advbench", "advbench.errors", "advbench.threat", "advbench.oracle", "advbench.gate",
          "advbench.attack", "advbench.defense", "advbench.data", "advbench.models",
          "advbench.hookspecs", "advbench.conformance", "advbench.adapters"}
PUBLIC_PACKAGES = ("advbench.algorithms",)


def module_name(path: Path) -> str:
    parts = ["advbench", *path.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


CORE_MODULES = {module_name(path): path for path in CORE.rglob("*.py")}


def runtime_imports(path: Path) -> set[str]:
    """Every advbench module ``path`` imports when it runs, function-local imports included
    (only ``if TYPE_CHECKING:`` blocks, which never run, are left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
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


def test_every_imported_core_module_exists():
    for path in [*CORE.rglob("*.py"), *(ROOT / "plugins").glob("*.py")]:
        for name in runtime_imports(path):
            assert name in CORE_MODULES, f"{path.name} imports {name}, which is not a module"


@pytest.mark.parametrize("plugin", sorted((ROOT / "plugins").glob("*.py")), ids=lambda p: p.stem)
def test_built_in_plugins_import_only_the_public_api(plugin):
    private = {name for name in runtime_imports(plugin)
               if name not in PUBLIC and not name.startswith(PUBLIC_PACKAGES)}
    assert not private, f"{plugin.name} imports private modules {sorted(private)}"
