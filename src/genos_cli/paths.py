"""Where genos keeps things on this machine, and the environment variables that move them.

- `GENOS_CACHE_DIR`: what genos caches (the embedded genome prepared for each tokenizer,
  this CPU's measured matmul peak); default `$XDG_CACHE_HOME/genos`, i.e. `~/.cache/genos`.
- `GENOS_OUTPUT_DIR`: where `genos train` puts a run without `--output-dir`
  (`GENOS_OUTPUT_DIR/NAME`); default `runs`, relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GENOS_CACHE_DIR"
OUTPUT_ENV = "GENOS_OUTPUT_DIR"


def cache_dir() -> Path:
    """$GENOS_CACHE_DIR, else $XDG_CACHE_HOME/genos, else ~/.cache/genos."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genos"


def runs_dir() -> Path:
    """The parent of a run's default output directory: $GENOS_OUTPUT_DIR, else ./runs."""
    return Path(os.environ.get(OUTPUT_ENV) or "runs").expanduser()
