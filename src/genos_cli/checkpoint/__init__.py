"""Checkpoints: where their files are (`layout`), the consolidated model every reader uses
(`consolidated`), and saving / resuming a training run (`training`)."""

from __future__ import annotations

from genos_cli.checkpoint.consolidated import (
    LoadedCheckpoint,
    load,
    read_meta,
    read_state_dict,
    write_consolidated,
)
from genos_cli.checkpoint.layout import (
    CONFIG_FILE,
    LATEST,
    META_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    latest,
    resolve,
    tag_for,
)

__all__ = [
    "CONFIG_FILE",
    "LATEST",
    "META_FILE",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "LoadedCheckpoint",
    "latest",
    "load",
    "read_meta",
    "read_state_dict",
    "resolve",
    "tag_for",
    "write_consolidated",
]
