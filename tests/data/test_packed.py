"""Packed training samples (`genos_cli.data.packed`) on real E. coli data made by `genos
preprocess`: windows of the shuffled document stream, every token once per epoch, the
epoch's order from the seed, blends of prefixes; each checked against a plain reference."""

from __future__ import annotations

import itertools
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from genos_cli.data.indexed import IndexedDataset, IndexedDatasetWriter
from genos_cli.data.packed import PackedTokenDataset
from genos_cli.errors import GenosError
from genos_cli.train.batches import to_micro_batch
from tests.helpers import train_prefix

T = 256  # sequence length of the samples (the data's documents are 512 bp + eod)
SEED = 1234


def reference_stream(prefixes: list[Path], order: np.ndarray) -> np.ndarray:
    """The epoch's token stream built the obvious way: every document, in `order`."""
    docs = []
    for prefix in prefixes:
        ds = IndexedDataset(prefix)
        bounds = ds.document_indices.tolist()
        for a, b in itertools.pairwise(bounds):
            docs.append(np.concatenate([ds[j] for j in range(a, b)] + [np.empty(0, ds.dtype)]))
    assert sorted(order.tolist()) == list(range(len(docs))), "order is not a permutation"
    return np.concatenate([docs[j] for j in order.tolist()]).astype(np.int64)


def all_samples(ds: PackedTokenDataset, epoch: int = 0) -> np.ndarray:
    n = len(ds)
    return ds.samples(np.arange(epoch * n, (epoch + 1) * n))  # (n, T+1)


def test_samples_are_consecutive_windows_of_the_shuffled_documents(
    ecoli_nucleotide_data: Path,
) -> None:
    ds = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    order = ds.epoch_index(0).order
    # the documented seed derivation, so the order is reproducible outside genos
    assert np.array_equal(order, np.random.RandomState([SEED, 0]).permutation(ds.num_documents))
    assert not np.array_equal(order, np.arange(ds.num_documents))
    stream = reference_stream([train_prefix(ecoli_nucleotide_data)], order)
    n = len(ds)
    assert n == (stream.size - 1) // T == (ds.num_tokens - 1) // T
    windows = all_samples(ds)
    expected = np.lib.stride_tricks.sliding_window_view(stream, T + 1)[::T][:n]
    assert np.array_equal(windows, expected)
    # documents are packed across boundaries with their eod: some windows hold one inside
    assert (windows[:, 1:-1] == 3).any(axis=1).sum() > n // 4


def test_every_token_is_in_exactly_one_sample_per_epoch(ecoli_nucleotide_data: Path) -> None:
    ds = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    stream = reference_stream([train_prefix(ecoli_nucleotide_data)], ds.epoch_index(0).order)
    batch = to_micro_batch(all_samples(ds))
    inputs, labels = batch.input_ids.numpy(), batch.labels.numpy()
    assert inputs.shape == labels.shape == (len(ds), T)
    assert np.array_equal(labels[:, :-1], inputs[:, 1:])  # labels are inputs shifted by one
    covered = len(ds) * T
    assert np.array_equal(inputs.ravel(), stream[:covered])  # each position once, in order
    assert np.array_equal(labels.ravel(), stream[1 : covered + 1])
    assert 1 <= stream.size - covered <= T  # the leftover, dropped this epoch


def test_next_epoch_reads_another_order(ecoli_nucleotide_data: Path) -> None:
    ds = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    order0, order1 = ds.epoch_index(0).order, ds.epoch_index(1).order
    assert not np.array_equal(order0, order1)
    assert np.array_equal(order1, np.random.RandomState([SEED, 1]).permutation(ds.num_documents))
    stream1 = reference_stream([train_prefix(ecoli_nucleotide_data)], order1)
    n = len(ds)
    for local in (0, 1, n // 2, n - 1):  # global index n + local is epoch 1's sample `local`
        assert np.array_equal(ds.sample(n + local), stream1[local * T : local * T + T + 1])
    assert not np.array_equal(ds.sample(n), ds.sample(0))


def test_seed_decides_the_order(ecoli_nucleotide_data: Path) -> None:
    a = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    b = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    c = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED + 1)
    picks = np.array([0, 5, 777, 3 * len(a) + 11])
    assert np.array_equal(a.samples(picks), b.samples(picks))
    assert not np.array_equal(a.samples(picks), c.samples(picks))
    restored = pickle.loads(pickle.dumps(a))  # workers get the recipe, not the tokens
    assert len(pickle.dumps(a)) < 1000
    assert np.array_equal(restored.samples(picks), a.samples(picks))


def _write(prefix: Path, docs: list[np.ndarray], docs_per_group: int = 1) -> None:
    with IndexedDatasetWriter(prefix) as writer:
        writer.add(np.concatenate(docs), np.array([d.size for d in docs]))
        writer.commit()
    if docs_per_group > 1:  # regroup: Megatron documents of several sequences each
        idx = Path(f"{prefix}.idx")
        raw = bytearray(idx.read_bytes())
        n = len(docs)
        groups = np.array([*range(0, n, docs_per_group), n], np.int64)
        head = raw[:26] + struct.pack("<Q", groups.size)
        idx.write_bytes(bytes(head + raw[34 : 34 + n * 12] + groups.tobytes()))


def test_blend_of_short_variable_documents(tmp_path: Path) -> None:
    """Windows longer than documents, an empty document, two prefixes, grouped sequences."""
    rng = np.random.default_rng(0)
    tokens = iter(range(1, 60000))  # unique ids: any misplaced token shows

    def docs(count: int) -> list[np.ndarray]:
        sizes = rng.integers(0, 12, count)
        return [np.array([next(tokens) for _ in range(s)], np.uint16) for s in sizes]

    _write(tmp_path / "a", docs(300))
    _write(tmp_path / "b", docs(200), docs_per_group=2)
    prefixes = [tmp_path / "a", tmp_path / "b"]
    assert IndexedDataset(tmp_path / "b").num_documents == 100
    ds = PackedTokenDataset(prefixes, 7, seed=3)
    assert ds.num_documents == 400
    for epoch in (0, 1):
        stream = reference_stream(prefixes, ds.epoch_index(epoch).order)
        windows = all_samples(ds, epoch)
        expected = np.lib.stride_tricks.sliding_window_view(stream, 8)[::7][: len(ds)]
        assert np.array_equal(windows, expected)


def test_too_little_data_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "tiny", [np.arange(1, 6, dtype=np.uint16)])
    assert len(PackedTokenDataset([tmp_path / "tiny"], 4, 0)) == 1
    with pytest.raises(GenosError, match="holds 5 tokens, fewer than the 6"):
        PackedTokenDataset([tmp_path / "tiny"], 5, 0)
