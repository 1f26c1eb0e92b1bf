"""Choosing the next token from the model's logits: greedy, or sampling with temperature,
top-k and top-p (nucleus), with special ids masked out.

The warpers are applied in the order Hugging Face's `generate()` applies them (temperature,
then top-k, then top-p), so the same settings mean the same distribution in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genos_cli.errors import GenosError


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. `temperature` 0 = greedy (argmax); `top_k` 0 = all
    tokens; `top_p` 1 = no nucleus cut."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and self.temperature != float("inf")):
            raise GenosError(
                f"--temperature must be a number >= 0 (0 = greedy), got {self.temperature}"
            )
        if self.top_k < 0:
            raise GenosError(f"--top-k must be >= 0 (0 = no top-k cut), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise GenosError(f"--top-p must be in (0, 1] (1 = no nucleus cut), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def warp(logits: torch.Tensor, allowed: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Log-weights of the distribution to sample from: (B, V) -> (B, V) float32, -inf for
    the tokens that cannot be chosen (not `allowed`, below the top-k, outside the nucleus)."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))  # (B, V)
    if sampling.greedy:
        return logits
    logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1:
        # Keep the most probable tokens until their mass reaches top_p (Holtzman et al. 2020,
        # "The Curious Case of Neural Text Degeneration", section 3.1): drop a token when the
        # tokens ranked above it already hold top_p.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # (B, V) mass ranked above each token
        drop_sorted = before >= sampling.top_p  # (B, V) in rank order
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # vocab order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose(
    logits: torch.Tensor,
    allowed: torch.Tensor,
    sampling: Sampling,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of each row: (B, V) logits -> (B,) int64.

    Sampling draws exponential noise and takes argmax(p / noise), which picks token i with
    probability p_i (the exponential race; gpt-fast's `multinomial_sample_one_no_sync`),
    without the host synchronisation `torch.multinomial` has on GPUs.
    """
    weights = warp(logits, allowed, sampling)
    if sampling.greedy:
        return weights.argmax(dim=-1)
    probs = torch.softmax(weights, dim=-1)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)
