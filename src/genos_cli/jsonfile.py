"""Reading the JSON files genos writes (manifests, checkpoint metadata) with one error format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genos_cli.errors import GenosError


def read_json(file: Path) -> Any:
    """The parsed contents of `file`; a GenosError naming it if it cannot be read or parsed."""
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenosError(f"{file} is not readable JSON ({exc})") from None
