"""Model FLOPs per token, for throughput as a share of hardware peak (MFU).

The convention is PaLM's (Chowdhery et al. 2022, appendix B), which Megatron-LM's reported
MFU follows too: matmul FLOPs only (2 per multiply-add; norms, softmax, RoPE and routing
bookkeeping are not "model FLOPs"), 6 N per token for training plus 12 L H Dh T for
attention — the full T x T score matrix, with no discount for the causal mask. So genos's
MFU compares directly with published figures (it is higher than a count that halves
causal attention, for the same speed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genos_cli.config.params import attention_params, expert_params

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig


def active_matmul_params(cfg: ModelConfig) -> int:
    """Weights one token multiplies through: per layer q/k/v/o, router and K experts, plus
    the output head. The input embedding is a lookup, not a matmul, and norms are
    elementwise, so neither counts."""
    per_layer = (
        attention_params(cfg)
        + cfg.hidden_size * cfg.num_experts
        + cfg.moe_router_topk * expert_params(cfg)
    )
    return cfg.num_layers * per_layer + cfg.resolved_vocab_size * cfg.hidden_size


def attention_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Forward FLOPs of q k^T and (attention) v for one token: PaLM's 2 x 2 x H x Dh x T per
    layer (each of the two products, 2 FLOPs per multiply-add, against all T positions: no
    causal discount; see the module doc)."""
    width = cfg.num_attention_heads * cfg.head_dim
    return cfg.num_layers * 2 * 2 * width * seq_len


def model_flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True) -> int:
    """Forward matmul FLOPs per token (2 x active matmul weights + causal attention), times 3
    for training (backward = 2 x forward: gradients w.r.t. inputs and weights; Kaplan et al.
    2020, section 2.1)."""
    forward = 2 * active_matmul_params(cfg) + attention_flops_per_token(cfg, seq_len)
    return 3 * forward if training else forward
