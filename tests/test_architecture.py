"""The package layout stays true: imports inside `genos_cli` point one way.

Every import in `src/genos_cli` is scanned with `ast` (module-level, lazy ones inside
functions, `if TYPE_CHECKING:` ones, and names handed to `importlib.import_module`) and
checked against the layers below, written as data. A package may import any package in a
lower layer; within a layer only the edges in ALLOWED_SIBLINGS; never upwards. So nothing
imports `cli`, `eval` does not import `train`, `telemetry` does not import `model` (the
trainer and `metrics` pass the FLOP count of `model.flops` in), and the model knows nothing
of checkpoints or training. Only `genos_cli/train/ds.py` imports DeepSpeed, and `genos
--help` loads no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "genos_cli"

# Top to bottom. A unit is a subpackage or a top-level module of genos_cli (`__init__` is
# the package itself: `__version__`).
LAYERS: list[tuple[str, set[str]]] = [
    ("entry point", {"__main__"}),  # `python -m genos_cli`: the only importer of cli
    ("commands", {"cli"}),  # Typer app: parse options, call one library function, render
    ("features", {"train", "eval", "interop", "metrics", "inference"}),  # what a command runs
    ("services", {"checkpoint", "telemetry", "model", "device"}),  # what the features share
    ("config", {"config"}),  # the typed schema and presets
    ("data", {"data"}),  # FASTA, tokenizers, .bin/.idx, windows: no model, no config
    ("foundation", {"atomic", "jsonfile", "extras", "paths", "resources", "__init__"}),
    ("errors", {"errors"}),  # GenosError: every layer raises it
]

# Imports between two units of the same layer, each with its reason. Nothing else.
ALLOWED_SIBLINGS: dict[tuple[str, str], str] = {
    ("checkpoint", "model"): "checkpoint.load() builds the model a checkpoint describes",
    ("eval", "inference"): "genos eval probe loads and embeds with genos embed's code",
    ("train", "interop"): "genos train --init-from reads Hugging Face weights as import-hf does",
}

# Edges that break the rule today, reported as design slips to fix, not rules: each must
# still occur (a fixed one fails `test_known_slips_are_still_there` until removed here).
KNOWN_SLIPS: dict[tuple[str, str], str] = {}

DEEPSPEED_MODULE = "src/genos_cli/train/ds.py"  # the one module that imports deepspeed

LAYER_OF = {unit: (i, name) for i, (name, units) in enumerate(LAYERS) for unit in units}


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    module: str  # the full dotted name imported
    how: str  # "module-level", "lazy", "type-only" or "by name"

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module} ({self.how})"


def _module_name(file: Path, root: Path = SRC) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def scan(file: Path, root: Path = SRC) -> list[Import]:
    """Every import in `file`: `import x`, `from x import y` (relative ones resolved, and
    `from genos_cli import sub` as the subpackage `sub`), wherever it stands, and the dotted
    names a file that calls `import_module` / `__import__` spells out as strings."""
    tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    rel = str(file.relative_to(root.parent))
    module = _module_name(file, root)
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def is_module(name: str) -> bool:
        path = root.joinpath(*name.split("."))
        return path.is_dir() or path.with_suffix(".py").is_file()

    def visit(node: ast.AST, how: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            how = "lazy" if how == "module-level" else how
        elif isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                visit(child, "type-only")
            for child in node.orelse:
                visit(child, how)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(rel, node.lineno, a.name, how) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"  # `from genos_cli import data`: the subpackage
                found.append(Import(rel, node.lineno, sub if is_module(sub) else base, how))
        for child in ast.iter_child_nodes(node):
            visit(child, how)

    visit(tree, "module-level")
    importers = ("import_module", "__import__")
    if any(isinstance(n, ast.Call) and ast.unparse(n.func).rpartition(".")[2] in importers
           for n in ast.walk(tree)):  # fmt: skip
        # what it may import by name is spelt out as strings somewhere in the file
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                words = n.value.split(".")
                if words[0] in ("genos_cli", "deepspeed") and all(w.isidentifier() for w in words):
                    found.append(Import(rel, n.lineno, n.value, "by name"))
    return found


def _unit(module: str) -> str | None:
    """The genos_cli unit `module` belongs to, or None for a module outside genos_cli."""
    parts = module.split(".")
    if parts[0] != "genos_cli":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports() -> list[Import]:
    return [imp for file in _files() for imp in scan(file)]


def _importer(imp: Import) -> str:
    unit = _unit(_module_name(SRC.parent / imp.file))
    assert unit is not None
    return unit


def test_every_unit_has_a_layer() -> None:
    """A new package or top-level module must be placed in LAYERS before it is used."""
    units = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    units |= {p.stem for p in PACKAGE.glob("*.py")}
    assert units - LAYER_OF.keys() == set(), "units missing from LAYERS"


def test_the_table_keeps_the_promises_of_the_docstring() -> None:
    """Whoever edits LAYERS or ALLOWED_SIBLINGS cannot quietly drop one of these."""
    above_cli = {u for u, (layer, _) in LAYER_OF.items() if layer <= LAYER_OF["cli"][0]}
    assert above_cli == {"__main__", "cli"}  # nothing but the entry point imports cli
    for importer, imported in [
        ("eval", "train"),
        ("telemetry", "model"),
        ("model", "checkpoint"),
        ("model", "train"),
        ("data", "config"),
        ("config", "model"),
    ]:
        may = LAYER_OF[imported][0] > LAYER_OF[importer][0] or (importer, imported) in (
            ALLOWED_SIBLINGS
        )
        assert not may, f"the table lets {importer} import {imported}"


def test_imports_point_down_the_layers() -> None:
    problems = []
    for imp in _imports():
        importer, imported = _importer(imp), _unit(imp.module)
        if imported is None or imported == importer:
            continue
        (low, low_name), (high, high_name) = LAYER_OF[importer], LAYER_OF[imported]
        if high > low:
            continue
        if high == low:
            if (importer, imported) in ALLOWED_SIBLINGS:
                continue
            rule = (
                f"{importer} and {imported} are both in layer '{low_name}'; a sibling import "
                "needs an entry, with its reason, in ALLOWED_SIBLINGS"
            )
        else:
            rule = (
                f"{importer} (layer '{low_name}') may not import {imported} (layer "
                f"'{high_name}', above it)"
            )
        problems.append(f"{imp}: {rule}")
    assert not problems, "imports against tests/test_architecture.py LAYERS:\n" + "\n".join(
        problems
    )


def test_every_allowed_sibling_edge_is_needed_or_waits_for_its_package() -> None:
    edges = {(_importer(i), _unit(i.module)) for i in _imports()}
    for (importer, imported), why in ALLOWED_SIBLINGS.items():
        assert LAYER_OF[importer][0] == LAYER_OF[imported][0], (importer, imported)
        exists = (PACKAGE / imported).is_dir() or (PACKAGE / f"{imported}.py").is_file()
        if exists:
            assert (importer, imported) in edges, f"stale: {importer} -> {imported} ({why})"


def test_only_the_engine_module_imports_deepspeed() -> None:
    importers = {
        (imp.file, "deepspeed"): imp
        for imp in _imports()
        if imp.module.split(".")[0] == "deepspeed" and imp.file != DEEPSPEED_MODULE
    }
    unexpected = [f"{imp}: only {DEEPSPEED_MODULE} may import deepspeed"
                  for key, imp in importers.items() if key not in KNOWN_SLIPS]  # fmt: skip
    assert not unexpected, "\n".join(unexpected)
    assert any(imp.module.startswith("deepspeed") for imp in scan(SRC.parent / DEEPSPEED_MODULE))


def test_known_slips_are_still_there() -> None:
    found = {(imp.file, imp.module.split(".")[0]) for imp in _imports()}
    fixed = [f"{key}: {why}" for key, why in KNOWN_SLIPS.items() if key not in found]
    assert not fixed, "fixed, so remove from KNOWN_SLIPS:\n" + "\n".join(fixed)


def test_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The rules above are only as good as the scan: it must see lazy, type-only, relative
    and by-name imports, and tell a subpackage imported from the package apart."""
    pkg = tmp_path / "genos_cli" / "eval"
    pkg.mkdir(parents=True)
    (tmp_path / "genos_cli" / "train").mkdir()
    (tmp_path / "genos_cli" / "__init__.py").write_text("")
    file = pkg / "run.py"
    file.write_text(
        "from typing import TYPE_CHECKING\n"
        "import genos_cli.data\n"
        "from . import lm\n"
        "from ..model import build\n"
        "from genos_cli import __version__\n"
        "if TYPE_CHECKING:\n"
        "    from genos_cli.cli import app\n"
        "def f():\n"
        "    from genos_cli.train.trainer import Trainer\n"
        "def g():\n"
        "    import importlib\n"
        "    return importlib.import_module('deepspeed.comm')\n"
    )
    found = [(i.line, i.module, i.how) for i in scan(file, root=tmp_path)]
    assert sorted(found) == [
        (1, "typing", "module-level"),
        (2, "genos_cli.data", "module-level"),
        (3, "genos_cli.eval", "module-level"),  # `lm` is not a file here: the package
        (4, "genos_cli.model", "module-level"),
        (5, "genos_cli", "module-level"),
        (7, "genos_cli.cli", "type-only"),
        (9, "genos_cli.train.trainer", "lazy"),
        (11, "importlib", "lazy"),
        (12, "deepspeed.comm", "by name"),
    ]


def test_help_of_every_command_imports_no_heavy_library() -> None:
    """`genos --help` and each command's `--help` stay instant: no torch, numpy,
    sentencepiece or deepspeed (the commands import them lazily)."""
    code = textwrap.dedent("""
        import sys
        from typer.main import get_command
        from typer.testing import CliRunner
        from genos_cli.cli.app import app

        def paths(command, prefix):
            yield prefix
            for name, sub in sorted(getattr(command, "commands", {}).items()):  # a group
                yield from paths(sub, [*prefix, name])

        for path in paths(get_command(app), []):
            result = CliRunner().invoke(app, [*path, "--help"])
            assert result.exit_code == 0, (path, result.output)
            print(" ".join(["genos", *path]))
        heavy = ("torch", "numpy", "sentencepiece", "deepspeed")
        print("loaded:", *sorted(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *helped, loaded = out.stdout.strip().splitlines()
    assert {"genos", "genos train", "genos eval", "genos eval probe"} <= set(helped), helped
    assert loaded == "loaded:", f"{loaded} after {len(helped)} --help pages"
