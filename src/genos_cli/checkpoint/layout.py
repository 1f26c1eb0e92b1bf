"""Where a genos checkpoint's files are, and which checkpoint a path names.

`genos train` writes, under its checkpoint directory (default `RUN_DIR/checkpoints`):

    step_00000200/                 one checkpoint ("tag")
        (DeepSpeed's files)        model + optimizer + ZeRO partitions + expert shards:
                                   for --resume only
        model.safetensors          the whole model, genos's native layout (fp32)
        config.yaml                the run's full config
        tokenizer.model            the SentencePiece model (BPE runs)
        genos.json                 step, tokens, tokenizer kind and fingerprint, data paths
    latest.json                    {"tag": "step_00000200", "step": 200}

A checkpoint is written into `.step_00000200.partial` and renamed into place when complete;
it counts only once `latest.json` names it (`genos_cli.checkpoint.training`). Evaluation,
export and inference read only the consolidated files (`genos_cli.checkpoint.consolidated`),
never DeepSpeed's.
"""

from __future__ import annotations

import json
from pathlib import Path

from genos_cli.errors import GenosError

LATEST = "latest.json"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "genos.json"
TOKENIZER_FILE = "tokenizer.model"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def staging_name(tag: str) -> str:
    """Where a checkpoint is written before it is complete (hidden; never loaded)."""
    return f".{tag}.partial"


def latest(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint directory under `checkpoint_dir`, or None."""
    pointer = checkpoint_dir / LATEST
    if not pointer.is_file():
        return None
    try:
        tag = json.loads(pointer.read_text())["tag"]
    except (OSError, ValueError, KeyError, TypeError):
        raise GenosError(f"{pointer} is unreadable; delete it to start over") from None
    path = checkpoint_dir / str(tag)
    return path if path.is_dir() else None


def resolve(path: Path) -> Path:
    """The step directory `path` names: itself, the latest under it, or the latest under
    `path/checkpoints` (a run's output directory)."""
    path = Path(path)
    if not path.exists():
        raise GenosError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise GenosError(
            f"checkpoint {path} is a file; give a checkpoint directory (step_XXXXXXXX), "
            "the checkpoints directory of a run, or the run's output directory"
        )
    if (path / MODEL_FILE).is_file():
        return path
    for root in (path, path / "checkpoints"):
        found = latest(root) if (root / LATEST).is_file() else None
        if found is not None:
            return found
    raise GenosError(
        f"{path} holds no genos checkpoint (no {MODEL_FILE}, no {LATEST}); give a "
        "checkpoint directory (step_XXXXXXXX), a run's checkpoints directory or its output "
        "directory"
    )
