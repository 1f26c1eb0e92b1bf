"""Training data on real E. coli data made by `genos preprocess`: packing, epochs, sharding,
resume, bits per base and `--data-path` resolution, each checked against a plain reference."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from genos_cli.data.bases import bases_per_token, bits_per_base
from genos_cli.data.indexed import IndexedDataset, IndexedDatasetWriter
from genos_cli.data.packed import PackedTokenDataset
from genos_cli.data.prepared import check_tokenizer_matches, check_vocab_fits, resolve_data
from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.errors import GenosError
from genos_cli.model.losses import nll_sums
from genos_cli.train.batches import ShardedBatches, step_sample_indices, to_micro_batch
from tests.helpers import genos

T = 256  # sequence length of the samples (the data's documents are 512 bp + eod)
SEED = 1234


@pytest.fixture(scope="module")
def nuc(tmp_path_factory: pytest.TempPathFactory, ecoli_fasta: Path) -> Path:
    """`-o` prefix of E. coli with the nucleotide tokenizer (train/val split)."""
    prefix = tmp_path_factory.mktemp("nuc") / "ecoli"
    result = genos("preprocess", ecoli_fasta, "-o", prefix, "--nucleotide-tokenizer")
    assert result.exit_code == 0, result.output
    return prefix


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory, ecoli_fasta: Path) -> Path:
    """`-o` prefix of E. coli with the shipped BPE tokenizer."""
    prefix = tmp_path_factory.mktemp("bpe") / "ecoli"
    result = genos("preprocess", ecoli_fasta, "-o", prefix, "--workers", "1")
    assert result.exit_code == 0, result.output
    return prefix


def train_prefix(prefix: Path) -> Path:
    return Path(f"{prefix}_train_text_document")


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


# -- samples ---------------------------------------------------------------------------------


def test_samples_are_consecutive_windows_of_the_shuffled_documents(nuc: Path) -> None:
    ds = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    order = ds.epoch_index(0).order
    # the documented seed derivation, so the order is reproducible outside genos
    assert np.array_equal(order, np.random.RandomState([SEED, 0]).permutation(ds.num_documents))
    assert not np.array_equal(order, np.arange(ds.num_documents))
    stream = reference_stream([train_prefix(nuc)], order)
    n = len(ds)
    assert n == (stream.size - 1) // T == (ds.num_tokens - 1) // T
    windows = all_samples(ds)
    expected = np.lib.stride_tricks.sliding_window_view(stream, T + 1)[::T][:n]
    assert np.array_equal(windows, expected)
    # documents are packed across boundaries with their eod: some windows hold one inside
    assert (windows[:, 1:-1] == 3).any(axis=1).sum() > n // 4


def test_every_token_is_in_exactly_one_sample_per_epoch(nuc: Path) -> None:
    ds = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    stream = reference_stream([train_prefix(nuc)], ds.epoch_index(0).order)
    batch = to_micro_batch(all_samples(ds))
    inputs, labels = batch.input_ids.numpy(), batch.labels.numpy()
    assert inputs.shape == labels.shape == (len(ds), T)
    assert np.array_equal(labels[:, :-1], inputs[:, 1:])  # labels are inputs shifted by one
    covered = len(ds) * T
    assert np.array_equal(inputs.ravel(), stream[:covered])  # each position once, in order
    assert np.array_equal(labels.ravel(), stream[1 : covered + 1])
    assert 1 <= stream.size - covered <= T  # the leftover, dropped this epoch


def test_next_epoch_reads_another_order(nuc: Path) -> None:
    ds = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    order0, order1 = ds.epoch_index(0).order, ds.epoch_index(1).order
    assert not np.array_equal(order0, order1)
    assert np.array_equal(order1, np.random.RandomState([SEED, 1]).permutation(ds.num_documents))
    stream1 = reference_stream([train_prefix(nuc)], order1)
    n = len(ds)
    for local in (0, 1, n // 2, n - 1):  # global index n + local is epoch 1's sample `local`
        assert np.array_equal(ds.sample(n + local), stream1[local * T : local * T + T + 1])
    assert not np.array_equal(ds.sample(n), ds.sample(0))


def test_seed_decides_the_order(nuc: Path) -> None:
    a = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    b = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    c = PackedTokenDataset([train_prefix(nuc)], T, SEED + 1)
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


# -- sharding and resume ---------------------------------------------------------------------


@pytest.mark.parametrize(("micro", "accum", "world"), [(1, 1, 1), (2, 3, 2), (4, 1, 8), (3, 2, 4)])
def test_ranks_split_each_global_batch_exactly(micro: int, accum: int, world: int) -> None:
    g = micro * accum * world
    for step in (0, 1, 17):
        shares = [step_sample_indices(step, micro, accum, r, world) for r in range(world)]
        assert all(s.shape == (accum, micro) for s in shares)
        together = np.sort(np.concatenate([s.ravel() for s in shares]))
        assert np.array_equal(together, np.arange(step * g, (step + 1) * g))


def _rows(batches: list) -> list[np.ndarray]:
    return [row for mb in batches for row in mb.input_ids.numpy()]


def test_one_rank_with_double_accumulation_sees_what_two_ranks_see(nuc: Path) -> None:
    ds = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    single = ShardedBatches(ds, micro_batch_size=2, grad_accum=4)
    ranks = [ShardedBatches(ds, 2, grad_accum=2, dp_rank=r, dp_world_size=2) for r in (0, 1)]
    assert single.global_batch_size == ranks[0].global_batch_size == 8
    for _ in range(3):
        one = next(single)
        two = [next(r) for r in ranks]
        # micro-batch k of the single rank is micro-step k // 2 of rank k % 2
        for k, mb in enumerate(one):
            other = two[k % 2][k // 2]
            assert torch.equal(mb.input_ids, other.input_ids)
            assert torch.equal(mb.labels, other.labels)
        assert mb.input_ids.dtype == torch.int64 and mb.input_ids.shape == (2, T)
    # and the ranks' rows are disjoint
    rows0, rows1 = (_rows(ranks[r].batches(0)) for r in (0, 1))
    assert not any(np.array_equal(a, b) for a in rows0 for b in rows1)


def test_resume_continues_with_the_exact_next_batches(nuc: Path) -> None:
    ds = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    steps_per_epoch = len(ds) // 12
    start = steps_per_epoch - 2  # the batches to come cross into epoch 2
    run = ShardedBatches(ds, 3, grad_accum=2, dp_rank=1, dp_world_size=2, start_step=start)
    next(run)
    state = json.loads(json.dumps(run.state_dict()))  # checkpoints store it as plain data
    assert state["step"] == start + 1
    expected = [next(run) for _ in range(3)]

    fresh = PackedTokenDataset([train_prefix(nuc)], T, SEED)
    resumed = ShardedBatches(fresh, 3, grad_accum=2, dp_rank=1, dp_world_size=2)
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(got, want, strict=True))
        assert all(torch.equal(a.labels, b.labels) for a, b in zip(got, want, strict=True))
    assert resumed.epoch > 1.0

    # same global batch on one rank: the same samples, all of them
    solo = ShardedBatches(fresh, 3, grad_accum=4)
    solo.load_state_dict(state)
    both = [ShardedBatches(ds, 3, 2, r, 2, start_step=start + 1) for r in (0, 1)]
    want_rows = sorted(r.tobytes() for b in both for r in _rows(next(b)))
    assert sorted(r.tobytes() for r in _rows(next(solo))) == want_rows

    with pytest.raises(GenosError, match="global batch size 12, but this run has 6"):
        ShardedBatches(fresh, 3, grad_accum=2).load_state_dict(state)
    with pytest.raises(GenosError, match="data seed"):
        ShardedBatches(PackedTokenDataset([train_prefix(nuc)], T, 9), 3, 4).load_state_dict(state)


# -- bits per base ---------------------------------------------------------------------------


# The one rule (genos_cli.data.bases): a token spells the A/C/G/T bases of its piece.
BASES_RULE = [  # (tokenizer, text of the token or a special, bases it spells)
    ("nucleotide", "A", 1), ("nucleotide", "T", 1), ("nucleotide", "C", 1),
    ("nucleotide", "G", 1), ("nucleotide", "N", 0), ("nucleotide", "<eod>", 0),
    ("nucleotide", "<pad>", 0), ("bpe", "AAAAAAAA", 8), ("bpe", "A", 1), ("bpe", "<eod>", 0),
    ("bpe", "<pad>", 0), ("bpe", "<unk>", 0),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "text", "bases"), BASES_RULE)
def test_bases_per_token_rule(kind: str, text: str, bases: int) -> None:
    tok = load_tokenizer(kind)
    specials = {"<eod>": tok.eod_id, "<pad>": tok.pad_id, "<unk>": tok.unk_id}
    [token] = [specials[text]] if text in specials else tok.encode(text)
    assert bases_per_token(tok)[token] == bases
    assert bases_per_token(tok).shape == (tok.vocab_size,)


def test_bases_per_token_bpe_and_the_data_bp(bpe: Path, nuc: Path) -> None:
    tok = load_tokenizer("bpe")
    table = bases_per_token(tok)
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    assert table[tok.encode("AAAAAAAA")[0]] == 8
    for i, piece in enumerate(pieces):
        assert table[i] == (0 if tok.is_special(i) else len(piece))
    assert table[:7].sum() == 0 and table.max() == 16
    # the bases of all tokens are the bp the manifest counted, for both tokenizers
    for prefix, kind in ((bpe, "bpe"), (nuc, "nucleotide")):
        manifest = json.loads(Path(f"{prefix}.json").read_text())
        table = bases_per_token(load_tokenizer(kind))
        tokens = IndexedDataset(train_prefix(prefix)).tokens
        assert table[tokens].sum() == manifest["outputs"]["train"]["bp"]


def test_bits_per_base_by_hand() -> None:
    # 3 predicted tokens "ACG" (3 bases), "T" (1 base) and eod (0): 4 bases; losses in nats
    nll = math.log(4) + math.log(2) + math.log(8)  # = 2 + 1 + 3 bits
    assert bits_per_base(nll, 4) == pytest.approx(6 / 4)
    assert bits_per_base(4 * math.log(4), 4) == pytest.approx(2.0)  # uniform over ACGT
    with pytest.raises(ValueError):
        bits_per_base(1.0, 0)
    tok = load_tokenizer("bpe")
    table = bases_per_token(tok)
    labels = torch.tensor([[tok.encode("GCGC")[0], tok.eod_id], [tok.encode("A")[0], -100]])
    logits = torch.zeros(2, 2, tok.vocab_size)  # uniform: each scored label costs ln V nats
    sums = nll_sums(logits, labels, torch.from_numpy(table))
    assert sums.dtype == torch.float64
    nll, scored, bases = sums.tolist()
    assert (scored, bases) == (3.0, 5.0)
    assert nll == pytest.approx(3 * math.log(tok.vocab_size))


# -- --data-path ---------------------------------------------------------------------------


def test_resolve_a_preprocess_prefix(nuc: Path) -> None:
    for given in (nuc, f"{nuc}.json", str(nuc)):
        spec = resolve_data(given)
        assert spec.train == (train_prefix(nuc),)
        assert spec.val == (Path(f"{nuc}_val_text_document"),)
        assert spec.tokenizer is not None and spec.tokenizer.kind == "nucleotide"
        assert spec.tokenizer.source == str(nuc)
        assert (spec.tokenizer.vocab_size, spec.tokenizer.eod_id) == (16, 3)
        assert spec.manifests == (Path(f"{nuc}.json"),)


def test_resolve_a_direct_prefix(nuc: Path, tmp_path: Path) -> None:
    spec = resolve_data(train_prefix(nuc))
    assert spec.train == (train_prefix(nuc),) and spec.val == ()
    assert spec.tokenizer is not None and spec.tokenizer.kind == "nucleotide"  # from ecoli.json
    spec = resolve_data(f"{train_prefix(nuc)}.bin", val_path=f"{nuc}_val_text_document")
    assert spec.val == (Path(f"{nuc}_val_text_document"),)
    # Megatron data with no manifest: no tokenizer to check, the ids are scanned instead
    for ext in (".bin", ".idx"):
        shutil.copy(f"{train_prefix(nuc)}{ext}", tmp_path / f"other{ext}")
    spec = resolve_data(tmp_path / "other")
    assert spec.tokenizer is None and spec.manifests == ()
    check_vocab_fits(spec, 16)
    with pytest.raises(GenosError, match="contains token id 10, but the model's vocab_size is 8"):
        check_vocab_fits(spec, 8)


def test_resolve_a_moved_data_set(bpe: Path, tmp_path: Path) -> None:
    """The data set is the files beside the manifest, wherever preprocessing wrote them."""
    for path in bpe.parent.iterdir():
        shutil.copy(path, tmp_path / path.name)
    spec = resolve_data(tmp_path / "ecoli")
    assert spec.train == (tmp_path / "ecoli_train_text_document",)
    assert spec.val == (tmp_path / "ecoli_val_text_document",)


def test_missing_files_are_named(nuc: Path, tmp_path: Path) -> None:
    with pytest.raises(GenosError, match=r"nowhere names no data: expected nowhere\.json"):
        resolve_data("nowhere")
    shutil.copy(f"{train_prefix(nuc)}.bin", tmp_path / "half.bin")
    with pytest.raises(GenosError, match=r"half\.idx does not exist"):
        resolve_data(tmp_path / "half")
    shutil.copy(f"{nuc}.json", tmp_path / "gone.json")
    with pytest.raises(GenosError, match=r"gone_train_text_document\.bin does not exist"):
        resolve_data(tmp_path / "gone")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(GenosError, match="not a genos data manifest"):
        resolve_data(tmp_path / "bad")


def test_tokenizer_mismatch_is_one_sentence(nuc: Path, bpe: Path) -> None:
    spec = resolve_data(nuc)
    check_tokenizer_matches(spec.tokenizer, load_tokenizer("nucleotide"))
    check_tokenizer_matches(None, load_tokenizer("bpe"))  # nothing to compare
    with pytest.raises(GenosError) as err:
        check_tokenizer_matches(spec.tokenizer, load_tokenizer("bpe"))
    message = str(err.value)
    assert message.startswith(f"{nuc} was made with the nucleotide tokenizer (fingerprint ")
    assert "but this run uses the bpe tokenizer" in message and "\n" not in message
    with pytest.raises(GenosError, match="were made with different tokenizers"):
        resolve_data([nuc, bpe])
    spec = resolve_data(bpe)
    check_vocab_fits(spec, 128)
    with pytest.raises(GenosError, match=r"ids up to 127 .* vocab_size is 100"):
        check_vocab_fits(spec, 100)
