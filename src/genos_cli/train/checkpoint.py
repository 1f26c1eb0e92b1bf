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

from genos_cli import __version__
from genos_cli.atomic import atomic_write
from genos_cli.checkpoints import LATEST, MODEL_FILE, latest, tag_for
from genos_cli.config import config_to_yaml
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
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    with atomic_write(directory / MODEL_FILE) as fh:
        fh.write(save(tensors, metadata={"format": "pt", "genos_version": __version__}))
    with atomic_write(directory / "config.yaml", "w") as fh:
        fh.write(config_to_yaml(plan.config))
    if plan.tokenizer_kind == "bpe":
        from genos_cli.data.tokenizers import default_tokenizer_path

        source = plan.tokenizer_model or default_tokenizer_path()
        with atomic_write(directory / "tokenizer.model") as fh:
            fh.write(Path(source).read_bytes())
    meta = {
        **meta,
        "tokenizer": {
            "kind": tokenizer.kind,
            "fingerprint": tokenizer.fingerprint(),
            "vocab_size": tokenizer.vocab_size,
            "eod_id": tokenizer.eod_id,
        },
        "genos_version": __version__,
    }
    with atomic_write(directory / "genos.json", "w") as fh:
        json.dump(meta, fh, indent=2)


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
