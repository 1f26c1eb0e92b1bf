"""genos's Megatron .bin/.idx writer and reader: an aborted write leaves nothing, a corrupt
pair is refused. That megatron-core reads and writes the same files is checked in
tests/parity/test_megatron_core.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genos_cli.data.indexed import IndexedDataset, IndexedDatasetWriter
from genos_cli.errors import GenosError
from tests.helpers import write_indexed


def test_abort_leaves_nothing_and_keeps_old_output(
    tmp_path: Path, ecoli_documents: list[np.ndarray]
) -> None:
    write_indexed(tmp_path / "g", ecoli_documents[:5])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError), IndexedDatasetWriter(tmp_path / "g") as writer:
        writer.add(ecoli_documents[0], np.array([ecoli_documents[0].size]))
        raise RuntimeError("interrupted")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no temp files, earlier output untouched


def test_reader_rejects_corrupt_pairs(tmp_path: Path, ecoli_documents: list[np.ndarray]) -> None:
    write_indexed(tmp_path / "g", ecoli_documents[:10])
    with pytest.raises(GenosError, match="does not exist"):
        IndexedDataset(tmp_path / "missing")
    bin_file = tmp_path / "g.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:-10])
    with pytest.raises(GenosError, match="corrupt or mismatched"):
        IndexedDataset(tmp_path / "g")
    (tmp_path / "g.idx").write_bytes(b"not an index at all, clearly")
    with pytest.raises(GenosError, match="bad header"):
        IndexedDataset(tmp_path / "g")
