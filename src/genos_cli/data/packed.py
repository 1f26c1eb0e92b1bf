"""Training samples: packed token windows over Megatron `.bin/.idx` data, epoch after epoch.

Samples (like megatron-core's `GPTDataset`, without its on-disk index cache):

- The documents of all prefixes (a blend is their concatenation) are put in a seeded random
  order and read as one token stream, eod ids included: documents are packed across their
  boundaries, so no token is padding.
- Sample `i` of an epoch is the window `stream[i*T : i*T + T + 1]` (T = `seq_length`);
  `input_ids = window[:-1]`, `labels = window[1:]`. Consecutive windows overlap by one token
  (the last label of one is the first input of the next), so every token of the epoch is an
  input exactly once, except the `(num_tokens - 1) % T + 1` tokens at the end of the stream.
- An epoch holds `(num_tokens - 1) // T` samples. Global sample indices run on across epochs;
  epoch `e` uses its own document order, drawn from `RandomState([seed, e])`.

Which samples a rank reads at which step is `genos_cli.train.batches`. See
docs/training-data.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genos_cli.data.documents import document_spans
from genos_cli.data.indexed import IndexedDataset
from genos_cli.errors import GenosError

PathLike = str | Path
_SEED_LIMIT = 2**32  # RandomState seeds are uint32 words


# -- document order and sample index (pure) -------------------------------------------------


def epoch_rng(seed: int, epoch: int) -> np.random.RandomState:
    """The random stream of one epoch.

    `RandomState` rather than `Generator`: its stream is frozen by NumPy's compatibility
    policy (NEP 19), so a checkpoint resumes on the same order after a NumPy upgrade.
    Seeding with the array `[seed, epoch]` (Mersenne Twister `init_by_array`) gives every
    epoch its own stream, the epoch-specific seed Megatron derives per epoch too.
    """
    return np.random.RandomState([seed, epoch])


@dataclass(frozen=True)
class EpochIndex:
    """Where everything is in one epoch's token stream."""

    order: np.ndarray  # (D,) int64: document ids in reading order
    offsets: np.ndarray  # (D+1,) int64: stream position where order[k] starts; [-1] = total
    sample_docs: np.ndarray  # (S,) int64: k such that sample i starts inside order[k]


def build_epoch_index(
    doc_lengths: np.ndarray, seq_length: int, num_samples: int, seed: int, epoch: int
) -> EpochIndex:
    """Shuffle the documents and locate each sample's first document, vectorised.

    `doc_lengths` (D,) are token counts. The sample index plays the part of Megatron's
    `sample_idx`: sample i starts at stream position i*T, in document `order[sample_docs[i]]`.
    """
    order = epoch_rng(seed, epoch).permutation(doc_lengths.size).astype(np.int64)
    offsets = np.zeros(doc_lengths.size + 1, np.int64)
    np.cumsum(doc_lengths[order], out=offsets[1:])
    starts = np.arange(num_samples, dtype=np.int64) * seq_length
    # side="right" then -1: the last document starting at or before the position, which
    # skips empty documents (they share their offset with the next one).
    sample_docs = np.searchsorted(offsets, starts, side="right") - 1
    return EpochIndex(order=order, offsets=offsets, sample_docs=sample_docs)


# -- the dataset ----------------------------------------------------------------------------


