"""Checkpoints: DeepSpeed's for resuming, plus a consolidated model for eval and export.

Layout under the checkpoint directory:

    step_00000200/                 one checkpoint ("tag")
        (DeepSpeed's files)        model + optimizer + ZeRO partitions + expert shards
        model.safetensors          the whole model, genos's native layout
        config.yaml                the run's full config
        tokenizer.model            the SentencePiece model (BPE runs)
        genos.json                 step, tokens, tokenizer kind and fingerprint
    latest.json                    {"tag": "step_00000200", "step": 200}

A checkpoint counts only once `latest.json` names it. That file is written atomically by
rank 0 after every rank has finished writing, so a run killed mid-save resumes from the
previous complete checkpoint. The oldest complete checkpoints beyond `keep_last_checkpoints`
are deleted after a successful save.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genos_cli.atomic import atomic_write
from genos_cli.checkpoints import LATEST, latest, tag_for, write_consolidated
from genos_cli.errors import GenosError
from genos_cli.train import engine

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer
    from genos_cli.train.plan import TrainPlan


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_consolidated(
    directory: Path, state_dict: dict[str, torch.Tensor], plan: TrainPlan, meta: dict[str, Any],
    tokenizer: DNATokenizer,
) -> None:  # fmt: skip
    # One writer of the consolidated format for training and `genos export import-hf`.
    write_consolidated(directory, state_dict, plan.config, tokenizer, meta)


def save(
    eng: Any, plan: TrainPlan, step: int, state: dict[str, Any], *, is_main: bool,
    tokenizer: DNATokenizer,
) -> Path:  # fmt: skip
    """Save on every rank (collective), then publish on rank 0."""
    directory = plan.checkpoint_dir
    tag = tag_for(step)
    engine.save_checkpoint(eng, directory, tag, state)
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
        _write_consolidated(directory / tag, weights, plan, meta, tokenizer)
    engine.barrier()  # every rank's shards are on disk
    if is_main:
        with atomic_write(directory / LATEST, "w") as fh:
            json.dump({"tag": tag, "step": step}, fh)
        _prune(directory, keep=plan.config.training.keep_last_checkpoints, newest=tag)
    engine.barrier()
    return directory / tag


def _prune(directory: Path, *, keep: int, newest: str) -> None:
    """Delete complete checkpoints older than the `keep` newest (never the newest)."""
    tags = sorted(p.name for p in directory.glob("step_*") if p.is_dir() and p.name <= newest)
    for old in tags[:-keep]:
        shutil.rmtree(directory / old, ignore_errors=True)


def load_latest(eng: Any, plan: TrainPlan) -> dict[str, Any] | None:
    """Restore the newest complete checkpoint into the engine; its client state, or None."""
    path = latest(plan.checkpoint_dir)
    if path is None:
        return None
    state = engine.load_checkpoint(eng, plan.checkpoint_dir, path.name)
    if "step" not in state:
        raise GenosError(f"{path} is not a genos checkpoint (no training state in it)")
    return state
