"""The Genos Mixture-of-Experts causal language model.

Decoder-only, pre-norm (RMSNorm), RoPE, grouped-query attention, an MoE feed-forward layer
in every block, no biases, untied input and output embeddings: the function family of
Hugging Face's `MixtralForCausalLM` (tests/parity proves it), built from a `ModelConfig`.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from genos_cli.model.attention import GroupedQueryAttention, LayerCache
from genos_cli.model.init import init_weights
from genos_cli.model.layers import RMSNorm, RotaryEmbedding
from genos_cli.model.losses import lm_loss, load_balancing_loss, router_z_loss
from genos_cli.model.moe import MoELayer, MoERouting

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig


class GenosOutput(NamedTuple):
    """What one forward pass returns.

    `loss` = lm_loss + aux_loss_coeff * aux_loss + z_loss_coeff * z_loss, and like `lm_loss`
    is None without labels. `aux_loss` and `z_loss` are means over layers.
    `expert_counts` (L, E) counts the (token, slot) routes each expert received per layer.

    A NamedTuple, not a dataclass, because DeepSpeed finds the output tensors to hook (its
    backward prologue and gradient-accumulation scaling) by walking tuples, lists and dicts
    only: with a dataclass its bf16 optimizer never cleared the bf16 gradients between
    micro-batches and accumulated micro-batch k's gradient (A - k + 1) times.
    """

    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    expert_counts: torch.Tensor  # (L, E) int64


class Block(nn.Module):
    """x + Attn(Norm(x)), then x + MoE(Norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = GroupedQueryAttention(
            cfg.hidden_size, cfg.num_attention_heads, cfg.num_query_groups
        )
        self.moe_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.moe = MoELayer(
            cfg.hidden_size, cfg.expert_ffn_hidden_size, cfg.num_experts, cfg.moe_router_topk
        )

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LayerCache | None = None
    ) -> tuple[torch.Tensor, MoERouting]:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache)  # (B, T, D)
        moe_out, routing = self.moe(self.moe_norm(x))
        return x + moe_out, routing


class GenosForCausalLM(nn.Module):
    """The full model: embedding -> blocks -> final norm -> output head.

    `forward(input_ids, labels)`: input_ids (B, T) int64; labels (B, T) aligned with the
    logits (`labels[:, t]` is the token after position t; -100 = ignore), or None.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.resolved_vocab_size, config.hidden_size)
        self.rope = RotaryEmbedding(config.head_dim, config.max_seq_length, config.rope_base)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.resolved_vocab_size, bias=False)
        init_weights(self, config)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> GenosOutput:
        cfg = self.config
        cos, sin = self.rope(input_ids.shape[1])  # (T, Dh) each
        x = self.embed(input_ids)  # (B, T, D)
        aux_losses, z_losses, counts = [], [], []
        for block in self.blocks:
            x, routing = block(x, cos, sin)
            aux_losses.append(load_balancing_loss(routing.probs, routing.experts, cfg.num_experts))
            z_losses.append(router_z_loss(routing.logits))
            counts.append(routing.counts)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        aux_loss = torch.stack(aux_losses).mean()
        z_loss = torch.stack(z_losses).mean()

        loss = lm = None
        if labels is not None:
            lm = lm_loss(logits, labels)
            loss = lm + cfg.aux_loss_coeff * aux_loss
            if cfg.z_loss_coeff > 0:
                loss = loss + cfg.z_loss_coeff * z_loss
        return GenosOutput(
            logits=logits,
            loss=loss,
            lm_loss=lm,
            aux_loss=aux_loss,
            z_loss=z_loss,
            expert_counts=torch.stack(counts),
        )

    def forward_cached(
        self,
        input_ids: torch.Tensor,
        cache: Sequence[tuple[torch.Tensor, torch.Tensor]],
        offset: int,
        *,
        last: bool = True,
    ) -> torch.Tensor:
        """Logits of `input_ids` (B, t), the tokens at positions offset..offset+t-1, given the
        keys and values of the positions before them in `cache` (one (k, v) pair of
        (B, G, T_max, Dh) buffers per layer, see `genos_cli.inference.kv_cache`); writes
        theirs into it. Returns (B, 1, V) for the last position only (`last`, what decoding
        needs) or (B, t, V). The training `forward` is untouched by this path."""
        t = input_ids.shape[1]
        cos, sin = self.rope(offset + t)  # (offset + t, Dh) each
        cos, sin = cos[offset:], sin[offset:]  # (t, Dh): the new tokens' positions
        x = self.embed(input_ids)  # (B, t, D)
        for block, (keys, values) in zip(self.blocks, cache, strict=True):
            x, _ = block(x, cos, sin, LayerCache(keys, values, offset))
        if last:
            x = x[:, -1:]  # (B, 1, D)
        return self.lm_head(self.norm(x))  # (B, 1 or t, V)

    @torch.no_grad()
    def hidden_states(self, input_ids: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The residual stream after `layer` blocks: (B, T) -> (B, T, D).

        0 = the token embeddings; `num_layers` (or None) = after the final norm, what the
        output head reads. For embeddings of sequences (probes), not for training.
        """
        num_layers = self.config.num_layers
        layer = num_layers if layer is None else layer
        if not 0 <= layer <= num_layers:
            raise ValueError(f"layer must be in [0, {num_layers}], got {layer}")
        cos, sin = self.rope(input_ids.shape[1])  # (T, Dh) each
        x = self.embed(input_ids)  # (B, T, D)
        for block in self.blocks[:layer]:
            x, _ = block(x, cos, sin)
        return self.norm(x) if layer == num_layers else x


def compile_available(device: torch.device | str = "cpu") -> bool:
    """Whether `torch.compile`'s default backend (inductor) can generate kernels for
    `device`: a C++ compiler for CPU, Triton for CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    if device.type == "cpu":
        return any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++"))
    return False


def build_model(
    cfg: ModelConfig, *, compile: bool | None = None, device: torch.device | str = "cpu"
) -> GenosForCausalLM:
    """The model `cfg` describes, freshly initialised on `device` (seed torch beforehand to
    reproduce).

    `compile`: wrap `forward` in `torch.compile` (the module and its state-dict names stay
    the same). It fuses the elementwise work around the matmuls (RMSNorm, RoPE, SwiGLU,
    routing, losses) and is ~1.2-1.3x faster per training step on CPU
    (docs/model.md); the first step then takes tens of seconds to compile. None = compile
    wherever `compile_available(device)`.
    """
    model = GenosForCausalLM(cfg).to(device)
    if compile is None:
        compile = compile_available(device)
    if compile:
        model.compile()
    return model
