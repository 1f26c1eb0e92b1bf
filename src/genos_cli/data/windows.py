"""Cut normalised sequence blocks into fixed-length ACGT windows and assign train/val.

Windows never cross a non-ACGT base (N, IUPAC code) or a record boundary: each maximal ACGT
run is cut into windows of `length` bp starting every `stride` bp. The bases after a run's
last window are kept as one shorter sequence when there are at least `min_length` of them
(with the default `min_length == length` they are dropped). A run that spans input blocks
is cut as it streams, so memory stays bounded whatever the length of a chromosome.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

_N, _BREAK = ord("N"), ord("|")


@dataclass(frozen=True)
class WindowSpec:
    length: int = 512
    stride: int = 512
    min_length: int = 512

    def __post_init__(self) -> None:
        if self.length < 1 or self.stride < 1 or not 1 <= self.min_length <= self.length:
            raise ValueError(f"invalid window settings {self}")


@dataclass
class WindowBatch:
    """Many sequences back to back: `data` (uint8 ACGT bytes) and their `lengths`."""

    data: bytes  # sum(lengths) ACGT bytes
    lengths: np.ndarray  # (n,) int64
    is_val: np.ndarray  # (n,) bool

    @property
    def bp(self) -> int:
        return len(self.data)

    def __len__(self) -> int:
        return int(self.lengths.size)

    def sequences(self) -> Iterator[bytes]:
        start = 0
        for n in self.lengths.tolist():
            yield self.data[start : start + n]
            start += n


@dataclass
class WindowStats:
    acgt_bp: int = 0  # bases in ACGT runs
    short_bp: int = 0  # in runs shorter than min_length (dropped whole)
    covered_bp: int = 0  # in at least one written sequence
    sequences: int = 0
    sequence_bp: int = 0  # summed over sequences (overlap counts twice when stride < length)
    val_sequences: int = 0
    val_bp: int = 0

    @property
    def uncovered_bp(self) -> int:
        """Bases in long-enough runs that no sequence holds (run ends, stride gaps)."""
        return self.acgt_bp - self.covered_bp - self.short_bp


def split_uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) from window indices (splitmix64 finaliser).

    The split depends only on (seed, window index): not on batch sizes or worker counts.
    """
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class Windower:
    """Stateful cutter: feed it one source's blocks after another, collect batches."""

    def __init__(
        self, spec: WindowSpec, *, val_ratio: float, seed: int, batch_bp: int = 1 << 20
    ) -> None:
        self.spec = spec
        self.val_ratio = val_ratio
        self.seed = seed
        self.batch_bp = batch_bp
        self.stats = WindowStats()
        self._next_index = 0  # global window counter, drives the split
        self._offsets = np.arange(spec.length)
        self._pieces: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._val: list[np.ndarray] = []
        self._pending_bp = 0
        self._holdout = False

    # -- public ---------------------------------------------------------------------------

    def windows(self, blocks: Iterable[bytes], *, holdout: bool = False) -> Iterator[WindowBatch]:
        """Cut one source's normalised blocks, yielding batches as they fill up.

        The reader ends every source with a record break, so no run stays open across
        sources. Call `flush()` after the last source for the final partial batch.
        """
        self._holdout = holdout
        empty = np.empty(0, np.uint8)
        carry = empty  # the open run's bases from the last window start on
        continued = False  # the open run already produced windows
        skip = 0  # bases of the open run to skip before its next window (stride > length)
        for block in blocks:
            new = np.frombuffer(block, np.uint8)
            buf = np.concatenate([carry, new]) if carry.size else new
            breaks = np.flatnonzero((buf == _N) | (buf == _BREAK))
            self.stats.acgt_bp += new.size - breaks.size
            starts = np.concatenate([[0], breaks + 1])
            ends = np.concatenate([breaks, [buf.size]])
            last = starts.size - 1
            # Only non-empty runs matter, plus the first (continues the open run) and the
            # last (may continue into the next block); long N stretches cost nothing here.
            keep = ends > starts
            keep[0] = keep[last] = True
            in_continued, in_skip = continued, skip
            carry, continued, skip = empty, False, 0
            for i in np.flatnonzero(keep).tolist():
                start, end = int(starts[i]), int(ends[i])
                seg_continued, seg_skip = (in_continued, in_skip) if i == 0 else (False, 0)
                if start == end and not (seg_continued or seg_skip):
                    continue
                seg = buf[start:end]
                if seg_skip:
                    taken = min(seg_skip, seg.size)
                    seg, seg_skip = seg[taken:], seg_skip - taken
                if i == last:
                    carry, continued, skip = self._cut_open(seg, seg_continued, seg_skip)
                else:
                    self._cut_final(seg, seg_continued)
            if self._pending_bp >= self.batch_bp:
                yield self._take()
        if carry.size or continued:
            self._cut_final(carry, continued)

    def flush(self) -> Iterator[WindowBatch]:
        if self._pieces:
            yield self._take()

    # -- cutting --------------------------------------------------------------------------

    def _cut_open(
        self, seg: np.ndarray, continued: bool, skip: int
    ) -> tuple[np.ndarray, bool, int]:
        """Emit the complete windows of a run segment that may continue; return the carry."""
        length, stride = self.spec.length, self.spec.stride
        if skip:  # the whole segment lies in a stride gap
            return np.empty(0, np.uint8), continued, skip
        k = (seg.size - length) // stride + 1 if seg.size >= length else 0
        if k == 0:
            return seg.copy(), continued, 0
        self._emit_windows(seg, k, continued)
        nxt = k * stride
        if nxt <= seg.size:
            return seg[nxt:].copy(), True, 0
        return np.empty(0, np.uint8), True, nxt - seg.size

    def _cut_final(self, seg: np.ndarray, continued: bool) -> None:
        """Emit all windows of a run segment that ends here, and its tail if long enough."""
        length, stride, min_length = self.spec.length, self.spec.stride, self.spec.min_length
        k = (seg.size - length) // stride + 1 if seg.size >= length else 0
        if k:
            self._emit_windows(seg, k, continued)
            tail_start = (k - 1) * stride + max(length, stride)
        else:
            tail_start = max(length - stride, 0) if continued else 0
        tail = seg[tail_start:]
        if tail.size >= min_length:
            self._emit(tail, np.array([tail.size]))
            self.stats.covered_bp += tail.size
        elif not (k or continued):
            self.stats.short_bp += seg.size

    def _emit_windows(self, seg: np.ndarray, k: int, continued: bool) -> None:
        length, stride = self.spec.length, self.spec.stride
        if stride == length:
            data = seg[: k * length]  # contiguous: no gather needed
        else:
            starts = np.arange(k) * stride
            data = seg[(starts[:, None] + self._offsets[None, :]).ravel()]
        self._emit(data, np.full(k, length))
        union = (k - 1) * stride + length if stride <= length else k * length
        self.stats.covered_bp += union - (max(length - stride, 0) if continued else 0)

    def _emit(self, data: np.ndarray, lengths: np.ndarray) -> None:
        n = lengths.size
        index = np.arange(self._next_index, self._next_index + n)
        self._next_index += n
        if self._holdout:
            is_val = np.ones(n, bool)
        else:
            is_val = split_uniform(index, self.seed) < self.val_ratio
        self._pieces.append(data)
        self._lengths.append(lengths.astype(np.int64))
        self._val.append(is_val)
        self._pending_bp += data.size
        stats = self.stats
        stats.sequences += n
        stats.sequence_bp += int(data.size)
        nval = int(is_val.sum())
        if nval:
            stats.val_sequences += nval
            stats.val_bp += int(lengths[is_val].sum())

    def _take(self) -> WindowBatch:
        batch = WindowBatch(
            # One copy, straight from the array buffers. (numpy declares ndarray a buffer,
            # `__buffer__`, for Python >= 3.12 only.)
            data=b"".join(self._pieces),  # type: ignore[arg-type]
            lengths=np.concatenate(self._lengths),
            is_val=np.concatenate(self._val),
        )
        self._pieces, self._lengths, self._val = [], [], []
        self._pending_bp = 0
        return batch
