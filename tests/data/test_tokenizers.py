"""The two DNA tokenizers, loading errors and tokenizer training, on real genomes from
../shared/data (`real_runs`: tests/conftest.py). Parity with SentencePiece itself is in
tests/parity/test_sentencepiece.py."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from genos_cli.data.fasta import read_acgt_runs
from genos_cli.data.tokenizers import (
    DNANucleotideTokenizer,
    SentencePieceDNATokenizer,
    default_tokenizer_path,
    load_tokenizer,
    train_sentencepiece,
)
from genos_cli.data.tokenizers.training import measure_compression, sample_sentences
from genos_cli.errors import GenosError

# ---------------------------------------------------------------- real sequences


@pytest.fixture(scope="module")
def dicty_with_n(genomes_dir: Path) -> str:
    """Raw D. discoideum chromosome 1 lines 2..700, which hold real N bases."""
    lines = []
    with gzip.open(genomes_dir / "ddiscoideum_ax4.fasta.gz", "rt") as fh:
        next(fh)  # header
        for _ in range(700):
            lines.append(next(fh).strip())
    seq = "".join(lines)
    assert "N" in seq
    return seq


# ---------------------------------------------------------------- nucleotide


def test_nucleotide_ids_are_the_documented_layout() -> None:
    tok = DNANucleotideTokenizer()
    assert tok.vocab_size == 16
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.eod_id) == (0, 1, 2, 3, 3)
    assert tok.mask_id == 4
    assert [tok.id_to_piece(i) for i in range(16)] == [
        "<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<sep>", "<cls>",
        "A", "T", "C", "G", "N",
        "<reserved_0>", "<reserved_1>", "<reserved_2>", "<reserved_3>",
    ]  # fmt: skip


def test_nucleotide_encode_by_hand() -> None:
    tok = DNANucleotideTokenizer()
    # soft-masked bases = uppercase; IUPAC codes -> N (11); anything else -> <unk> (1)
    assert tok.encode("ACGTNacgtnRYkmX-é") == [
        7, 9, 10, 8, 11,
        7, 9, 10, 8, 11,
        11, 11, 11, 11,
        1, 1, 1,
    ]  # fmt: skip


def test_nucleotide_round_trip_on_real_dna(real_runs: list[str], dicty_with_n: str) -> None:
    tok = DNANucleotideTokenizer()
    for seq in [*real_runs, dicty_with_n]:
        ids = tok.encode(seq)
        assert len(ids) == len(seq)
        assert tok.decode(ids) == seq
    # lowercase (soft-masked) real sequence encodes to the same ids and decodes uppercase
    assert tok.encode(dicty_with_n.lower()) == tok.encode(dicty_with_n)
    assert tok.decode(tok.encode(dicty_with_n.lower())) == dicty_with_n


def test_nucleotide_decode_drops_specials_and_rejects_unknown_ids() -> None:
    tok = DNANucleotideTokenizer()
    assert tok.decode([2, 7, 4, 8, 3, 0, 12]) == "AT"
    with pytest.raises(GenosError, match="token id 16 is outside"):
        tok.decode([7, 16])


def test_nucleotide_fingerprint_is_fixed() -> None:
    assert DNANucleotideTokenizer().fingerprint() == DNANucleotideTokenizer().fingerprint()
    assert DNANucleotideTokenizer().fingerprint().startswith("nucleotide-v1:")


# ---------------------------------------------------------------- encode_packed


def _expected_packed(tok, seqs: list[str], append_eod: bool) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    ids: list[int] = []
    lengths: list[int] = []
    for seq in seqs:
        one = tok.encode(seq) + ([tok.eod_id] if append_eod else [])
        ids += one
        lengths.append(len(one))
    return ids, lengths


@pytest.mark.parametrize("kind", ["nucleotide", "bpe"])
@pytest.mark.parametrize("append_eod", [True, False])
def test_encode_packed_equals_per_sequence_encode(
    kind: str, append_eod: bool, real_runs: list[str]
) -> None:
    tok = load_tokenizer(kind)
    seqs = [*real_runs, ""]  # an empty sequence still gets its EOD
    data = "".join(seqs).encode()
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    for threads in (1, 2):
        ids, token_lengths = tok.encode_packed(
            data, lengths, append_eod=append_eod, num_threads=threads
        )
        exp_ids, exp_lengths = _expected_packed(tok, seqs, append_eod)
        assert ids.dtype == np.uint16 and token_lengths.dtype == np.int32
        assert ids.tolist() == exp_ids
        assert token_lengths.tolist() == exp_lengths


@pytest.mark.parametrize("kind", ["nucleotide", "bpe"])
def test_encode_packed_fixed_length_windows(kind: str, real_runs: list[str]) -> None:
    """All sequences the same length: the nucleotide tokenizer's reshape fast path."""
    genome = "".join(real_runs)
    seqs = [genome[i : i + 512] for i in range(0, len(genome) - 511, 512)]
    assert len(seqs) > 3
    tok = load_tokenizer(kind)
    lengths = np.full(len(seqs), 512, dtype=np.int64)
    ids, token_lengths = tok.encode_packed("".join(seqs).encode(), lengths, append_eod=True)
    exp_ids, exp_lengths = _expected_packed(tok, seqs, True)
    assert ids.tolist() == exp_ids
    assert token_lengths.tolist() == exp_lengths


