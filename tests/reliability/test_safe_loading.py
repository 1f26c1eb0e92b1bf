"""Loading never runs code from a file: checkpoints are read with safetensors or
`torch.load(weights_only=True)` (DeepSpeed's own reads included), YAML with a safe loader,
and no shell command is built from user input."""

from __future__ import annotations

import ast
import importlib
import pathlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from genos_cli.train.runtime import weights_only_load
from tests.helpers import genos
from tests.reliability.conftest import RUN, assert_train_error

SRC = Path(__file__).resolve().parents[2] / "src" / "genos_cli"


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(func: ast.expr) -> str:
    """'torch.load', 'yaml.load', 'os.system', 'pickle.loads', ... for a call's target."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "<expr>")  # e.g. f(x).eval()
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_source_has_no_unsafe_loading_or_shell() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        module = "genos_cli." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for call in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            name, where = _name(call.func), f"{path.relative_to(SRC.parent)}:{call.lineno}"
            if name.endswith("torch.load"):
                flag = _keyword(call, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
                loader = _keyword(call, "Loader")
                cls = (
                    getattr(importlib.import_module(module), loader.id, None)
                    if isinstance(loader, ast.Name)
                    else getattr(yaml, loader.attr, None)
                    if isinstance(loader, ast.Attribute)
                    else None
                )
                if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                    problems.append(f"{where}: {name} without a SafeLoader")
            elif name in ("pickle.load", "pickle.loads", "os.system", "os.popen", "eval", "exec",
                          "subprocess.getoutput", "subprocess.getstatusoutput"):  # fmt: skip
                problems.append(f"{where}: {name}")
            shell = _keyword(call, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and not shell.value):
                problems.append(f"{where}: shell=True")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                pickle_flag = _keyword(call, "allow_pickle")
                if isinstance(pickle_flag, ast.Constant) and pickle_flag.value:
                    problems.append(f"{where}: np.load(allow_pickle=True)")
    assert problems == []


@pytest.mark.slow  # reference_run: 8 steps in a child process
def test_checkpoint_files_load_without_pickled_code(reference_run: Path) -> None:
    """Every file of a real checkpoint (DeepSpeed's model, optimizer and ZeRO states, genos's
    RNG and data state) reads back with weights_only=True."""
    files = sorted((reference_run / "checkpoints" / "step_00000008").glob("*.pt"))
    assert len(files) >= 2
    for file in files:
        state = weights_only_load(file)
        assert isinstance(state, dict) and state


class _Payload:
    """What an attacker would put in a checkpoint: unpickling it creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.slow  # reference_run
def test_resume_refuses_a_checkpoint_with_code(
    tmp_path: Path, ecoli_data: Path, reference_run: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    marker = tmp_path / "code-ran"
    states = run / "checkpoints" / "step_00000008" / "mp_rank_00_model_states.pt"
    torch.save({"module": _Payload(marker)}, states)
    result = genos("train", *RUN, "--max-steps", "10", "--data-path", ecoli_data,
                   "--output-dir", run, "--resume")  # fmt: skip
    assert_train_error(
        result, "mp_rank_00_model_states.pt", "refusing to load it (it would run getattr)"
    )
    assert not marker.exists()
