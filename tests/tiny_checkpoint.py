"""Genos checkpoints made directly (no training run): a tiny model with random weights,
written with the same writer `genos train` uses."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = {
    "model.num_layers": 2,
    "model.hidden_size": 64,
    "model.num_attention_heads": 4,
    "model.num_query_groups": 2,
    "model.num_experts": 4,
    "model.expert_ffn_hidden_size": 48,
    "model.max_seq_length": 128,
}


def make_checkpoint(directory: Path, *, nucleotide: bool = False, seed: int = 0) -> Path:
    """A complete genos checkpoint directory (model.safetensors, config.yaml, genos.json and
    tokenizer.model for BPE) holding a tiny model with random, non-trivial weights."""
    import torch

    from genos_cli.checkpoint import write_consolidated
    from genos_cli.config import load_config
    from genos_cli.data.tokenizers import load_tokenizer
    from genos_cli.model import build_model

    overrides: dict[str, object] = dict(TINY_MODEL)
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
