"""Language-model quality of a checkpoint: loss, perplexity and bits per base, next to a
uniform guess and an order-k Markov model scored on exactly the same bases.

Windows: the documents are read back to back (as training packs them, end-of-document ids
included) and cut into windows of the model's full context, T tokens. Window w starts at
w * stride and scores only the tokens no earlier window scored, so every token but the very
first is predicted exactly once: with stride = T (the default) windows do not overlap and
a token sees the tokens before it in its window; with a smaller stride each scored token
sees at least T - stride tokens of context, for T / stride times the compute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from genos_cli.eval.bases import PieceTable
from genos_cli.eval.data import TokenDocuments
from genos_cli.eval.markov import MarkovModel, positions_in_documents
from genos_cli.model import GenosForCausalLM

IGNORE = -100
ProgressCallback = Callable[[int, int], None]  # (tokens scored so far, tokens to score)


@dataclass
class LMEvaluation:
    tokens: int  # tokens scored
    bases: int  # bases those tokens spell
    nll_nats: float  # total negative log-likelihood
    windows: int
    context: int
    stride: int
    tokens_forwarded: int  # scored + context-only tokens run through the model
    seconds: float
    expert_counts: np.ndarray  # (layers, experts) tokens routed (top-k: k per token)

    @property
    def loss(self) -> float:
        return self.nll_nats / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_base(self) -> float:
        return self.nll_nats / math.log(2) / self.bases if self.bases else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_forwarded / self.seconds if self.seconds > 0 else float("nan")


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


def _batches(
    tokens: np.ndarray, context: int, stride: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, labels) batches of same-length windows, unscored labels = IGNORE."""
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for start, length, first in windows(tokens.size, context, stride):
        inputs = tokens[start : start + length]
        labels = tokens[start + 1 : start + 1 + length].copy()
        labels[:first] = IGNORE
        if pending and pending[0][0].size != length:  # the short last window goes alone
            yield _stack(pending)
            pending = []
        pending.append((inputs, labels))
        if len(pending) == batch_size:
            yield _stack(pending)
            pending = []
    if pending:
        yield _stack(pending)


def _stack(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.from_numpy(np.stack([r[0] for r in rows]))
    labels = torch.from_numpy(np.stack([r[1] for r in rows]))
    return inputs, labels


@torch.inference_mode()
def evaluate_model(
    model: GenosForCausalLM,
    docs: TokenDocuments,
    bases_per_token: np.ndarray,
    *,
    batch_size: int = 8,
    stride: int | None = None,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: ProgressCallback | None = None,
) -> LMEvaluation:
    """Score every token of `docs` but the first with `model` (see the module doc)."""
    cfg = model.config
    context = cfg.max_seq_length
    stride = stride or context
    table = torch.as_tensor(bases_per_token, dtype=torch.float64)
    device = torch.device(device)
    nll = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(cfg.num_layers, cfg.num_experts, dtype=torch.float64, device=device)
    scored = bases = forwarded = n_windows = 0
    total = max(docs.tokens.size - 1, 0)
    t0 = time.perf_counter()
    for inputs, labels in _batches(docs.tokens, context, stride, batch_size):
        keep = labels != IGNORE
        scored += int(keep.sum())
        bases += int(table[labels[keep]].sum())
        forwarded += inputs.numel()
        n_windows += inputs.shape[0]
        inputs, labels = inputs.to(device), labels.to(device)
        with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype is not None):
            out = model(inputs)
        logits = out.logits.float()  # (B, T, V)
        nll += F.cross_entropy(
            logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=IGNORE,
            reduction="sum",
        ).double()  # fmt: skip
        counts += out.expert_counts.double()
        if progress is not None:
            progress(scored, total)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return LMEvaluation(
        tokens=scored,
        bases=bases,
        nll_nats=float(nll),
        windows=n_windows,
        context=context,
        stride=stride,
        tokens_forwarded=forwarded,
        seconds=time.perf_counter() - t0,
        expert_counts=counts.cpu().numpy(),
    )


def _chunks(docs: TokenDocuments, target_tokens: int = 1 << 20) -> Iterator[slice]:
    """Token ranges of whole documents, about `target_tokens` each (bounded memory)."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(docs.doc_of_token)) + 1])
    begin = 0
    for cut in starts[1:].tolist():
        if cut - begin >= target_tokens:
            yield slice(begin, cut)
            begin = cut
    yield slice(begin, docs.tokens.size)


def markov_bits(model: MarkovModel, docs: TokenDocuments, table: PieceTable) -> tuple[float, int]:
    """(total bits, bases) of the Markov model on the bases the language model scored: every
    token's bases but the first token's."""
    bits, bases = 0.0, 0
    for part in _chunks(docs):
        codes, token_of_base = table.decode(docs.tokens[part])
        pos = positions_in_documents(docs.doc_of_token[part][token_of_base])
        p = model.probabilities(codes, pos)
        if part.start == 0:  # the stream's first token has no context: nobody scores it
            p = p[token_of_base > 0]
        bits += float(-np.log2(p).sum())
        bases += int(p.size)
    return bits, bases


def fit_markov(
    sources: list[TokenDocuments], table: PieceTable, order: int, concentration: float
) -> MarkovModel:
    model = MarkovModel.empty(order, concentration)
    for docs in sources:
        for part in _chunks(docs):
            codes, token_of_base = table.decode(docs.tokens[part])
            model.update(codes, positions_in_documents(docs.doc_of_token[part][token_of_base]))
    return model


@dataclass
class ExpertUsage:
    """Per layer: share of routed tokens per expert, entropy (bits) and max/mean load."""

    shares: np.ndarray  # (L, E)
    entropy_bits: np.ndarray  # (L,)
    max_over_mean: np.ndarray  # (L,)

    @classmethod
    def of(cls, counts: np.ndarray) -> ExpertUsage:
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(shares > 0, -shares * np.log2(shares), 0.0)
        return cls(shares, terms.sum(axis=1), shares.max(axis=1) * shares.shape[1])
