"""Megatron-LM indexed datasets (`.bin` + `.idx`, "MMIDIDX" version 1), streamed.

Layout of the `.idx` file, as megatron-core's `indexed_dataset.py` reads it:

    b"MMIDIDX\\x00\\x00"            magic
    <Q  version = 1
    <B  dtype code (8 = uint16, 4 = int32, ...)
    <Q  sequence count S
    <Q  document count D (= len(document_indices), i.e. documents + 1)
    S x int32  sequence lengths (tokens)
    S x int64  byte offsets of the sequences in `.bin`
    D x int64  document indices: sequence index where each document ends (starts with 0)

The `.bin` file is the tokens back to back. genos writes one sequence per document (one
DNA window, plus its end-of-document id), like `tools/preprocess_data.py --append-eod`.

The writer streams: tokens go straight to the `.bin` file and lengths to a side file, so
memory does not grow with the data set. Both files are written under temporary names and
renamed into place only by `commit()`, so an interrupted run never leaves a `.bin`/`.idx`
pair that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from genos_cli.atomic import BackgroundSync, fsync_dir, publish, temp_beside
from genos_cli.errors import GenosError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[type[np.number], int] = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
_CHUNK = 1 << 20  # sequences per chunk when writing index arrays


def bin_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


class IndexedDatasetWriter:
    """Append token sequences, then `commit()` to publish `prefix.bin` and `prefix.idx`.

    Use as a context manager: leaving the block without `commit()` (an error, Ctrl-C)
    removes the temporary files and leaves any earlier output untouched.
    """

    def __init__(self, prefix: str | Path, dtype: type[np.number] = np.uint16) -> None:
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._code = DTYPE_CODES[dtype]
        self.sequences = 0
        self.tokens = 0
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._bin = temp_beside(bin_path(self.prefix))
        self._lengths = tempfile.TemporaryFile(
            dir=self.prefix.parent, prefix=f".{self.prefix.name}."
        )
        self._committed = False
        self._idx_tmp: Path | None = None
        self._sync = BackgroundSync(self._bin.fileno())

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append sequences given back to back in `tokens`, with per-sequence `lengths`."""
        if tokens.size != int(lengths.sum()):
            raise ValueError("tokens and lengths disagree")
        # Writing the arrays' buffers directly avoids a tobytes() copy of every batch.
        data = np.ascontiguousarray(tokens, dtype=self.dtype)
        self._bin.write(data.data)
        self._sync.wrote(data.nbytes)
        self._lengths.write(np.ascontiguousarray(lengths, dtype=np.int32).data)
        self.sequences += int(lengths.size)
        self.tokens += int(tokens.size)

    def finish(self) -> None:
        """Write the index; both files stay under temporary names, synced to disk, so all
        `commit()` has left to do is rename them."""
        if self._idx_tmp is not None:
            return
        self._bin.flush()
        self._sync.join()
        os.fsync(self._bin.fileno())
        self._bin.close()
        out = temp_beside(idx_path(self.prefix))
        self._idx_tmp = Path(out.name)
        with out:
            self._write_index(out)
            out.flush()
            os.fsync(out.fileno())
        self._lengths.close()

    def commit(self) -> None:
        """Finish, then move both files into place (`.bin` first, `.idx` last)."""
        self.finish()
        assert self._idx_tmp is not None
        # An old .idx beside a new .bin would look valid: remove it before publishing.
        idx_path(self.prefix).unlink(missing_ok=True)
        publish(self._bin.name, bin_path(self.prefix), fsync=False)
        publish(self._idx_tmp, idx_path(self.prefix), fsync=False)
        fsync_dir(self.prefix.parent)
        self._committed = True

    def abort(self) -> None:
        if self._committed:
            return
        self._sync.join()
        for fh in (self._bin, self._lengths):
            with contextlib.suppress(OSError):  # on a full disk, flushing the buffer fails
                fh.close()
        Path(self._bin.name).unlink(missing_ok=True)
        if self._idx_tmp is not None:
            self._idx_tmp.unlink(missing_ok=True)

    def _write_index(self, out: IO[bytes]) -> None:
        n = self.sequences
        out.write(MAGIC)
        out.write(struct.pack("<Q", VERSION))
        out.write(struct.pack("<B", self._code))
        out.write(struct.pack("<Q", n))
        out.write(struct.pack("<Q", n + 1))
        # lengths, then pointers (exclusive cumulative sum x itemsize), chunk by chunk
        for pass_ in ("lengths", "pointers"):
            self._lengths.seek(0)
            offset = 0
            while chunk := self._lengths.read(_CHUNK * 4):
                lengths = np.frombuffer(chunk, np.int32)
                if pass_ == "lengths":
                    out.write(chunk)
                    continue
                ends = np.cumsum(lengths, dtype=np.int64) * self.dtype.itemsize + offset
                starts = np.concatenate([[offset], ends[:-1]]).astype(np.int64)
                out.write(starts.tobytes())
                offset = int(ends[-1])
        for first in range(0, n + 1, _CHUNK):
            out.write(np.arange(first, min(first + _CHUNK, n + 1), dtype=np.int64).tobytes())

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.abort()


class IndexedDataset:
    """Memory-mapped reader for Megatron indexed datasets (genos's or megatron-core's)."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        idx, binf = idx_path(prefix), bin_path(prefix)
        for path in (idx, binf):
            if not path.is_file():
                raise GenosError(f"{path} does not exist (expected a Megatron .bin/.idx pair)")
        with open(idx, "rb") as fh:
            header = fh.read(len(MAGIC) + 8 + 1 + 8 + 8)
        if len(header) < 34 or header[: len(MAGIC)] != MAGIC:
            raise GenosError(f"{idx} is not a Megatron indexed dataset index (bad header)")
        version, code, count, docs = struct.unpack("<QBQQ", header[len(MAGIC) :])
        if version != VERSION:
            raise GenosError(f"{idx} has index version {version}; genos reads version 1")
        if code not in CODE_DTYPES:
            raise GenosError(f"{idx} has unknown dtype code {code}")
        self.dtype = np.dtype(CODE_DTYPES[code])
        expected = 34 + count * 4 + count * 8 + docs * 8
        if idx.stat().st_size < expected:
            raise GenosError(f"{idx} is truncated ({idx.stat().st_size} of {expected} bytes)")
        index = np.memmap(idx, mode="r", dtype=np.uint8)
        self.sequence_lengths = np.frombuffer(index, np.int32, count, 34)
        self.sequence_pointers = np.frombuffer(index, np.int64, count, 34 + count * 4)
        self.document_indices = np.frombuffer(index, np.int64, docs, 34 + count * 12)
        self.num_tokens = int(self.sequence_lengths.sum(dtype=np.int64))
        size = binf.stat().st_size
        if size != self.num_tokens * self.dtype.itemsize:
            raise GenosError(
                f"{binf} holds {size} bytes but {idx} describes "
                f"{self.num_tokens * self.dtype.itemsize}; the pair is corrupt or mismatched"
            )
        self.tokens = (
            np.memmap(binf, mode="r", dtype=self.dtype) if size else np.empty(0, self.dtype)
        )

    def __len__(self) -> int:
        return int(self.sequence_lengths.size)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize
        return np.asarray(self.tokens[start : start + int(self.sequence_lengths[i])])

    @property
    def num_documents(self) -> int:
        return int(self.document_indices.size) - 1
