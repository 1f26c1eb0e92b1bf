"""Causal grouped-query self-attention (Ainslie et al. 2023) with rotary embeddings.

One fused q/k/v projection, RoPE on q and k in a single op, then the attention kernel:
flash-attn's `flash_attn_func` where it can run (`genos_cli.model.flash_attention` decides),
otherwise `torch.nn.functional.scaled_dot_product_attention` (which itself picks the
flash / memory-efficient kernels on GPU, and a flash-style kernel on CPU). Both take the
key/value heads as they are (native GQA), so k and v are never repeated per query head.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genos_cli.model.flash_attention import flash_attn, use_flash_attn
from genos_cli.model.layers import apply_rope


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh) + causal mask) v, query head h reading key/value head h // (H/G).

    q: (B, T, H, Dh); k, v: (B, T, G, Dh). Returns (B, T, H, Dh). The scale is 1/sqrt(Dh).
    """
    if use_flash_attn(q):
        flash = flash_attn().func
        assert flash is not None
        return flash(q, k, v, causal=True)  # (B, T, H, Dh) layout, GQA native
    # SDPA wants (B, heads, T, Dh); the transposes are views.
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
    )  # (B, H, T, Dh)
    return out.transpose(1, 2)


class LayerCache(NamedTuple):
    """One attention layer's key/value cache while decoding: preallocated buffers, one entry
    per query group (not per head), whose first `offset` positions hold the tokens read so
    far (`genos_cli.inference.kv_cache` keeps them)."""

    keys: torch.Tensor  # (B, G, T_max, Dh)
    values: torch.Tensor  # (B, G, T_max, Dh)
    offset: int  # the position of the first new token


def cached_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache
) -> torch.Tensor:
    """Causal attention of t new tokens at positions offset..offset+t-1 over the keys and
    values of every position before them, kept in `cache`, and their own.

    q: (B, t, H, Dh); k, v: (B, t, G, Dh). The new k and v are written into the cache
    buffers in place at [offset, offset + t), so nothing is concatenated per step; SDPA's
    `enable_gqa` reads group h // (H/G) for head h. Returns (B, t, H, Dh).
    """
    k_cache, v_cache, offset = cache
    t, end = q.shape[1], offset + q.shape[1]
    k_cache[:, :, offset:end] = k.transpose(1, 2)
    v_cache[:, :, offset:end] = v.transpose(1, 2)
    keys, values = k_cache[:, :, :end], v_cache[:, :, :end]  # (B, G, end, Dh) views
    mask, causal = None, False
    if t > 1 and offset == 0:
        causal = True  # a prefill: the usual causal mask
    elif t > 1:  # new query i sees keys up to offset + i
        mask = torch.ones(t, end, dtype=torch.bool, device=q.device).tril(diagonal=offset)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys, values, attn_mask=mask, is_causal=causal, enable_gqa=True
    )  # (B, H, t, Dh); one new token (decoding) attends to every cached key: no mask
    return out.transpose(1, 2)


class GroupedQueryAttention(nn.Module):
    """H query heads sharing G key/value heads; no biases.

    `qkv` is one (D -> (H + 2G) * Dh) projection whose output rows are [q | k | v]; the
    interop module splits it into Mixtral's q_proj / k_proj / v_proj.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(
            hidden_size, (num_heads + 2 * num_kv_heads) * self.head_dim, bias=False
        )
        self.o = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LayerCache | None = None
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). With `cache` (inference), x holds the tokens at positions
        offset..offset+T-1 (cos and sin are theirs) and attends to the cached ones too."""
        b, t, _ = x.shape
        h, g = self.num_heads, self.num_kv_heads
        qkv = self.qkv(x).view(b, t, h + 2 * g, self.head_dim)  # (B, T, H+2G, Dh)
        qk = apply_rope(qkv[:, :, : h + g], cos, sin)  # (B, T, H+G, Dh): q and k in one op
        q, k = qk[:, :, :h], qk[:, :, h:]  # (B, T, H, Dh), (B, T, G, Dh)
        v = qkv[:, :, h + g :]  # (B, T, G, Dh)
        out = causal_attention(q, k, v) if cache is None else cached_attention(q, k, v, cache)
        return self.o(out.reshape(b, t, h * self.head_dim))  # (B, T, D)
