"""Bad-input sweep: random bytes, FASTA-like text built from a real genome with what users
bring (lowercase, IUPAC codes, N runs, CRLF and mixed line endings, very long lines, empty
records, stray characters), compressed and corrupt files — through the FASTA reader and
`genos preprocess`. Nothing crashes with a traceback, and for valid input the bases kept
equal a simple reference parse of docs/preprocess.md's rules."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genos_cli.data.fasta import ReadStats, SequenceReader, read_acgt_runs
from genos_cli.data.indexed import IndexedDataset
from genos_cli.errors import GenosError
from tests.helpers import assert_user_error, genos

_WHITESPACE = b" \t\r\x0b\x0c"  # removed inside sequence lines; '\n' ends a line
_AMBIGUOUS = "RYSWKMBDHVNX-."  # IUPAC ambiguity codes, hard-masking, gaps: all break runs
_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def reference_runs(data: bytes) -> list[bytes] | None:
    """The documented rules, line by line: maximal ACGT runs, or None where the input must
    be refused (empty, binary, a character that is no nucleotide code, no sequence)."""
    if not data.strip() or b"\x00" in data:
        return None
    fasta = data.lstrip().startswith(b">")
    records: list[bytes] = []
    current: list[bytes] = []
    for line in data.split(b"\n"):
        if fasta and line.startswith(b">"):  # a header: only at the start of a line
            records.append(b"".join(current))
            current = []
            continue
        seq = bytes(c for c in line if c not in _WHITESPACE)
        if fasta:
            current.append(seq)  # a record's lines join up
        else:
            records.append(seq)  # text: every line is a record
    records.append(b"".join(current))
    runs, total = [], 0
    for record in records:
        bases = bytearray()
        for c in record.upper().decode("latin-1"):  # bytes.upper: ASCII letters only
            if c in "ACGT":
                bases += c.encode()
            elif c == "U":
                bases += b"T"
            elif c in _AMBIGUOUS:
                bases += b"N"
            else:
                return None
        total += len(bases)
        runs += [r for r in re.split(rb"N+", bytes(bases)) if r]
    return runs if total else None


def reader_runs(path: Path, block_size: int) -> list[bytes]:
    joined = b"".join(SequenceReader(path, ReadStats(), block_size=block_size).blocks())
    return [r for r in re.split(rb"[N|]+", joined) if r]


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda b: b,
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}


@st.composite
def messy_fasta(draw: st.DrawFn, genome: bytes) -> bytes:
    """FASTA or one-sequence-per-line text made of slices of a real genome."""
    fasta = draw(st.booleans())
    eol = draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    lines: list[bytes] = [b""] * draw(st.integers(0, 2))  # leading blank lines
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(0, len(genome) - 1))
        seq = bytearray(genome[start : start + draw(st.integers(0, 2500))])
        for _ in range(draw(st.integers(0, 6)) if seq else 0):
            i = draw(st.integers(0, len(seq) - 1))
            j = min(len(seq), i + draw(st.integers(1, 300)))
            kind = draw(st.sampled_from(["lower", "lower", "code", "n_run", "u", "space", "bad"]))
            if kind == "lower":  # soft-masking
                seq[i:j] = seq[i:j].lower()
            elif kind == "code":
                seq[i] = ord(draw(st.sampled_from(_AMBIGUOUS + _AMBIGUOUS.lower())))
            elif kind == "n_run":
                seq[i:j] = b"N" * (j - i)
            elif kind == "u":
                seq[i] = ord(draw(st.sampled_from("Uu")))
            elif kind == "space":
                seq[i:i] = draw(st.sampled_from([b" ", b"\t", b"\x0b", b"\x0c", b"\r"]))
            else:  # a character no nucleotide code is: protein letters, digits, '>', bytes
                seq[i] = draw(st.sampled_from(b"EFIJLOPQZ019*>#@\x01\x7f\x80\xff"))
        width = draw(st.sampled_from([0, 0, 1, 7, 60, 61, 80, 1000]))  # 0: one long line
        body = [bytes(seq)] if not width else [bytes(seq[k : k + width]) for k in
                                               range(0, len(seq), width)]  # fmt: skip
        if fasta:
            name = draw(st.text(st.characters(blacklist_characters="\n\x00"), max_size=20))
            lines += [b">" + name.encode("utf-8", "surrogatepass"), *body]
        else:
            lines += body
        lines += [b""] * draw(st.integers(0, 1))  # empty record / blank line
    out = b""
    for k, line in enumerate(lines):
        end = eol if eol != "mixed" else draw(st.sampled_from(["\n", "\r\n"]))
        out += line + (end.encode() if k < len(lines) - 1 or draw(st.booleans()) else b"")
    return out


class Genome(bytes):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<{len(self):,} bp of E. coli K-12>"


@pytest.fixture(scope="module")
def genome(ecoli_fasta: Path) -> bytes:
    """60 kbp of the real E. coli K-12 genome."""
    with gzip.open(ecoli_fasta, "rb") as fh:
        fh.readline()
        return Genome(b"".join(line.strip() for _, line in zip(range(1000), fh, strict=False)))


@pytest.fixture(scope="module")
def workdir() -> Path:  # one directory for every example (hypothesis forbids tmp_path)
    with tempfile.TemporaryDirectory(prefix="genos-fuzz-") as d:
        yield Path(d)


SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
SWEEP = settings(max_examples=150, deadline=None, suppress_health_check=SLOW_OK)


@pytest.mark.slow  # 150 messy FASTA files through every codec and block size
@SWEEP
@given(data=st.data(), codec=st.sampled_from(sorted(COMPRESS)),
       block_size=st.sampled_from([1, 2, 3, 7, 64, 1000, 1 << 20]))  # fmt: skip
def test_reader_keeps_the_reference_bases(
    genome: bytes, workdir: Path, data: st.DataObject, codec: str, block_size: int
) -> None:
    text = data.draw(messy_fasta(genome))
    path = workdir / "input.fa"
    path.write_bytes(COMPRESS[codec](text))
    expected = reference_runs(text)
    if expected is None:
        with pytest.raises(GenosError, match=re.escape(str(path))):
            reader_runs(path, block_size)
        return
    assert reader_runs(path, block_size) == expected
    # read_acgt_runs cuts the same runs into pieces of at most max_run_bp.
    size = data.draw(st.integers(1, 600))
    pieces = [run[i : i + size] for run in expected for i in range(0, len(run), size)]
    assert list(read_acgt_runs([path], max_run_bp=size)) == pieces


@SWEEP
@given(raw=st.binary(max_size=3000))
def test_random_bytes_are_read_or_refused(workdir: Path, raw: bytes) -> None:
    path = workdir / "random.fa"
    path.write_bytes(raw)
    expected = None if raw.startswith(_MAGIC) else reference_runs(raw)
    if expected is None:
        with pytest.raises(GenosError, match=re.escape(str(path))):
            reader_runs(path, 1 << 20)
    else:
        assert reader_runs(path, 1 << 20) == expected


@SWEEP
@given(data=st.data(), codec=st.sampled_from(["gzip", "bzip2", "xz"]))
def test_corrupt_compressed_files_are_refused(
    genome: bytes, workdir: Path, data: st.DataObject, codec: str
) -> None:
    text = b">chr\n" + genome[: data.draw(st.integers(1, 20000))] + b"\n"
    packed = bytearray(COMPRESS[codec](text))
    path = workdir / "corrupt.fa.gz"
    if data.draw(st.booleans()):  # truncated: always an error naming the file
        # (cut inside its magic number, a file is no longer recognisably compressed: "B" of
        # "BZh" is a fine one-base text file)
        keep = data.draw(st.integers(len(next(m for m in _MAGIC if packed.startswith(m))),
                                     len(packed) - 1))  # fmt: skip
        path.write_bytes(packed[:keep])
        with pytest.raises(GenosError, match=re.escape(str(path))):
            reader_runs(path, 1 << 16)
        return
    i = data.draw(st.integers(0, len(packed) - 1))  # one flipped byte
    packed[i] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(packed))
    try:
        runs = reader_runs(path, 1 << 16)
    except GenosError as exc:
        assert str(path) in str(exc)
    else:  # a byte the format does not check (a gzip header's time stamp): same content
        assert runs == reference_runs(text)


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_OK)
@given(data=st.data(), codec=st.sampled_from(sorted(COMPRESS)))
def test_preprocess_keeps_the_reference_bases(
    genome: bytes, workdir: Path, data: st.DataObject, codec: str
) -> None:
    """`genos preprocess` end to end (one token per base, 64-bp windows, every run end
    kept): the sequences it writes are the reference runs cut into windows, or it fails
    with one sentence and writes nothing."""
    text = data.draw(messy_fasta(genome))
    case = workdir / f"cli-{codec}"
    case.mkdir(exist_ok=True)
    for old in case.iterdir():
        old.unlink()
    path = case / "input.fa"
    path.write_bytes(COMPRESS[codec](text))
    out = case / "out"
    result = genos("preprocess", path, "-o", out, "--nucleotide-tokenizer", "--seq-length", "64",
                   "--min-length", "1", "--val-ratio", "0", "--workers", "1")  # fmt: skip
    expected = reference_runs(text)
    if not expected:  # refused, or read but not one A/C/G/T base: nothing to train on
        assert_user_error(result, str(path))
        assert sorted(p.name for p in case.iterdir()) == ["input.fa"]
        return
    assert result.exit_code == 0, result.output
    ds = IndexedDataset(case / "out_text_document")
    letters = {7: "A", 8: "T", 9: "C", 10: "G"}
    windows = ["".join(letters[t] for t in ds[i][:-1].tolist()) for i in range(len(ds))]
    assert windows == [r[i : i + 64].decode() for r in expected for i in range(0, len(r), 64)]