class PackedTokenDataset:
    """Windows of `seq_length + 1` tokens over shuffled, packed documents (see module doc).

    The tokens stay memory-mapped; the only arrays built are per-document (three int64 per
    document) and per-epoch (order, offsets, sample index), so millions of documents are fine.
    `len()` is the samples of one epoch; `sample(i)` takes any global index (epochs included).
    """

    def __init__(self, prefixes: Sequence[PathLike], seq_length: int, seed: int) -> None:
        if seq_length < 1:
            raise GenosError(f"seq_length must be at least 1, got {seq_length}")
        if not 0 <= seed < _SEED_LIMIT:
            raise GenosError(f"the data seed must be in [0, 2**32), got {seed}")
        if not prefixes:
            raise GenosError("no training data given")
        self.prefixes = tuple(Path(p) for p in prefixes)
        self.seq_length = seq_length
        self.seed = seed
        self._sources = [IndexedDataset(p) for p in self.prefixes]
        spans = [document_spans(ds) for ds in self._sources]
        self._doc_start = np.concatenate([s for s, _ in spans])  # (D,) within its source
        self._doc_length = np.concatenate([n for _, n in spans])  # (D,)
        self._doc_source = np.concatenate(
            [np.full(n.size, k, np.int32) for k, (_, n) in enumerate(spans)]
        )  # (D,)
        self.num_documents = int(self._doc_length.size)
        self.num_tokens = int(self._doc_length.sum())
        self.samples_per_epoch = max(self.num_tokens - 1, 0) // seq_length
        if self.samples_per_epoch == 0:
            names = ", ".join(str(p) for p in self.prefixes)
            raise GenosError(
                f"{names} holds {self.num_tokens} tokens, fewer than the {seq_length + 1} "
                "one training sample needs; use more data or a shorter seq_length"
            )
        self._epochs: dict[int, EpochIndex] = {}

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> np.ndarray:
        return self.sample(i)

    # np.memmap pickles as a full copy: ship the recipe instead (DataLoader workers, spawn).
    def __getstate__(self) -> dict[str, Any]:
        return {"prefixes": self.prefixes, "seq_length": self.seq_length, "seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["prefixes"], state["seq_length"], state["seed"])  # type: ignore[misc]

    def epoch_index(self, epoch: int) -> EpochIndex:
        """The epoch's order and sample index, built once and kept for the two latest epochs
        (a global batch may straddle an epoch boundary)."""
        if epoch not in self._epochs:
            if len(self._epochs) >= 2:
                del self._epochs[min(self._epochs)]
            self._epochs[epoch] = build_epoch_index(
                self._doc_length, self.seq_length, self.samples_per_epoch, self.seed, epoch
            )
        return self._epochs[epoch]

    def sample(self, i: int) -> np.ndarray:
        """Global sample `i`: (seq_length + 1,) int64 tokens."""
        if i < 0:
            raise IndexError(f"sample index {i} is negative")
        epoch, local = divmod(int(i), self.samples_per_epoch)
        index = self.epoch_index(epoch)
        width = self.seq_length + 1
        out = np.empty(width, np.int64)  # (T+1,)
        k = int(index.sample_docs[local])
        skip = local * self.seq_length - int(index.offsets[k])  # tokens of order[k] before it
        filled = 0
        while filled < width:  # over the few documents this window touches
            doc = int(index.order[k])
            take = min(int(self._doc_length[doc]) - skip, width - filled)
            start = int(self._doc_start[doc]) + skip
            tokens = self._sources[int(self._doc_source[doc])].tokens
            out[filled : filled + take] = tokens[start : start + take]
            filled += take
            skip = 0
            k += 1
        return out

    def samples(self, indices: np.ndarray) -> np.ndarray:
        """Global samples `indices` (N,): (N, seq_length + 1) int64, gathered at once (no
        Python loop over samples or tokens: a micro-batch is one gather per source)."""
        flat = np.asarray(indices, np.int64).ravel()
        if flat.size and flat.min() < 0:
            raise IndexError(f"sample index {int(flat.min())} is negative")
        out = np.empty((flat.size, self.seq_length + 1), np.int64)
        epochs, local = np.divmod(flat, self.samples_per_epoch)
        for epoch in np.unique(epochs).tolist():
            rows = np.flatnonzero(epochs == epoch)
            out[rows] = self._gather(self.epoch_index(epoch), local[rows])
        return out

    def _gather(self, index: EpochIndex, local: np.ndarray) -> np.ndarray:
        """Samples `local` (R,) of one epoch: (R, T+1) tokens, through the epoch's stream."""
        positions = local[:, None] * self.seq_length + np.arange(self.seq_length + 1)  # (R, T+1)
        k = np.searchsorted(index.offsets, positions, side="right") - 1  # reading-order slot
        doc = index.order[k]  # (R, T+1) document of each position
        where = self._doc_start[doc] + (positions - index.offsets[k])  # within its source
        if len(self._sources) == 1:
            return np.asarray(self._sources[0].tokens[where], np.int64)
        out = np.empty(positions.shape, np.int64)
        source = self._doc_source[doc]
        for s, ds in enumerate(self._sources):
            hit = source == s
            out[hit] = ds.tokens[where[hit]]
        return out