@pytest.mark.parametrize("kind", ["nucleotide", "bpe"])
def test_encode_packed_of_nothing(kind: str) -> None:
    ids, lengths = load_tokenizer(kind).encode_packed(b"", np.zeros(0, np.int64), append_eod=True)
    assert ids.size == 0 and lengths.size == 0


# ---------------------------------------------------------------- default BPE model


def test_default_model_loads_with_the_shared_special_ids() -> None:
    tok = load_tokenizer()
    assert isinstance(tok, SentencePieceDNATokenizer)
    assert tok.path == default_tokenizer_path()
    assert tok.vocab_size == 128
    assert [tok.id_to_piece(i) for i in range(7)] == [
        "<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<sep>", "<cls>",
    ]  # fmt: skip
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.fingerprint() == hashlib.sha256(default_tokenizer_path().read_bytes()).hexdigest()
    assert default_tokenizer_path().with_suffix(".vocab").is_file()
    assert all(not tok.is_special(i) for i in range(7, 128))


def test_bpe_round_trip_on_real_dna(real_runs: list[str]) -> None:
    tok = load_tokenizer()
    for seq in real_runs:
        ids = tok.encode(seq)
        assert tok.decode(ids) == seq
        assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == seq


def test_default_model_compresses_real_dna(ecoli_fasta: Path) -> None:
    (result,) = measure_compression(load_tokenizer(), [ecoli_fasta], sample_bp=300_000)
    assert result.bp == 300_000
    # measured 2.87 bp/token on E. coli (3.20 over all six genomes); nucleotide is 1.0
    assert result.bp_per_token > 2.6
    (nuc,) = measure_compression(load_tokenizer("nucleotide"), [ecoli_fasta], sample_bp=10_000)
    assert nuc.bp_per_token == 1.0


def test_bpe_decode_rejects_unknown_ids() -> None:
    with pytest.raises(GenosError, match="token id 128 is outside the vocabulary"):
        load_tokenizer().decode([9, 128])


# ---------------------------------------------------------------- load errors


def english_lines() -> list[str]:
    """Real English prose: the stdlib's own documentation."""
    text = "\n".join(m.__doc__ or "" for m in (json, argparse, io, os, gzip))
    return [line for line in text.splitlines() if line.strip()]


def train_english_model(path: Path, vocab_size: int = 100, **extra: object) -> Path:
    out = io.BytesIO()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(english_lines()),
        model_writer=out,
        model_type="bpe",
        vocab_size=vocab_size,
        **extra,
    )
    path.write_bytes(out.getvalue())
    return path


def test_load_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(GenosError, match=r"^tokenizer model .*nope\.model does not exist$"):
        load_tokenizer("bpe", tmp_path / "nope.model")
    text = tmp_path / "notes.model"
    text.write_text("this is not a model\n")
    with pytest.raises(GenosError, match=r"notes\.model is not a SentencePiece model \("):
        load_tokenizer("bpe", text)
    english = train_english_model(tmp_path / "english.model")
    with pytest.raises(
        GenosError, match=r"english\.model is not a DNA tokenizer: piece '.+' is not made of A, C"
    ):
        load_tokenizer("bpe", english)
    with pytest.raises(GenosError, match="unknown tokenizer kind 'char'"):
        load_tokenizer("char")


