"""Building blocks of the Genos transformer: RMSNorm, rotary position embeddings, SwiGLU.

Shape convention in `genos_cli.model`: B batch, T sequence, D hidden, H query heads,
G key/value heads (query groups), Dh head width, E experts, F expert inner width,
N tokens (B*T), K top-k. Comments give shapes as `# (B, T, D)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), no bias, no mean subtraction.

    Normalises in fp32 and casts back before scaling, as Mixtral/Llama do, so bf16 runs
    normalise with full precision and fp32 runs match Hugging Face's `MixtralRMSNorm`.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def rope_frequencies(head_dim: int, base: float) -> torch.Tensor:
    """Inverse frequencies theta_i = base^(-2i/Dh), i < Dh/2 (Su et al. 2021, RoFormer eq. 15)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_cos_sin(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position x frequency, each (T, Dh), in the "rotate half" layout.

    The two halves of the head repeat the same Dh/2 frequencies (Llama/Mixtral/GPT-NeoX
    layout), so dimension i pairs with i + Dh/2, and genos weights load into Hugging Face
    Mixtral without permuting q/k rows. Angles are computed in fp32 exactly as Mixtral and
    Megatron compute them, so the tables (not only the maths) agree with those models.
    """
    positions = torch.arange(seq_len, dtype=torch.float32)
    angles = torch.outer(positions, rope_frequencies(head_dim, base))  # (T, Dh/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, Dh)
    return angles.cos().float(), angles.sin().float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension's two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (i, i + Dh/2) of `x` by its position's angle (RoFormer eq. 34).

    x: (B, T, heads, Dh); cos, sin: (T, Dh). Returns x's shape and dtype.
    """
    cos = cos[:, None, :].to(x.dtype)  # (T, 1, Dh): broadcast over heads
    sin = sin[:, None, :].to(x.dtype)
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Holds the cos/sin tables for `max_seq_len` positions (not saved in checkpoints)."""

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_dim: int, max_seq_len: int, base: float) -> None:
        super().__init__()
        self.head_dim, self.base = head_dim, base
        cos, sin = rope_cos_sin(max_seq_len, head_dim, base)
        self.register_buffer("cos", cos, persistent=False)  # (T_max, Dh)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        if seq_len > self.cos.shape[0]:
            # Longer than max_seq_length (e.g. evaluation on longer windows): extend the table.
            cos, sin = rope_cos_sin(seq_len, self.head_dim, self.base)
            return cos.to(self.cos.device), sin.to(self.sin.device)
        return self.cos[:seq_len], self.sin[:seq_len]  # (T, Dh) each


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up for a fused (..., 2F) projection whose halves are [gate | up].

    SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6).
    """
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class SwiGLU(nn.Module):
    """One SwiGLU feed-forward expert: down(SiLU(x W_gate) * (x W_up)), no biases.

    Weights are stored input-major, `gate_up` (D, 2F) = [W_gate | W_up] and `down` (F, D),
    the same layout as one slice of the stacked experts in `genos_cli.model.moe`, so
    moving weights between the two is indexing, not transposing. DeepSpeed's MoE layer
    deep-copies this module once per local expert (see `genos_cli.train.expert_parallel`).
    """

    def __init__(self, hidden_size: int, ffn_hidden_size: int) -> None:
        super().__init__()
        self.gate_up = nn.Parameter(torch.empty(hidden_size, 2 * ffn_hidden_size))
        self.down = nn.Parameter(torch.empty(ffn_hidden_size, hidden_size))
        nn.init.normal_(self.gate_up, std=0.02)
        nn.init.normal_(self.down, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        return swiglu(x @ self.gate_up) @ self.down
