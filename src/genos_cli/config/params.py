"""Parameter counts of the MoE transformer, from its config alone (no torch).

The architecture counted here is the one genos builds (Mixtral-style, no biases):

- input embedding and output head, untied: vocab x hidden each;
- per layer: two RMSNorms (hidden each); attention q (hidden x heads*head_dim), k and v
  (hidden x groups*head_dim each), o (heads*head_dim x hidden); an MoE layer with a router
  (hidden x experts) and `num_experts` SwiGLU experts of three hidden x ffn matrices each;
- a final RMSNorm (hidden).

"Active" parameters are those one token touches: everything except the experts it is not
routed to, i.e. all non-expert weights plus `moe_router_topk` experts per layer. Active
parameters, not total, set the FLOPs per token (Fedus et al. 2021, Switch Transformer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one model config.

    `embedding` is the input embedding plus the output head (both vocab x hidden), so
    `active == active_non_embedding + embedding`.
    """

    total: int
    active: int
    embedding: int
    active_non_embedding: int


def attention_params(cfg: ModelConfig) -> int:
    """Weights of one grouped-query attention block: q, k, v and o projections, no biases."""
    q_width = cfg.num_attention_heads * cfg.head_dim
    kv_width = cfg.num_query_groups * cfg.head_dim
    return cfg.hidden_size * q_width + 2 * cfg.hidden_size * kv_width + q_width * cfg.hidden_size


def expert_params(cfg: ModelConfig) -> int:
    """Weights of one SwiGLU expert: gate and up (hidden x ffn) and down (ffn x hidden)."""
    return 3 * cfg.hidden_size * cfg.expert_ffn_hidden_size


def count_parameters(cfg: ModelConfig) -> ParamCounts:
    """Total and per-token active parameter counts of the model `cfg` describes."""
    hidden = cfg.hidden_size
    embedding = 2 * cfg.resolved_vocab_size * hidden  # untied input embedding + output head
    # Everything in a layer except its experts: 2 RMSNorms, attention, router.
    layer_shared = 2 * hidden + attention_params(cfg) + hidden * cfg.num_experts
    final_norm = hidden

    total_experts = cfg.num_layers * cfg.num_experts * expert_params(cfg)
    active_experts = cfg.num_layers * cfg.moe_router_topk * expert_params(cfg)
    shared = embedding + cfg.num_layers * layer_shared + final_norm
    active = shared + active_experts
    return ParamCounts(
        total=shared + total_experts,
        active=active,
        embedding=embedding,
        active_non_embedding=active - embedding,
    )


def human_count(n: int) -> str:
    """A parameter count for people: 7149824 -> '7.15M', 1246094336 -> '1.25B'."""
    for scale, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)
