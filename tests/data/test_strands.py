"""Both strands: the reverse complement on real sequence, reverse-complement augmentation at
preprocess time (no validation leakage), and the other strand of token documents."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from genos_cli.data.bases import PieceTable
from genos_cli.data.documents import read_documents
from genos_cli.data.strands import (
    reverse_complement,
    reverse_complement_documents,
    with_reverse_complements,
)
from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.data.windows import Windower, WindowSpec
from tests.helpers import genos

PAIRS = {(a, b) for a, b in ("AT", "TA", "CG", "GC")}


@pytest.fixture(scope="module")
def ecoli_stretch(ecoli_fasta: Path) -> bytes:
    """The first 100 kbp of the real E. coli genome."""
    with gzip.open(ecoli_fasta, "rt") as fh:
        fh.readline()
        seq = "".join(line.strip() for _, line in zip(range(1700), fh, strict=False))
    return seq[:100_000].upper().encode()


def test_reverse_complement_by_hand() -> None:
    assert reverse_complement(b"AACG") == b"CGTT"
    assert reverse_complement(b"GATTACA") == b"TGTAATC"
    assert reverse_complement(b"ACNGT") == b"ACNGT"  # N pairs with N
    assert reverse_complement(b"") == b""


def test_reverse_complement_of_real_dna_pairs_and_is_an_involution(ecoli_stretch: bytes) -> None:
    rc = reverse_complement(ecoli_stretch)
    assert len(rc) == len(ecoli_stretch) and rc != ecoli_stretch
    assert reverse_complement(rc) == ecoli_stretch
    # Base i of one strand pairs with base n-1-i of the other (Watson-Crick).
    paired = zip(ecoli_stretch.decode(), reversed(rc.decode()), strict=True)
    assert all(pair in PAIRS for pair in paired)
    # Complementing swaps A<->T and C<->G counts; GC content is a property of the molecule.
    counts = {b: ecoli_stretch.count(b.encode()) for b in "ACGT"}
    assert {b: rc.count(b.encode()) for b in "ACGT"} == {
        "A": counts["T"], "C": counts["G"], "G": counts["C"], "T": counts["A"],
    }  # fmt: skip


def test_augmented_batch_adds_the_other_strand_of_training_windows_only(
    ecoli_stretch: bytes,
) -> None:
    windower = Windower(WindowSpec(500, 500, 500), val_ratio=0.2, seed=3)
    (batch,) = [*windower.windows([b"|" + ecoli_stretch + b"|"]), *windower.flush()]
    assert 0 < batch.is_val.sum() < len(batch)
    out = with_reverse_complements(batch)
    seqs, expected = list(out.sequences()), []
    for seq, is_val in zip(batch.sequences(), batch.is_val.tolist(), strict=True):
        expected += [(seq, is_val)] if is_val else [(seq, False), (reverse_complement(seq), False)]
    assert list(zip(seqs, out.is_val.tolist(), strict=True)) == expected
    assert out.lengths.tolist() == [len(s) for s in seqs] and out.bp == sum(map(len, seqs))
    # Validation: the same windows, none the reverse complement of a training window.
    val = [s for s, v in zip(seqs, out.is_val.tolist(), strict=True) if v]
    assert val == [s for s, v in zip(batch.sequences(), batch.is_val.tolist(), strict=True) if v]
    train = {s for s, v in zip(seqs, out.is_val.tolist(), strict=True) if not v}
    assert not {reverse_complement(s) for s in val} & train
    all_val = Windower(WindowSpec(500, 500, 500), val_ratio=0.2, seed=3)
    (held,) = [*all_val.windows([b"|" + ecoli_stretch + b"|"], holdout=True), *all_val.flush()]
    assert with_reverse_complements(held) is held  # nothing to augment


def test_preprocess_reverse_complement_keeps_validation_clean(
    tmp_path: Path, ecoli_stretch: bytes
) -> None:
    fasta = tmp_path / "ecoli_100k.fa"
    fasta.write_bytes(b">ecoli first 100 kbp\n" + ecoli_stretch + b"\n")
    common = [fasta, "--nucleotide-tokenizer", "--seq-length", "1000", "--val-ratio", "0.1"]
    plain = genos("preprocess", *common, "-o", tmp_path / "plain", "--write-text", tmp_path / "p")
    both = genos("preprocess", *common, "-o", tmp_path / "rc", "--write-text", tmp_path / "r",
                 "--reverse-complement")  # fmt: skip
    assert plain.exit_code == 0 and both.exit_code == 0, plain.output + both.output
    assert "reverse complements" in both.stdout
    # The split is drawn before augmentation: validation is byte for byte the same.
    for ext in ("bin", "idx"):
        rc_val = (tmp_path / f"rc_val_text_document.{ext}").read_bytes()
        assert rc_val == (tmp_path / f"plain_val_text_document.{ext}").read_bytes()
    train = (tmp_path / "p" / "train.txt").read_text().split()
    val = (tmp_path / "p" / "val.txt").read_text().split()
    augmented = (tmp_path / "r" / "train.txt").read_text().split()
    assert augmented[0::2] == train
    assert augmented[1::2] == [reverse_complement(s.encode()).decode() for s in train]
    assert (tmp_path / "r" / "val.txt").read_text().split() == val
    assert not set(val) & set(augmented)
    assert not {reverse_complement(s.encode()).decode() for s in val} & set(augmented)
    manifest = json.loads((tmp_path / "rc.json").read_text())
    assert manifest["reverse_complement"] is True
    assert manifest["outputs"]["train"]["sequences"] == 2 * len(train)
    assert manifest["outputs"]["train"]["bp"] == 2 * sum(map(len, train))
    assert manifest["stats"]["bp_per_token"] == 1.0  # nucleotide: over what was written
    assert json.loads((tmp_path / "plain.json").read_text())["reverse_complement"] is False


@pytest.mark.parametrize("kind", ["bpe", "nucleotide"])
def test_other_strand_of_token_documents(kind: str, ecoli_stretch: bytes, tmp_path: Path) -> None:
    """Real E. coli documents: the other strand spells each document's bases reverse
    complemented, keeps the end-of-document ids, and taking it twice gives the documents back
    token for token."""
    from tests.helpers import write_indexed

    tok = load_tokenizer(kind, None)
    cuts = [0, 1, 513, 1700, 4000, 4001, 9000]
    pieces = [ecoli_stretch[a:b] for a, b in itertools.pairwise(cuts)]
    docs_ids = [np.array([*tok.encode(p.decode()), tok.eod_id], np.uint16) for p in pieces]
    docs_ids[2] = docs_ids[2][:-1]  # one document without its end-of-document id
    write_indexed(tmp_path / "d", docs_ids, per_add=2)
    docs = read_documents([tmp_path / "d"])
    other = reverse_complement_documents(docs, tok)
    assert other.num_documents == docs.num_documents == len(pieces)
    table = PieceTable.of(tok)
    for d, piece in enumerate(pieces):
        ids = other.tokens[other.doc_of_token == d]
        codes, _ = table.decode(ids)
        assert np.frombuffer(b"ACGT", np.uint8)[codes].tobytes() == reverse_complement(piece)
        assert (ids[-1] == tok.eod_id) == (d != 2)
    again = reverse_complement_documents(other, tok)
    np.testing.assert_array_equal(again.tokens, docs.tokens)
    np.testing.assert_array_equal(again.doc_of_token, docs.doc_of_token)
