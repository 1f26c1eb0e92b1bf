"""Saving and resuming training checkpoints: staged writes, publishing, pruning, RNG state.

Every rank writes its part (DeepSpeed's model, optimizer, ZeRO partitions and expert shards)
into a staging directory `.step_00000200.partial`, rank 0 adds the consolidated model;
once all are done, rank 0 syncs the directory to disk, renames it to `step_00000200` and
then atomically rewrites `latest.json`. A checkpoint counts only once `latest.json` names
it, so a run killed (or out of disk space) mid-save resumes from the previous complete
checkpoint, and a `step_XXXXXXXX` directory is never half-written. The next save removes
what an interrupted one left, and the oldest complete checkpoints beyond
`keep_last_checkpoints` are deleted after a successful save. docs/reliability.md lists
these guarantees; `genos_cli.checkpoint.layout` the files.

The distributed part goes through a `ShardWriter` (the training runtime implements it), so
this module knows nothing of DeepSpeed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch

from genos_cli.atomic import (
    atomic_write,
    describe_os_error,
    fsync_dir,
    remove_stale_temps,
    replace_dir,
)
from genos_cli.checkpoint.consolidated import write_consolidated
from genos_cli.checkpoint.layout import LATEST, latest, staging_name, tag_for
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from genos_cli.config import GenosConfig
    from genos_cli.data.tokenizers import DNATokenizer


def rng_state() -> dict[str, Any]:
    """Every generator's state in types `torch.load(weights_only=True)` reads back (tuples,
    ints, floats, strings, tensors): no numpy arrays, so resuming unpickles no code."""
    # The legacy tuple, as called here; numpy's stub gives this call the dict form's type.
    legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    kind, keys, pos, has_gauss, gauss = legacy
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


class ShardWriter(Protocol):
    """What saving and resuming need from the distributed training runtime."""

    is_main: bool

    def barrier(self) -> None: ...

    def save_shards(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Every rank writes its part of the training state under `directory/tag`."""

    def load_shards(self, directory: Path, tag: str) -> dict[str, Any]:
        """Every rank restores its part from `directory/tag`; returns the client state."""
        ...

    def consolidated_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model in genos's native layout, fp32 (collective)."""
        ...


@dataclass(frozen=True)
class SaveRequest:
    """One checkpoint to write: where, of what, and what goes beside the weights."""

    directory: Path
    step: int
    client_state: dict[str, Any]  # the trainer's own state (step, data position, RNG, ...)
    config: GenosConfig
    tokenizer: DNATokenizer
    data: dict[str, list[str]]  # the run's train/val prefixes, for `genos eval`'s baselines
    keep_last: int
    meta: dict[str, Any] = field(default_factory=dict)  # more for genos.json (e.g. init_from)


def save(writer: ShardWriter, request: SaveRequest) -> Path:
    """Save on every rank (collective) into a staging directory, then publish on rank 0.

    A failed write (disk full, read-only filesystem, I/O error) removes the staging
    directory and raises a GenosError saying why; earlier checkpoints are untouched.
    """
    directory, step = request.directory, request.step
    tag = tag_for(step)
    staging = directory / staging_name(tag)
    if writer.is_main:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    writer.barrier()
    try:
        writer.save_shards(directory, staging.name, request.client_state)
        weights = writer.consolidated_state_dict()
        if writer.is_main:
            meta = {
                **request.meta,
                "step": step,
                "tokens": request.client_state["tokens_seen"],
                "tag": tag,
                "data": request.data,
            }
            write_consolidated(staging, weights, request.config, request.tokenizer, meta)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        raise _save_error(exc, directory, staging, tag) from None
    writer.barrier()  # every rank's shards are on disk
    if writer.is_main:
        try:
            _publish(directory, staging, tag, step)
        except OSError as exc:
            raise _save_error(exc, directory, staging, tag) from None
        _prune(directory, keep=request.keep_last, newest=tag)
    writer.barrier()
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
    aside = directory / f".{tag}.old"
    # An existing step directory was written by a run killed before it updated latest.json.
    replace_dir(staging, directory / tag, aside)
    with atomic_write(directory / LATEST, "w") as fh:
        json.dump({"tag": tag, "step": step}, fh)
    shutil.rmtree(aside, ignore_errors=True)


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


def load_latest(writer: ShardWriter, directory: Path) -> dict[str, Any] | None:
    """Restore the newest complete checkpoint under `directory`; its client state, or None."""
    path = latest(directory)
    return None if path is None else load(writer, path)


def load(writer: ShardWriter, path: Path) -> dict[str, Any]:
    """Restore the complete checkpoint `path` (a step directory); its client state."""
    state = writer.load_shards(path.parent, path.name)
    if "step" not in state:
        raise GenosError(f"{path} is not a genos checkpoint (no training state in it)")
    return state
