"""Weight initialisation of the Genos transformer."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import nn

from genos_cli.model.attention import GroupedQueryAttention
from genos_cli.model.layers import RMSNorm, SwiGLU
from genos_cli.model.moe import MoELayer

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Normal(0, init_std) for every matrix, ones for RMSNorm gains.

    The two projections that write into the residual stream (attention output, expert down)
    use init_std / sqrt(2 * num_layers), so the residual's variance does not grow with depth
    (GPT-2, Radford et al. 2019; Megatron-LM's `scaled_init_method_normal`).
    """
    std = cfg.init_std
    out_std = std / math.sqrt(2 * cfg.num_layers)
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.Linear):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, MoELayer):
            nn.init.normal_(module.w_gate_up, std=std)
            nn.init.normal_(module.w_down, std=out_std)
        elif isinstance(module, SwiGLU):
            nn.init.normal_(module.gate_up, std=std)
            nn.init.normal_(module.down, std=out_std)
    # A second pass: modules() visits the attention before its `o` Linear, which the first
    # pass would otherwise re-initialise with the unscaled std.
    for module in model.modules():
        if isinstance(module, GroupedQueryAttention):
            nn.init.normal_(module.o.weight, std=out_std)