def test_vocab_too_large_for_uint16_is_refused(tmp_path: Path) -> None:
    symbols = [f"<u{i}>" for i in range(65540)]
    big = train_english_model(
        tmp_path / "big.model",
        vocab_size=len(symbols) + 200,
        user_defined_symbols=symbols,
        hard_vocab_limit=False,
    )
    with pytest.raises(GenosError, match="more than the 65536 that uint16 token ids can store"):
        SentencePieceDNATokenizer(big)


def test_nucleotide_ignores_model_path(tmp_path: Path) -> None:
    assert load_tokenizer("nucleotide", tmp_path / "missing.model").vocab_size == 16


# ---------------------------------------------------------------- training


def test_train_tiny_tokenizer(ecoli_fasta: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "out" / "tiny"
    result = train_sentencepiece(
        [ecoli_fasta], prefix, vocab_size=40, max_train_bp=300_000, sentence_bp=1000
    )
    assert result.model_path == tmp_path / "out" / "tiny.model"
    assert result.model_path.is_file() and result.vocab_path.is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny.model", "tiny.vocab"]
    assert abs(result.bp_used - 300_000) <= 1000 and result.bp_available == 4_639_675
    tok = SentencePieceDNATokenizer(result.model_path)
    assert tok.vocab_size == 40
    assert [tok.id_to_piece(i) for i in range(7)] == [
        "<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<sep>", "<cls>",
    ]  # fmt: skip
    assert {tok.id_to_piece(i) for i in range(36, 40)} == set("ACGT")
    assert all(len(tok.id_to_piece(i)) <= 16 for i in range(7, 40))
    vocab = result.vocab_path.read_text().splitlines()
    assert [line.split("\t")[0] for line in vocab] == [tok.id_to_piece(i) for i in range(40)]
    assert result.bp_per_token > 1.5
    # deterministic: same input and settings give the same bytes (so the same fingerprint)
    again = train_sentencepiece(
        [ecoli_fasta], tmp_path / "again", vocab_size=40, max_train_bp=300_000, sentence_bp=1000
    )
    assert again.model_path.read_bytes() == result.model_path.read_bytes()


def test_training_sample_is_spread_over_the_whole_input(ecoli_fasta: Path) -> None:
    every = list(read_acgt_runs([ecoli_fasta], max_run_bp=1000))
    position = {run: k for k, run in enumerate(every)}
    sample, total = sample_sentences([ecoli_fasta], sentence_bp=1000, max_train_bp=460_000)
    assert total == sum(map(len, every)) == 4_639_675
    assert abs(sum(map(len, sample)) - 460_000) <= 1000
    picked = [position[run] for run in sample]
    assert picked == sorted(picked)
    gaps = np.diff(picked)
    assert gaps.min() >= 9 and gaps.max() <= 11  # about every 10th fragment, start to end
    assert picked[0] <= 10 and picked[-1] >= len(every) - 11
    # small inputs are taken whole
    whole, _ = sample_sentences([ecoli_fasta], sentence_bp=1000, max_train_bp=10_000_000)
    assert whole == every


@pytest.mark.parametrize(
    ("vocab_size", "message"),
    [(10, "--vocab-size 10 is too small"), (70_000, "--vocab-size 70000 is too large")],
)
def test_training_rejects_bad_vocab_sizes(
    vocab_size: int, message: str, ecoli_fasta: Path, tmp_path: Path
) -> None:
    with pytest.raises(GenosError, match=message):
        train_sentencepiece([ecoli_fasta], tmp_path / "x", vocab_size=vocab_size)
    assert list(tmp_path.iterdir()) == []


def test_training_failure_leaves_no_files(ecoli_fasta: Path, tmp_path: Path) -> None:
    # 5 kbp cannot yield 5,000 distinct pieces: SentencePiece refuses, genos reports it.
    with pytest.raises(GenosError, match="SentencePiece training failed: Vocabulary size too"):
        train_sentencepiece(
            [ecoli_fasta], tmp_path / "out" / "x", vocab_size=5000, max_train_bp=5_000,
            sentence_bp=1000,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()
