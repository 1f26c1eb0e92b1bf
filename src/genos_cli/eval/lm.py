"""Language-model quality of a checkpoint: loss, perplexity and bits per base, next to a
uniform guess and an order-k Markov model scored on exactly the same bases.

The model scores the documents in the windows of `genos_cli.data.score_windows` (every token
but the very first predicted once); bases are counted by the rule of `genos_cli.data.bases`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genos_cli.data.bases import PieceTable, bits_per_base
from genos_cli.data.documents import TokenDocuments
from genos_cli.data.score_windows import IGNORE_INDEX, window_batches
from genos_cli.eval.markov import MarkovModel, positions_in_documents
from genos_cli.model import GenosForCausalLM
from genos_cli.model.losses import nll_sums

ProgressCallback = Callable[[int, int], None]  # (tokens scored so far, tokens to score)


@dataclass
class LMEvaluation:
    tokens: int  # tokens scored
    bases: int  # bases those tokens spell
    nll_nats: float  # total negative log-likelihood
    base_nll_nats: float  # of the tokens that spell bases (end-of-document ids left out)
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
        return bits_per_base(self.base_nll_nats, self.bases) if self.bases else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_forwarded / self.seconds if self.seconds > 0 else float("nan")


def combined(parts: Sequence[LMEvaluation]) -> LMEvaluation:
    """Several evaluations with the same model and windows (the two strands) as one: every
    total summed, so bits per base is the total NLL over the total bases."""
    if len(parts) == 1:
        return parts[0]
    return LMEvaluation(
        tokens=sum(p.tokens for p in parts),
        bases=sum(p.bases for p in parts),
        nll_nats=sum(p.nll_nats for p in parts),
        base_nll_nats=sum(p.base_nll_nats for p in parts),
        windows=sum(p.windows for p in parts),
        context=parts[0].context,
        stride=parts[0].stride,
        tokens_forwarded=sum(p.tokens_forwarded for p in parts),
        seconds=sum(p.seconds for p in parts),
        expert_counts=np.sum([p.expert_counts for p in parts], axis=0),
    )


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
    device = torch.device(device)
    table = torch.as_tensor(bases_per_token, dtype=torch.float64, device=device)  # (V,)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # see nll_sums
    counts = torch.zeros(cfg.num_layers, cfg.num_experts, dtype=torch.float64, device=device)
    scored = forwarded = n_windows = 0
    total = max(docs.tokens.size - 1, 0)
    t0 = time.perf_counter()
    for inputs, labels in window_batches(docs.tokens, context, stride, batch_size):
        scored += int((labels != IGNORE_INDEX).sum())  # host-side, for the progress bar
        forwarded += inputs.numel()
        n_windows += inputs.shape[0]
        inputs, labels = inputs.to(device), labels.to(device)
        with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype is not None):
            out = model(inputs)
        sums += nll_sums(out.logits, labels, table)
        counts += out.expert_counts.double()
        if progress is not None:
            progress(scored, total)
    nll, tokens, bases, base_nll = sums.tolist()
    return LMEvaluation(
        tokens=int(tokens),
        bases=int(bases),
        nll_nats=nll,
        base_nll_nats=base_nll,
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
