"""Checkpoints: DeepSpeed's for resuming, plus a consolidated model for eval and export.

Layout under the checkpoint directory:

    step_00000200/                 one checkpoint ("tag")
        (DeepSpeed's files)        model + optimizer + ZeRO partitions + expert shards
        model.safetensors          the whole model, genos's native layout
        config.yaml                the run's full config
        tokenizer.model            the SentencePiece model (BPE runs)
        genos.json                 step, tokens, tokenizer kind and fingerprint
    latest.json                    {"tag": "step_00000200", "step": 200}

Every rank writes into a staging directory `.step_00000200.partial`; once all are done,
rank 0 syncs it to disk, renames it to `step_00000200` and then atomically rewrites
`latest.json`. A checkpoint counts only once `latest.json` names it, so a run killed (or out
of disk space) mid-save resumes from the previous complete checkpoint, and a
`step_XXXXXXXX` directory is never half-written. The next save removes what an interrupted
one left, and the oldest complete checkpoints beyond `keep_last_checkpoints` are deleted
after a successful save. docs/reliability.md lists these guarantees.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genos_cli.atomic import (
    atomic_write,
    describe_os_error,
    fsync_dir,
    remove_stale_temps,
)
from genos_cli.checkpoints import LATEST, latest, tag_for, write_consolidated
from genos_cli.errors import GenosError
from genos_cli.train import engine

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer
    from genos_cli.train.plan import TrainPlan


def rng_state() -> dict[str, Any]:
    """Every generator's state in types `torch.load(weights_only=True)` reads back (tuples,
    ints, floats, strings, tensors): no numpy arrays, so resuming unpickles no code."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos),
                  int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_consolidated(
    directory: Path, state_dict: dict[str, torch.Tensor], plan: TrainPlan, meta: dict[str, Any],
    tokenizer: DNATokenizer,
) -> None:  # fmt: skip
    # One writer of the consolidated format for training and `genos export import-hf`.
    write_consolidated(directory, state_dict, plan.config, tokenizer, meta)


def staging_name(tag: str) -> str:
    """Where a checkpoint is written before it is complete (hidden; never loaded)."""
    return f".{tag}.partial"


def save(
    eng: Any, plan: TrainPlan, step: int, state: dict[str, Any], *, is_main: bool,
    tokenizer: DNATokenizer,
) -> Path:  # fmt: skip
    """Save on every rank (collective) into a staging directory, then publish on rank 0.

    A failed write (disk full, read-only filesystem, I/O error) removes the staging
    directory and raises a GenosError saying why; earlier checkpoints are untouched.
    """
    directory = plan.checkpoint_dir
    tag = tag_for(step)
    staging = directory / staging_name(tag)
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    engine.barrier()
    try:
        engine.save_checkpoint(eng, directory, staging.name, state)
        weights = engine.consolidated_state_dict(
            eng, plan.config.model, plan.config.training.expert_parallel_size
        )
        if is_main:
            meta = {
                "step": step,
                "tokens": state["tokens_seen"],
                "tag": tag,
                # Where the run's data lives, so `genos eval` can fit its baselines on it.
                "data": {
                    "train": [str(Path(p).resolve()) for p in plan.train_prefixes],
                    "val": [str(Path(p).resolve()) for p in plan.val_prefixes],
                },
            }
            _write_consolidated(staging, weights, plan, meta, tokenizer)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        raise _save_error(exc, directory, staging, tag) from None
    engine.barrier()  # every rank's shards are on disk
    if is_main:
        try:
            _publish(directory, staging, tag, step)
        except OSError as exc:
            raise _save_error(exc, directory, staging, tag) from None
        _prune(directory, keep=plan.config.training.keep_last_checkpoints, newest=tag)
    engine.barrier()
    return directory / tag


def _save_error(exc: BaseException, directory: Path, staging: Path, tag: str) -> GenosError:
    reason = describe_os_error(exc, directory)  # before freeing the space it took
    shutil.rmtree(staging, ignore_errors=True)
    try:
        previous = latest(directory)
    except GenosError:
        previous = None
    kept = (
        f"the last complete checkpoint, {previous.name}, is intact; free space or fix "
        "the directory and continue with --resume"
        if previous is not None
        else "no earlier checkpoint exists"
    )
    return GenosError(f"could not save checkpoint {tag} in {directory}: {reason}; {kept}")


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(directory)


def _publish(directory: Path, staging: Path, tag: str, step: int) -> None:
    """Rename the complete staging directory into place, then point latest.json at it."""
    _fsync_tree(staging)  # DeepSpeed's torch.save does not sync; latest.json must not lead
    final = directory / tag
    old = directory / f".{tag}.old"
    if final.exists():  # written by a run killed before it updated latest.json
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    fsync_dir(directory)
    with atomic_write(directory / LATEST, "w") as fh:
        json.dump({"tag": tag, "step": step}, fh)
    shutil.rmtree(old, ignore_errors=True)


def _prune(directory: Path, *, keep: int, newest: str) -> None:
    """Delete complete checkpoints older than the `keep` newest (never the newest), and what
    interrupted saves left (staging directories, temporary files)."""
    tags = sorted(p.name for p in directory.glob("step_*") if p.is_dir() and p.name <= newest)
    for old in tags[:-keep]:
        shutil.rmtree(directory / old, ignore_errors=True)
    for leftover in directory.glob(".step_*"):
        if leftover.is_dir() and leftover.name.endswith((".partial", ".old")):
            shutil.rmtree(leftover, ignore_errors=True)
    remove_stale_temps(directory / LATEST)


def load_latest(eng: Any, plan: TrainPlan) -> dict[str, Any] | None:
    """Restore the newest complete checkpoint into the engine; its client state, or None."""
    path = latest(plan.checkpoint_dir)
    if path is None:
        return None
    state = engine.load_checkpoint(eng, plan.checkpoint_dir, path.name)
    if "step" not in state:
        raise GenosError(f"{path} is not a genos checkpoint (no training state in it)")
    return state
