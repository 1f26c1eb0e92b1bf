"""Every package `src/` imports is declared for the code path that imports it.

A user installs the wheel, not `[dev]`: a package that only arrives through a test tool (or
through another package's dependencies) works here and crashes there. So the imports are
scanned statically and mapped to distributions:

- a module-level import (the code every install runs) must be a core dependency;
- a lazy import (inside a function, or under TYPE_CHECKING) may also come from an optional
  extra, and then it must be one the extras table (`genos_cli.extras`) names for that extra;
- nothing may come from `dev` alone, and every core dependency must be used.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from genos_cli.extras import EXTRAS

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "genos_cli"
# Optional packages that may be absent where the tests run (flash-attn needs CUDA to build).
NOT_INSTALLED = {"flash_attn": ["flash-attn"]}


def _dist_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name[0]).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_dist_name(r) for r in project["dependencies"]}
    extras = {k: {_dist_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    return core, extras


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    module: str  # top-level name
    lazy: bool  # inside a function or an `if TYPE_CHECKING:` block

    def __str__(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line} imports {self.module}"


class _Imports(ast.NodeVisitor):
    def __init__(self, file: Path) -> None:
        self.file, self.depth, self.found = file, 0, []

    def _lazy_scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _lazy_scope

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            self._lazy_scope(node)
        else:
            self.generic_visit(node)

    def _add(self, node: ast.stmt, name: str) -> None:
        self.found.append(Import(self.file, node.lineno, name.split(".")[0], self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node, node.module)


def _third_party_imports() -> list[Import]:
    found: list[Import] = []
    for file in sorted(SRC.rglob("*.py")):
        visitor = _Imports(file)
        visitor.visit(ast.parse(file.read_text(), str(file)))
        found += visitor.found
    skip = set(sys.stdlib_module_names) | {"genos_cli", "__future__"}
    return [i for i in found if i.module not in skip]


@functools.cache
def _installed() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    names = _installed().get(module) or NOT_INSTALLED.get(module)
    assert names, f"cannot tell which distribution provides {module!r}; add it to NOT_INSTALLED"
    return {_dist_name(n) for n in names}


def test_every_import_is_declared_for_its_code_path() -> None:
    core, extras = _declared()
    extra_of_module = {m: e.name for e in EXTRAS.values() for m in e.modules}
    problems = []
    for imp in _third_party_imports():
        dists = _distributions(imp.module)
        if dists & core:
            continue
        extra = extra_of_module.get(imp.module)
        if extra is None:
            where = [name for name, members in extras.items() if dists & members]
            problems.append(
                f"{imp}: {sorted(dists)} is not a core dependency"
                + (f" (only in extras {where}, which genos_cli.extras does not list)" if where
                   else " and is declared nowhere")
            )  # fmt: skip
        elif not dists & extras.get(extra, set()):
            problems.append(f"{imp}: {sorted(dists)} is missing from the [{extra}] extra")
        elif not imp.lazy:
            problems.append(f"{imp} at module level, but it is optional ([{extra}])")
    assert not problems, "\n".join(problems)


def test_extras_table_matches_pyproject() -> None:
    _, extras = _declared()
    for extra in EXTRAS.values():
        assert extra.name in extras, f"pyproject.toml has no [{extra.name}] extra"
        if extra.name == "gpu" and "flash_attn" not in _installed():
            continue  # not installable on this machine: checked by name below
        for module in extra.modules:
            assert _distributions(module) <= extras[extra.name], (extra.name, module)
    assert extras["gpu"] >= {"flash-attn"}


def test_every_core_dependency_is_used() -> None:
    core, _ = _declared()
    used = set().union(*(_distributions(i.module) for i in _third_party_imports()))
    assert core - used == set(), "core dependencies nothing in src/ imports"


def test_scanner_sees_lazy_and_module_level_imports(tmp_path: Path) -> None:
    file = tmp_path / "m.py"
    file.write_text(
        "import numpy\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import wandb\n"
        "def f():\n    from transformers import X\n"
    )
    visitor = _Imports(file)
    visitor.visit(ast.parse(file.read_text()))
    assert [(i.module, i.lazy) for i in visitor.found] == [
        ("numpy", False),
        ("typing", False),
        ("wandb", True),
        ("transformers", True),
    ]
