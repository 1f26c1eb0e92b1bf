"""The Genos Mixture-of-Experts transformer, as plain PyTorch (no DeepSpeed here)."""

from __future__ import annotations

from genos_cli.model.transformer import GenosForCausalLM, GenosOutput, build_model

__all__ = ["GenosForCausalLM", "GenosOutput", "build_model"]
