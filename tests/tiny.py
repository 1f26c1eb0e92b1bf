"""The tiny genos model every test uses: the small preset's architecture at small widths,
defined once, as `ModelConfig`s, as `genos train` options and as a checkpoint on disk.

A test that needs other values (a non-default rope_base, a nucleotide vocabulary, a longer
context) passes them as changes: `tiny_model_config(vocab_size=16)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig

# Overrides of the small preset's `model:` section. The widths are all different (64 wide,
# 48-wide experts, 4 heads in 2 groups) so that a transposed or misassigned weight changes a
# shape, and 4 experts with top-2 routing keep the router's choice non-trivial.
TINY_MODEL: dict[str, Any] = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_query_groups": 2,
    "num_experts": 4,
    "moe_router_topk": 2,
    "expert_ffn_hidden_size": 48,
    "max_seq_length": 128,
}
# The same, as `load_config(overrides=...)` / `--set` keys.
TINY_OVERRIDES: dict[str, Any] = {f"model.{key}": value for key, value in TINY_MODEL.items()}
# Training settings of the tiny CLI runs: 8 sequences of 128 tokens a step, 2 micro-batches.
TINY_TRAINING: dict[str, Any] = {
    "micro_batch_size": 4,
    "global_batch_size": 8,
    "lr": 3e-3,
    "log_interval": 1,
}
# `genos train` options for a run that takes seconds: the small preset with the tiny model.
TINY_TRAIN_ARGS: list[str] = [
    "--size", "small",
    *(word for key, value in TINY_OVERRIDES.items() for word in ("--set", f"{key}={value}")),
    *(word for key, value in TINY_TRAINING.items()
      for word in (f"--{key.replace('_', '-')}", str(value))),
    "--no-compile",
]  # fmt: skip


def tiny_model_config(**changes: Any) -> ModelConfig:
    """The small preset's model with TINY_MODEL and then `changes` applied, validated."""
    from genos_cli.config import load_config
    from genos_cli.config.schema import ModelConfig

    small = load_config(size="small").model.model_dump()
    return ModelConfig.model_validate({**small, **TINY_MODEL, **changes})


def make_checkpoint(directory: Path, *, nucleotide: bool = False, seed: int = 0) -> Path:
    """A complete genos checkpoint directory (model.safetensors, config.yaml, genos.json and
    tokenizer.model for BPE) holding the tiny model with random, non-trivial weights, written
    with the same writer `genos train` uses."""
    import torch

    from genos_cli.checkpoint import write_consolidated
    from genos_cli.config import load_config
    from genos_cli.data.tokenizers import load_tokenizer
    from genos_cli.model import build_model

    overrides: dict[str, object] = dict(TINY_OVERRIDES)
    if nucleotide:
        overrides.update({"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16})
    cfg = load_config("small", overrides=overrides)
    torch.manual_seed(seed)
    model = build_model(cfg.model, compile=False, device="cpu")
    with torch.no_grad():  # norms start at 1: perturb them so a dropped weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    tokenizer = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)
    meta = {"step": 7, "tokens": 7 * 1024, "tag": "step_00000007"}
    write_consolidated(directory, model.state_dict(), cfg, tokenizer, meta)
    return directory
