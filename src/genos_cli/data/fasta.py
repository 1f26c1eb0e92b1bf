"""Streaming reader for FASTA and one-sequence-per-line text, normalised for DNA models.

The reader turns any supported file into a stream of *normalised blocks*: bytes over the
alphabet ``A C G T N |`` where

- lowercase (soft-masked) bases are uppercased and ``U`` reads as ``T``;
- IUPAC ambiguity codes, ``X`` (hard-masking) and alignment gaps (``-``, ``.``) become ``N``;
- ``|`` marks a record boundary (a new FASTA record, or a new line of a text file);
- line breaks and other whitespace inside sequence lines are removed.

Every byte is handled by ``bytes.translate`` and ``bytes.find`` (C speed), and memory is
bounded by the block size, whatever the length of a record or a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from genos_cli.data.prefetch import prefetch
from genos_cli.data.sources import (
    DECOMPRESSION_ERRORS,
    CountingReader,
    SequenceStream,
    compression_error,
    expand_inputs,
    open_sequence_file,
    require_file,
)
from genos_cli.errors import GenosError

BLOCK_SIZE = 1 << 20  # bytes of (decompressed) input handled at a time: ~L2-sized is fastest
_MAX_LEADING_BLANK = 64 << 20  # a file starting with more whitespace than this counts as empty
RECORD_BREAK = b"|"
_INVALID = b"!"
_WHITESPACE = b" \t\r\n\x0b\x0c"
_IUPAC_AMBIGUOUS = b"RYSWKMBDHVN"
# Letters that occur in protein sequences but are no nucleotide code.
_PROTEIN_ONLY = set(b"EFILPQZJO*")
ACGT_RUN = re.compile(rb"[ACGT]+")
_TEXT_RECORD_START = re.compile(rb"(?:^|\|)[ACGTN]")


def _table(*, newline: bytes | None) -> bytes:
    table = bytearray(_INVALID * 256)
    for base in b"ACGT":
        table[base] = base
        table[base + 32] = base  # lowercase (soft-masked) → uppercase
    table[ord("U")] = table[ord("u")] = ord("T")
    for code in _IUPAC_AMBIGUOUS + b"X-.":
        table[code] = ord("N")
        if 65 <= code <= 90:
            table[code + 32] = ord("N")
    for ws in _WHITESPACE:
        table[ws] = ord("A")  # only seen where whitespace is not deleted (error location)
    if newline is not None:
        table[ord("\n")] = newline[0]
    return bytes(table)


_FASTA_TABLE = _table(newline=None)
_TEXT_TABLE = _table(newline=RECORD_BREAK)
_FASTA_DELETE = _WHITESPACE
_TEXT_DELETE = b" \t\r\x0b\x0c"  # newline separates records in text files


@dataclass
class ReadStats:
    """What the reader saw, summed over files."""

    files: int = 0
    records: int = 0
    bases: int = 0  # every sequence character (ACGT, N, ambiguity codes, gaps)


def _line_number(path: Path, offset: int) -> int:
    """1-based line of decompressed byte `offset` (error path only, so re-reading is fine)."""
    lines, seen = 1, 0
    with open_sequence_file(path) as (stream, _):
        while seen < offset and (block := stream.read(min(BLOCK_SIZE, offset - seen))):
            lines += block.count(b"\n")
            seen += len(block)
    return lines


def _invalid_char_error(path: Path, raw: bytes, offset: int, raw_start: int) -> GenosError:
    """Locate the first invalid byte of `raw[offset:]` (`raw` starts at decompressed byte
    `raw_start` of the file) and describe it in one sentence."""
    marked = raw.translate(_FASTA_TABLE)
    idx = marked.find(_INVALID, offset)
    line = _line_number(path, raw_start + idx)
    byte = raw[idx]
    if byte >= 0x80 or (byte < 0x20 and byte not in _WHITESPACE):
        return GenosError(
            f"{path}, line {line}: found binary data (byte 0x{byte:02x}); expected FASTA or "
            "one DNA sequence per line"
        )
    hint = ""
    if byte in _PROTEIN_ONLY:
        hint = " (this looks like a protein sequence; genos needs DNA)"
    return GenosError(
        f"{path}, line {line}: unexpected character {chr(byte)!r} in a sequence; expected "
        f"nucleotides (A, C, G, T, or IUPAC codes such as N){hint}"
    )


class SequenceReader:
    """Reads one file into normalised blocks, updating `stats` as it goes."""

    def __init__(self, path: Path, stats: ReadStats, block_size: int = BLOCK_SIZE) -> None:
        self.path = path
        self.stats = stats
        self.block_size = block_size
        self.consumed_bytes = 0  # compressed bytes read so far (progress)

    def blocks(self) -> Iterator[bytes]:
        try:
            with open_sequence_file(self.path) as (stream, counter):
                yield from self._parse(stream, counter)
        except DECOMPRESSION_ERRORS as exc:
            if isinstance(exc, OSError) and not _looks_like_codec_error(exc):
                raise GenosError(f"cannot read {self.path}: {exc}") from None
            raise compression_error(self.path, exc) from None

    def _parse(self, stream: SequenceStream, counter: CountingReader) -> Iterator[bytes]:
        first = stream.read(self.block_size)
        # Decide the format on content: read past leading blank lines longer than a block.
        while first and not first.strip() and len(first) < _MAX_LEADING_BLANK:
            more = stream.read(self.block_size)
            if not more:
                break
            first += more
        self.consumed_bytes = counter.consumed
        if not first.strip():
            raise GenosError(f"{self.path} is empty (no sequence found)")
        if b"\x00" in first[:65536]:
            raise GenosError(
                f"{self.path} is not a text file (it contains binary data); expected FASTA "
                "or one DNA sequence per line, optionally gzip/bzip2/xz-compressed"
            )
        self.stats.files += 1
        bases_before = self.stats.bases
        is_fasta = first.lstrip().startswith(b">")
        parse = self._fasta_blocks if is_fasta else self._text_blocks
        yield from parse(first, stream, counter)
        if self.stats.bases == bases_before:
            raise GenosError(f"{self.path} contains no sequence (only headers or blank lines)")

    def _read_more(self, stream: SequenceStream, counter: CountingReader) -> Iterator[bytes]:
        def produce() -> Iterator[tuple[bytes, int]]:
            while block := stream.read(self.block_size):
                yield block, counter.consumed

        # Decompression releases the GIL: a reader thread overlaps it with parsing.
        for block, consumed in prefetch(produce(), depth=2):
            self.consumed_bytes = consumed
            yield block

    def _text_blocks(
        self, first: bytes, stream: SequenceStream, counter: CountingReader
    ) -> Iterator[bytes]:
        raw_start = 0
        continues_line = False
        for raw in _chain(first, self._read_more(stream, counter)):
            out = raw.translate(_TEXT_TABLE, _TEXT_DELETE)
            if _INVALID in out:
                raise _invalid_char_error(self.path, raw, 0, raw_start)
            # A record is a non-empty line; one continued from the last block counts once.
            starts = len(_TEXT_RECORD_START.findall(out))
            if continues_line and out[:1] not in (RECORD_BREAK, b""):
                starts -= 1
            self.stats.records += starts
            breaks = out.count(RECORD_BREAK)
            self.stats.bases += len(out) - breaks
            continues_line = not out.endswith(RECORD_BREAK) and (continues_line or len(out) > 0)
            raw_start += len(raw)
            yield out
        yield RECORD_BREAK

    def _fasta_blocks(
        self, first: bytes, stream: SequenceStream, counter: CountingReader
    ) -> Iterator[bytes]:
        in_header = False
        at_line_start = True
        raw_start = 0
        for buf in _chain(first, self._read_more(stream, counter)):
            pieces: list[bytes] = []
            pos, n = 0, len(buf)
            while pos < n:
                if in_header:
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        pos = n
                        break
                    in_header, at_line_start, pos = False, True, nl + 1
                    continue
                if at_line_start and buf[pos] == 62:  # '>' starts a record
                    self.stats.records += 1
                    pieces.append(RECORD_BREAK)
                    in_header = True
                    pos += 1
                    continue
                end = _next_header(buf, pos)
                out = buf[pos:end].translate(_FASTA_TABLE, _FASTA_DELETE)
                if _INVALID in out:
                    raise _invalid_char_error(self.path, buf, pos, raw_start)
                pieces.append(out)
                self.stats.bases += len(out)
                at_line_start = buf[end - 1] == 10
                pos = end
            raw_start += n
            yield b"".join(pieces)
        yield RECORD_BREAK


def _next_header(buf: bytes, pos: int) -> int:
    """Index just past the newline that precedes the next '>' at a line start, or len(buf).
    A lone-byte find is a memchr; '>' is rare, so this beats searching for b"\\n>"."""
    j = buf.find(b">", pos)
    while j >= 0:
        if j > 0 and buf[j - 1] == 10:
            return j
        j = buf.find(b">", j + 1)
    return len(buf)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _looks_like_codec_error(exc: OSError) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("gzip", "compressed", "stream", "magic", "crc", "data"))


def read_acgt_runs(
    paths: Sequence[Path | str], *, max_run_bp: int, stats: ReadStats | None = None
) -> Iterator[bytes]:
    """Uppercase ACGT runs from FASTA / compressed FASTA / one-sequence-per-line text files
    or directories of them, split at non-ACGT bases (N, IUPAC codes) and into pieces of at
    most `max_run_bp`. Raises GenosError for missing/empty/non-DNA/corrupt input."""
    if max_run_bp < 1:
        raise ValueError("max_run_bp must be positive")
    stats = stats if stats is not None else ReadStats()
    for path in expand_inputs(paths):
        carry = b""
        for block in SequenceReader(path, stats).blocks():
            buf = carry + block
            carry = b""
            for match in ACGT_RUN.finditer(buf):
                start, end = match.span()
                if end == len(buf):  # may continue in the next block
                    carry = buf[start:end]
                    break
                for i in range(start, end, max_run_bp):
                    yield buf[i : min(i + max_run_bp, end)]
            if len(carry) >= max_run_bp:
                cut = len(carry) - len(carry) % max_run_bp
                for i in range(0, cut, max_run_bp):
                    yield carry[i : i + max_run_bp]
                carry = carry[cut:]
        # The final RECORD_BREAK block always ends a file, so nothing is left in `carry`.


def normalise_sequence(seq: bytes) -> tuple[bytes, int]:
    """One record's sequence normalised as FASTA sequence lines are (the same table: uppercase
    ACGT, N for ambiguity codes and gaps, whitespace removed), for sequences that come as
    strings rather than files (Hugging Face datasets). Returns (normalised bytes, index in
    `seq` of the first byte that is no nucleotide code, or -1)."""
    out = seq.translate(_FASTA_TABLE, _FASTA_DELETE)
    if _INVALID not in out:
        return out, -1
    return out, seq.translate(_FASTA_TABLE).find(_INVALID)


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record, its sequence normalised as `SequenceReader` normalises (uppercase
    ACGT, N for ambiguity codes and gaps, whitespace removed)."""

    name: str  # the header's first word ("" when the header is empty)
    description: str  # the rest of the header
    sequence: bytes
    line: int  # 1-based line of the header
    number: int  # 1-based place of the record in the file

    @property
    def id(self) -> str:
        """The record's name, or `recordN` for a header without one."""
        return self.name or f"record{self.number}"


