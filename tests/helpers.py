"""Helpers shared by the tests: `genos` in-process, its errors, data set paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner, Result

from genos_cli.cli.app import app
from genos_cli.config import preset_file

runner = CliRunner()


def genos(*args: str) -> Result:
    """Run `genos ARGS...` in-process, as a user would type it."""
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result: Result, *needles: str) -> str:
    """A clean failure: exit 1, a red `error:` sentence on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def train_prefix(prefix: Path) -> Path:
    """The training split of `genos preprocess -o PREFIX` (Megatron's naming)."""
    return Path(f"{prefix}_train_text_document")


def write_indexed(prefix: Path, docs: list[np.ndarray], per_add: int = 7) -> None:
    """`prefix`.bin/.idx with genos's writer, `per_add` documents per `add` call."""
    from genos_cli.data.indexed import IndexedDatasetWriter

    with IndexedDatasetWriter(prefix) as writer:
        for i in range(0, len(docs), per_add):
            chunk = docs[i : i + per_add]
            writer.add(np.concatenate(chunk), np.array([d.size for d in chunk]))
        writer.commit()


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def small_yaml_with(replacements: dict[str, str]) -> str:
    """The small preset's YAML with some text replaced (each must occur)."""
    text = preset_file("small").read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text
