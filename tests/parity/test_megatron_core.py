"""genos's Megatron .bin/.idx against megatron-core's own reader and builder: megatron-core
reads what genos writes (document by document, and every sequence `genos preprocess` wrote,
as SentencePiece itself encodes it), genos reads what megatron-core builds, and the two
writers produce the same bytes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import sentencepiece as spm

from genos_cli.data.indexed import IndexedDataset
from genos_cli.data.tokenizers import default_tokenizer_path
from tests.helpers import write_indexed

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder


def test_megatron_reads_genos_output(tmp_path: Path, ecoli_documents: list[np.ndarray]) -> None:
    write_indexed(tmp_path / "g", ecoli_documents)
    ds = MegatronIndexedDataset(str(tmp_path / "g"))
    assert len(ds) == len(ecoli_documents)
    assert ds.index.dtype == np.uint16
    assert list(ds.document_indices) == list(range(len(ecoli_documents) + 1))
    for i, doc in enumerate(ecoli_documents):
        assert np.array_equal(ds[i], doc)


def test_genos_reads_megatron_builder_output(
    tmp_path: Path, ecoli_documents: list[np.ndarray]
) -> None:
    for dtype in (np.uint16, np.int32):
        prefix = tmp_path / f"m_{dtype.__name__}"
        builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
        for doc in ecoli_documents:
            builder.add_item(torch.from_numpy(doc.astype(np.int64)))
            builder.end_document()
        builder.finalize(f"{prefix}.idx")
        ds = IndexedDataset(prefix)
        assert ds.dtype == dtype and len(ds) == len(ecoli_documents)
        assert ds.num_documents == len(ecoli_documents)
        assert ds.num_tokens == sum(d.size for d in ecoli_documents)
        for i, doc in enumerate(ecoli_documents):
            assert np.array_equal(ds[i], doc)


def test_byte_identical_to_megatron_builder(
    tmp_path: Path, ecoli_documents: list[np.ndarray]
) -> None:
    write_indexed(tmp_path / "g", ecoli_documents)
    builder = IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    for doc in ecoli_documents:
        builder.add_item(torch.from_numpy(doc.astype(np.int64)))
        builder.end_document()
    builder.finalize(str(tmp_path / "m.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"g.{ext}").read_bytes() == (tmp_path / f"m.{ext}").read_bytes()


def test_megatron_reads_every_document_preprocess_wrote(ecoli_data: Path, ecoli_text: Path) -> None:
    """megatron-core's own reader sees exactly SentencePiece's ids for every sequence."""
    sp = spm.SentencePieceProcessor(model_file=str(default_tokenizer_path()))
    for split in ("train", "val"):
        lines = (ecoli_text / f"{split}.txt").read_text().split()
        ds = MegatronIndexedDataset(f"{ecoli_data}_{split}_text_document")
        assert len(ds) == len(lines) > 0
        assert list(ds.document_indices) == list(range(len(lines) + 1))
        expected = sp.encode(lines)
        for i, ids in enumerate(expected):
            assert ds[i].tolist() == [*ids, sp.eos_id()]
        assert all(len(line) == 512 for line in lines)
