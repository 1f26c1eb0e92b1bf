"""Learning-rate schedule: linear warmup, then cosine decay to a floor (as in Megatron-LM's
`--lr-decay-style cosine` and nanoGPT)."""

from __future__ import annotations

import math


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warmup rises linearly to `lr` over `warmup_steps` steps (step 0 already gets lr/warmup so
    no step is wasted at zero); then it follows half a cosine from `lr` down to `min_lr` at
    `total_steps`, and stays at `min_lr` beyond.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
