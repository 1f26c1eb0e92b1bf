"""The command reference in docs/ is generated from the CLI itself and must stay in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_command_reference_is_current(tmp_path: Path) -> None:
    out = tmp_path / "commands.md"
    subprocess.run(
        [sys.executable, "-m", "typer", "genos_cli.cli.app", "utils", "docs", "--name", "genos",
         "--title", "Command reference", "--output", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert out.read_text() == (DOCS / "commands.md").read_text(), (
        "docs/commands.md is stale; regenerate it with: typer genos_cli.cli.app utils docs "
        "--name genos --title 'Command reference' --output docs/commands.md"
    )
