"""The key/value cache of incremental decoding: preallocated, one entry per query group.

Grouped-query attention (Ainslie et al. 2023) exists for this: the H query heads share G
key/value heads, so the cache holds G heads per layer, H/G times less memory and memory
traffic than a cache of every head. Buffers are allocated once for the longest sequence
and written in place (`genos_cli.model.attention.cached_attention`), so a decoding step
concatenates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig
    from genos_cli.model import GenosForCausalLM


@dataclass
class KVCache:
    """Per layer a (k, v) pair of (B, G, capacity, Dh) buffers; positions [0, length) hold
    the keys and values of the tokens read so far."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int = 0

    @classmethod
    def allocate(
        cls,
        cfg: ModelConfig,
        batch: int,
        capacity: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        shape = (batch, cfg.num_query_groups, capacity, cfg.head_dim)  # (B, G, T_max, Dh)
        layers = [
            (torch.empty(shape, device=device, dtype=dtype),
             torch.empty(shape, device=device, dtype=dtype))
            for _ in range(cfg.num_layers)
        ]  # fmt: skip
        return cls(layers)

    @property
    def batch(self) -> int:
        return self.layers[0][0].shape[0]

    @property
    def capacity(self) -> int:
        return self.layers[0][0].shape[2]

    def rows(self, count: int) -> KVCache:
        """A cache over the first `count` rows of these buffers (views: writes go through)."""
        return KVCache([(k[:count], v[:count]) for k, v in self.layers], self.length)

    def broadcast_first_row(self) -> None:
        """Copy row 0's cached positions to every row: one prompt read once, then sampled
        several times."""
        for k, v in self.layers:
            k[1:, :, : self.length] = k[:1, :, : self.length]
            v[1:, :, : self.length] = v[:1, :, : self.length]


def forward_cached(
    model: GenosForCausalLM, cache: KVCache, input_ids: torch.Tensor, *, last: bool = True
) -> torch.Tensor:
    """Logits after reading `input_ids` (B, t) past the cached positions, which grow by t:
    (B, V) of the last position (`last`), else (B, t, V)."""
    if cache.length + input_ids.shape[1] > cache.capacity:
        raise ValueError(
            f"the cache holds {cache.capacity} positions; {cache.length} are used and "
            f"{input_ids.shape[1]} more do not fit"
        )
    logits = model.forward_cached(input_ids, cache.layers, cache.length, last=last)
    cache.length += input_ids.shape[1]
    return logits[:, -1] if last else logits
