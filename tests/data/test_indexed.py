"""genos's Megatron .bin/.idx writer and reader against megatron-core's own."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from genos_cli.data.indexed import IndexedDataset, IndexedDatasetWriter
from genos_cli.data.tokenizers import DNANucleotideTokenizer
from genos_cli.errors import GenosError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder


@pytest.fixture(scope="module")
def documents(ecoli_fasta: Path) -> list[np.ndarray]:
    """Real E. coli sequence of varied lengths, encoded one token per base plus eod."""
    from genos_cli.data.fasta import read_acgt_runs

    tok = DNANucleotideTokenizer()
    genome = b"".join(read_acgt_runs([ecoli_fasta], max_run_bp=1 << 20))[:200_000]
    cuts = np.cumsum([17, 512, 1, 300, 512, 4000, 2, 77] * 20)
    pieces = np.split(np.frombuffer(genome, np.uint8), cuts[cuts < len(genome)])
    return [np.array([*tok.encode(p.tobytes().decode()), tok.eod_id], np.uint16) for p in pieces]


def write_genos(prefix: Path, docs: list[np.ndarray], per_add: int = 7) -> None:
    with IndexedDatasetWriter(prefix) as writer:
        for i in range(0, len(docs), per_add):
            chunk = docs[i : i + per_add]
            writer.add(np.concatenate(chunk), np.array([d.size for d in chunk]))
        writer.commit()


def test_megatron_reads_genos_output(tmp_path: Path, documents: list[np.ndarray]) -> None:
    write_genos(tmp_path / "g", documents)
    ds = MegatronIndexedDataset(str(tmp_path / "g"))
    assert len(ds) == len(documents)
    assert ds.index.dtype == np.uint16
    assert list(ds.document_indices) == list(range(len(documents) + 1))
    for i, doc in enumerate(documents):
        assert np.array_equal(ds[i], doc)


def test_genos_reads_megatron_builder_output(tmp_path: Path, documents: list[np.ndarray]) -> None:
    for dtype in (np.uint16, np.int32):
        prefix = tmp_path / f"m_{dtype.__name__}"
        builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
        for doc in documents:
            builder.add_item(torch.from_numpy(doc.astype(np.int64)))
            builder.end_document()
        builder.finalize(f"{prefix}.idx")
        ds = IndexedDataset(prefix)
        assert ds.dtype == dtype and len(ds) == len(documents)
        assert ds.num_documents == len(documents)
        assert ds.num_tokens == sum(d.size for d in documents)
        for i, doc in enumerate(documents):
            assert np.array_equal(ds[i], doc)


def test_byte_identical_to_megatron_builder(tmp_path: Path, documents: list[np.ndarray]) -> None:
    write_genos(tmp_path / "g", documents)
    builder = IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    for doc in documents:
        builder.add_item(torch.from_numpy(doc.astype(np.int64)))
        builder.end_document()
    builder.finalize(str(tmp_path / "m.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"g.{ext}").read_bytes() == (tmp_path / f"m.{ext}").read_bytes()


def test_abort_leaves_nothing_and_keeps_old_output(tmp_path: Path, documents) -> None:  # type: ignore[no-untyped-def]
    write_genos(tmp_path / "g", documents[:5])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError), IndexedDatasetWriter(tmp_path / "g") as writer:
        writer.add(documents[0], np.array([documents[0].size]))
        raise RuntimeError("interrupted")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no temp files, earlier output untouched


def test_reader_rejects_corrupt_pairs(tmp_path: Path, documents: list[np.ndarray]) -> None:
    write_genos(tmp_path / "g", documents[:10])
    with pytest.raises(GenosError, match="does not exist"):
        IndexedDataset(tmp_path / "missing")
    bin_file = tmp_path / "g.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:-10])
    with pytest.raises(GenosError, match="corrupt or mismatched"):
        IndexedDataset(tmp_path / "g")
    (tmp_path / "g.idx").write_bytes(b"not an index at all, clearly")
    with pytest.raises(GenosError, match="bad header"):
        IndexedDataset(tmp_path / "g")