def _lines(stream: SequenceStream) -> Iterator[bytes]:
    """Lines of a binary stream without their line ends, read a block at a time."""
    rest = b""
    while block := stream.read(BLOCK_SIZE):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def read_fasta_records(path: Path) -> Iterator[FastaRecord]:
    """The records of a FASTA file (plain or gzip/bzip2/xz-compressed), one at a time, with
    their names: a record's sequence is held in memory, the file is not. Raises GenosError
    naming the file and line or record for a missing, empty, non-FASTA or corrupt file."""
    path = require_file(path, "a FASTA file")
    header: tuple[str, str, int] | None = None
    parts: list[bytes] = []
    records = 0

    def record(header: tuple[str, str, int], parts: list[bytes]) -> FastaRecord:
        nonlocal records
        records += 1
        name, description, line = header
        raw = b"".join(parts)
        seq, bad = normalise_sequence(raw)
        if bad >= 0:
            char = chr(raw[bad])
            raise GenosError(
                f"{path}, record {name or '(no name)'!r} (line {line}): unexpected character "
                f"{char!r} in its sequence; expected nucleotides (A, C, G, T or IUPAC codes)"
            )
        return FastaRecord(name, description, seq, line, records)

    try:
        with open_sequence_file(path) as (stream, _):
            for number, raw in enumerate(_lines(stream), start=1):
                line = raw.rstrip(b"\r")
                if line.startswith(b">"):
                    if header is not None:
                        yield record(header, parts)
                    text = line[1:].decode("utf-8", "replace").strip()
                    name, _, description = text.partition(" ")
                    header, parts = (name, description.strip(), number), []
                elif not line.strip():
                    continue
                elif header is None:
                    if b"\x00" in line:
                        raise GenosError(f"{path} is not a text file (it contains binary data)")
                    raise GenosError(
                        f"{path}, line {number}: sequence before the first '>' header; "
                        "expected FASTA"
                    )
                else:
                    parts.append(line)
    except DECOMPRESSION_ERRORS as exc:
        raise compression_error(path, exc) from None
    if header is None:
        raise GenosError(f"{path} is empty (no FASTA record found)")
    yield record(header, parts)
