"""The FASTA / text reader against a plain line-by-line reference parse, on real genomes."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
from pathlib import Path

import pytest

from genos_cli.data.fasta import ReadStats, SequenceReader, read_acgt_runs
from genos_cli.errors import GenosError

IUPAC = set("RYSWKMBDHVNX-.")


def reference_runs(text: str) -> list[str]:
    """Simple reference: records from '>' lines, bases uppercased, U→T, everything that is
    not ACGT breaks a run."""
    runs: list[str] = []
    is_fasta = text.lstrip().startswith(">")
    records: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if is_fasta and line.startswith(">"):
            records.append("".join(current))
            current = []
        elif is_fasta:
            current.append("".join(line.split()))
        else:
            records.append("".join(line.split()))
    records.append("".join(current))
    for record in records:
        seq = record.upper().replace("U", "T")
        runs.extend(r for r in re.split(r"[^ACGT]+", seq) if r)
    return runs


def read_all_runs(path: Path, block_size: int) -> list[bytes]:
    """Maximal ACGT runs as the reader delivers them (blocks joined per record)."""
    stats = ReadStats()
    joined = b"".join(SequenceReader(path, stats, block_size=block_size).blocks())
    return [r for r in re.split(rb"[N|]+", joined) if r]


@pytest.fixture(scope="module")
def ecoli_head(ecoli_fasta: Path) -> str:
    """The first 20 kbp of the real E. coli genome."""
    with gzip.open(ecoli_fasta, "rt") as fh:
        fh.readline()
        return "".join(line.strip() for _, line in zip(range(300), fh, strict=False))[:20000]


def _messy_fasta(seq: str) -> str:
    """Real sequence dressed as users bring it: soft-masked lowercase, IUPAC codes, N runs,
    CRLF and ragged line widths, an empty record, blank lines."""
    s = list(seq)
    for i in range(1000, 1800):
        s[i] = s[i].lower()
    for i, code in zip(range(2500, 20000, 997), "RYKMSWBDHVN", strict=False):
        s[i] = code
    s[7000:7050] = "N" * 50
    body = "".join(s)
    lines = []
    pos = 0
    width = 37
    while pos < len(body):
        lines.append(body[pos : pos + width])
        pos += width
        width = 37 if width == 80 else 80
    half = len(lines) // 2
    return (
        ">rec1 first half\r\n"
        + "\r\n".join(lines[:half])
        + "\r\n>empty record\n\n>rec3 second half\n"
        + "\n".join(lines[half:])
        + "\n\n"
    )


@pytest.mark.parametrize("block_size", [7, 64, 1 << 20])
def test_fasta_runs_equal_reference(tmp_path: Path, ecoli_head: str, block_size: int) -> None:
    text = _messy_fasta(ecoli_head)
    path = tmp_path / "messy.fa"
    path.write_text(text, newline="")
    got = [r.decode() for r in read_all_runs(path, block_size)]
    assert got == reference_runs(text)
    assert len(got) > 12  # the IUPAC codes and N run did split the sequence


@pytest.mark.parametrize("block_size", [5, 1 << 20])
def test_text_format_lines_are_records(tmp_path: Path, ecoli_head: str, block_size: int) -> None:
    lines = [ecoli_head[i : i + 512] for i in range(0, 5120, 512)]
    lines[3] = lines[3].lower()
    text = "\n".join(lines) + "\n\n" + ecoli_head[6000:6100] + "\r\n"
    path = tmp_path / "train.txt"
    path.write_text(text, newline="")
    stats = ReadStats()
    joined = b"".join(SequenceReader(path, stats, block_size=block_size).blocks())
    runs = [r.decode() for r in re.split(rb"[N|]+", joined) if r]
    assert runs == [line.upper() for line in lines] + [ecoli_head[6000:6100]]
    assert stats.records == 11
    assert stats.bases == 5120 + 100


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
def test_compressed_inputs(tmp_path: Path, ecoli_head: str, opener) -> None:  # type: ignore[no-untyped-def]
    text = ">chr\n" + "\n".join(ecoli_head[i : i + 60] for i in range(0, 20000, 60)) + "\n"
    path = tmp_path / "genome.fa.compressed"  # detected by content, not by name
    with opener(path, "wt") as fh:
        fh.write(text)
    assert b"".join(read_acgt_runs([path], max_run_bp=10**9)).decode() == ecoli_head


def test_real_genomes_bases_and_records(genomes_dir: Path) -> None:
    stats = ReadStats()
    total = sum(len(r) for r in read_acgt_runs([genomes_dir], max_run_bp=4096, stats=stats))
    # The data README's table: 17 records, 67,254,376 bp, C. elegans/D. discoideum carry Ns.
    assert stats.files == 6
    assert stats.records == 17
    assert stats.bases == 67_254_376
    assert 0 < stats.bases - total < 100_000


def test_max_run_bp_splits(ecoli_fasta: Path) -> None:
    pieces = list(read_acgt_runs([ecoli_fasta], max_run_bp=1000))
    assert all(len(p) <= 1000 for p in pieces)
    assert sum(len(p) for p in pieces) == 4_639_675
    assert len(pieces) == 4640


# -- bad input ----------------------------------------------------------------------------


def _error(path: Path) -> str:
    with pytest.raises(GenosError) as info:
        list(read_acgt_runs([path], max_run_bp=100))
    return str(info.value)


def test_missing_and_empty(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nope.fa")
    (tmp_path / "empty.fa").write_bytes(b"")
    assert "is empty" in _error(tmp_path / "empty.fa")
    (tmp_path / "headers.fa").write_text(">a\n>b\n")
    assert "contains no sequence" in _error(tmp_path / "headers.fa")
    (tmp_path / "dir").mkdir()
    assert "no sequence files" in _error(tmp_path / "dir")


def test_protein_fasta_names_line(tmp_path: Path) -> None:
    path = tmp_path / "protein.fa"
    path.write_text(">sp|P69905|HBA_HUMAN\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF\n")
    message = _error(path)
    assert "line 2" in message and "protein" in message


def test_invalid_character_line_number(tmp_path: Path, ecoli_head: str) -> None:
    lines = [ecoli_head[i : i + 60] for i in range(0, 6000, 60)]
    lines[41] = lines[41][:10] + "7" + lines[41][11:]
    path = tmp_path / "bad.fa.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(">x\n" + "\n".join(lines) + "\n")
    message = _error(path)
    assert message.startswith(f"{path}, line 43: unexpected character '7'")


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.fa"
    path.write_bytes(bytes(range(256)) * 4)
    assert "binary" in _error(path)


def test_truncated_gzip(tmp_path: Path, ecoli_fasta: Path) -> None:
    path = tmp_path / "truncated.fa.gz"
    path.write_bytes(ecoli_fasta.read_bytes()[:200_000])
    assert "truncated or corrupt gzip" in _error(path)


def test_corrupt_xz(tmp_path: Path, ecoli_head: str) -> None:
    data = bytearray(lzma.compress((">x\n" + ecoli_head + "\n").encode()))
    data[40:60] = b"\x00" * 20
    path = tmp_path / "bad.fa.xz"
    path.write_bytes(bytes(data))
    assert "corrupt xz" in _error(path)
