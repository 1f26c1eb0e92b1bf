"""Token documents as stored: the documents of `.bin/.idx` data sets, back to back.

What evaluation and scoring read (in stored order, unlike training's shuffled packing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genos_cli.data.indexed import IndexedDataset, bin_path, idx_path
from genos_cli.errors import GenosError


def document_spans(ds: IndexedDataset) -> tuple[np.ndarray, np.ndarray]:
    """(token start, token count) of each document of `ds`, both (D,) int64.

    A Megatron document is a run of consecutive sequences (genos writes one per document),
    and a valid `.bin` holds the sequences back to back, so a document is one contiguous span.
    """
    lengths = ds.sequence_lengths.astype(np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    if not np.array_equal(ds.sequence_pointers, starts * ds.dtype.itemsize):
        raise GenosError(
            f"{idx_path(ds.prefix)} has sequences that are not stored back to back in "
            f"{bin_path(ds.prefix)}; rewrite the data with genos preprocess"
        )
    doc = ds.document_indices
    n = lengths.size
    if doc.size < 1 or doc[0] != 0 or doc[-1] != n or np.any(np.diff(doc) < 0):
        raise GenosError(f"{idx_path(ds.prefix)} has an invalid document index")
    token_at = np.concatenate([[0], ends])  # (S+1,) token offset of each sequence start
    first, last = token_at[doc[:-1]], token_at[doc[1:]]
    return first, last - first


@dataclass
class TokenDocuments:
    """Documents back to back: `tokens` (N,) and the document of every token (N,)."""

    tokens: np.ndarray  # (N,) int64
    doc_of_token: np.ndarray  # (N,) int64
    sources: list[str]

    @property
    def num_documents(self) -> int:
        return int(self.doc_of_token[-1]) + 1 if self.doc_of_token.size else 0


def read_documents(prefixes: Sequence[Path]) -> TokenDocuments:
    """Every document of `prefixes`, in stored order, tokens in memory."""
    tokens, docs = [], []
    offset = 0
    for prefix in prefixes:
        ds = IndexedDataset(prefix)
        _, lengths = document_spans(ds)  # checks the documents lie back to back
        tokens.append(np.asarray(ds.tokens, np.int64))
        docs.append(np.repeat(np.arange(offset, offset + lengths.size), lengths))
        offset += lengths.size
    if not tokens:
        raise GenosError(f"{', '.join(map(str, prefixes))} holds no documents")
    return TokenDocuments(np.concatenate(tokens), np.concatenate(docs), [str(p) for p in prefixes])
