"""Variants and the reference they are called against, read through pysam (htslib): VCF,
bgzipped VCF and BCF in, the same with an INFO field added out; the reference by faidx
random access (plain or bgzipped FASTA, `.fai` built beside it when missing).

A reference compressed with plain gzip cannot be read at random positions; samtools and
htslib refuse it, and so does genos, saying how to decompress it or recompress it with
bgzip. `pysam` is optional: the `vcf` extra (`genos_cli.extras`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from genos_cli import extras
from genos_cli.data.sources import require_file
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    import pysam

T = TypeVar("T")
INFO_ID = "GENOS_LLR"
ACGT = frozenset("ACGT")
_COLUMNS = ("CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")


def require_pysam() -> Any:
    """pysam, imported (or a GenosError naming the `vcf` extra), with htslib kept quiet."""
    (pysam,) = extras.require("vcf")
    pysam.set_verbosity(0)  # htslib's own stderr lines; genos reports errors itself
    return pysam


def _is_bgzf(path: Path) -> bool:
    """gzip with the BGZF extra field 'BC' (SAM/BAM specification, section 4.1)."""
    with path.open("rb") as fh:
        head = fh.read(18)
    return len(head) >= 16 and head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC"


def open_reference(path: Path) -> pysam.FastaFile:
    """The reference FASTA, indexed for random access (faidx; `.fai` and, when bgzipped,
    `.gzi` are built beside it on first use)."""
    pysam = require_pysam()
    path = require_file(path, "a reference FASTA file")
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped and not _is_bgzf(path):
        raise GenosError(
            f"reference {path} is compressed with gzip, not bgzip, so it cannot be read at "
            f"random positions (samtools faidx refuses it too); decompress it "
            f"(gunzip -k {path}) or recompress it with bgzip "
            f"(gunzip -c {path} | bgzip > {path.with_suffix('.bgz')}) and pass that file"
        )
    fai = Path(f"{path}.fai")
    if not fai.is_file() and not os.access(path.parent, os.W_OK):
        raise GenosError(
            f"reference {path} has no index ({fai.name}) and its directory is not writable; "
            f"index it where you can write (samtools faidx {path}) or copy it"
        )
    return _htslib_open(
        pysam.FastaFile, path, f"reference {path} cannot be indexed as FASTA",
        "expected FASTA, plain or bgzip-compressed",
    )  # fmt: skip


def _htslib_open(opener: Callable[[str], T], path: Path, problem: str, expected: str) -> T:
    """`opener(path)`, or a GenosError: the `problem`, htslib's complaint, what was
    `expected`."""
    try:
        return opener(str(path))
    except (OSError, ValueError) as exc:
        raise GenosError(f"{problem} ({exc}); {expected}") from None


@dataclass(frozen=True)
class Variant:
    """One VCF record as scoring needs it (0-based start, as pysam gives it)."""

    index: int  # 0-based record number in the file
    line: int  # 1-based line of the file (VCF) or record number (BCF)
    chrom: str
    start: int  # 0-based position of REF's first base
    id: str | None
    ref: str
    alts: tuple[str, ...]
    bcf: bool = False  # `line` is then the 1-based record number

    @property
    def where(self) -> str:
        place = f"record {self.line}" if self.bcf else f"line {self.line}"
        return f"{place} ({self.chrom}:{self.start + 1})"


def _diagnose(path: Path, line_number: int) -> str:
    """Why line `line_number` of a VCF that htslib could not parse is malformed."""
    pysam = require_pysam()
    try:
        with pysam.BGZFile(str(path), "rb") as fh:  # reads plain and bgzipped text alike
            for number, raw in enumerate(fh, start=1):
                if number == line_number:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    break
            else:
                return "the file ends in the middle of a record"
    except OSError:
        return "it is not valid VCF"
    fields = line.split("\t")
    if len(fields) < len(_COLUMNS):
        return (
            f"it has {len(fields)} tab-separated columns, expected at least {len(_COLUMNS)} "
            f"({' '.join(_COLUMNS)})"
        )
    if not fields[1].isdigit():
        return f"POS {fields[1]!r} is not a positive integer"
    return "htslib could not parse it as a VCF record"


def _header_lines(path: Path) -> int:
    """Lines of a text VCF (plain or bgzipped) before its first record."""
    pysam = require_pysam()
    count = 0
    with pysam.BGZFile(str(path), "rb") as fh:
        for raw in fh:
            if not raw.startswith(b"#"):
                break
            count += 1
    return count


def read_variants(path: Path, handle: pysam.VariantFile) -> Iterator[tuple[Variant, Any]]:
    """(Variant, the pysam record) for every record of an open VCF/BCF, raising a GenosError
    naming the line (VCF) or record number (BCF) of a malformed one."""
    bcf = handle.is_bcf
    first_line = 0 if bcf else _header_lines(path) + 1
    index = 0
    records = iter(handle)
    while True:
        line = first_line + index
        try:
            rec = next(records)
        except StopIteration:
            return
        except (OSError, ValueError) as exc:
            if bcf:
                raise GenosError(f"{path}, record {index + 1}: malformed BCF ({exc})") from None
            reason = _diagnose(path, line)
            raise GenosError(f"{path}, line {line}: malformed VCF record: {reason}") from None
        alts = tuple(rec.alts or ())
        where = index + 1 if bcf else line
        yield Variant(index, where, rec.chrom, rec.start, rec.id, rec.ref or "", alts, bcf), rec
        index += 1


def open_vcf(path: Path) -> pysam.VariantFile:
    pysam = require_pysam()
    path = require_file(path, "a VCF or BCF file")
    return _htslib_open(
        pysam.VariantFile, path, f"{path} is not a VCF or BCF file htslib can read",
        "expected a header starting with ##fileformat=VCF",
    )  # fmt: skip


def write_mode(path: Path) -> str:
    """pysam's write mode for an output file: BCF, bgzipped VCF or plain VCF by suffix."""
    name = path.name.lower()
    if name.endswith(".bcf"):
        return "wb"
    if name.endswith((".vcf.gz", ".vcf.bgz", ".gz", ".bgz")):
        return "wz"
    return "w"
