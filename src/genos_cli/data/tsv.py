"""Tab-separated text files: the sequence tables `genos embed --tsv` and `genos eval probe
--train-tsv` read."""

from __future__ import annotations

from pathlib import Path

from genos_cli.data.sources import require_file
from genos_cli.errors import GenosError


def tsv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, the line's tab-separated fields, each stripped) of every
    non-blank line of a UTF-8 text file; a GenosError for a missing or non-UTF-8 file."""
    path = require_file(path, "a tab-separated text file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise GenosError(f"{path} is not a UTF-8 text file") from None
    return [
        (number, [field.strip() for field in line.split("\t")])
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
