"""Windows for scoring a token stream: every token but the first predicted exactly once.

The tokens (documents back to back, end-of-document ids included, as training packs them)
are cut into windows of at most the model's context, T tokens. Window w starts at
w * stride and scores only the labels no earlier window scored: with stride = T windows do
not overlap and a token sees the tokens before it in its window (exactly how a training
sample is laid out); with a smaller stride each scored token sees at least T - stride tokens
of context, for T / stride times the compute. Training-time validation, `genos eval` and
`genos score` all score with these windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # a label that is not scored (cross_entropy's default ignore_index)


def windows(num_tokens: int, context: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(start, length, first scored offset) of each window over a stream of `num_tokens`.

    A window holds inputs tokens[start : start + length] and labels shifted by one; labels
    before `first scored offset` were scored by an earlier window.
    """
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, {context}], got {stride}")
    scored_until = 0  # labels 1..scored_until are done (label i = token i)
    start = 0
    while scored_until < num_tokens - 1:
        length = min(context, num_tokens - 1 - start)
        first = scored_until - start  # label index start + 1 + first is the next unscored
        yield start, length, first
        scored_until = start + length
        start += stride


def window_batches(
    tokens: np.ndarray, context: int, stride: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids (B, L), labels (B, L)) batches of same-length windows, in stream order;
    unscored labels are IGNORE_INDEX. The short last window goes in a batch of its own."""
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for start, length, first in windows(tokens.size, context, stride):
        inputs = tokens[start : start + length]
        labels = tokens[start + 1 : start + 1 + length].copy()
        labels[:first] = IGNORE_INDEX
        if pending and pending[0][0].size != length:
            yield _stack(pending)
            pending = []
        pending.append((inputs, labels))
        if len(pending) == batch_size:
            yield _stack(pending)
            pending = []
    if pending:
        yield _stack(pending)


def _stack(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # lazily: the data layer stays importable without paying for torch

    inputs = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.int64, copy=False))
    labels = torch.from_numpy(np.stack([r[1] for r in rows]).astype(np.int64, copy=False))
    return inputs, labels
