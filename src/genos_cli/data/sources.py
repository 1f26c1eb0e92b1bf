"""Finding and opening sequence files: plain, gzip, bzip2 or xz, by content not by name."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from genos_cli.errors import GenosError

SEQUENCE_SUFFIXES = {".fa", ".fasta", ".fna", ".ffn", ".fas", ".fsa", ".seq", ".txt", ".dna"}
COMPRESSION_SUFFIXES = {".gz", ".bgz", ".bz2", ".xz"}

# Magic numbers decide the codec, so a mis-named file still opens correctly.
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}

try:  # ISA-L's inflate is ~3x faster than zlib's; same format, same file objects.
    from isal import igzip as _gzip
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - platforms without isal wheels
    _gzip, _zlib = gzip, zlib

#: Exceptions the decompressors raise on truncated or corrupt input.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    gzip.BadGzipFile,
    zlib.error,
    _zlib.error,
    lzma.LZMAError,
    OSError,
)


DEFAULT_GENOME = "ecoli_k12_mg1655.fasta.gz"


def default_genome_path() -> Path:
    """The real genome shipped inside genos (E. coli K-12 MG1655, 4.6 Mbp)."""
    from importlib import resources

    return Path(str(resources.files("genos_cli.resources") / "genomes" / DEFAULT_GENOME))


def _is_sequence_name(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in SEQUENCE_SUFFIXES


def expand_inputs(paths: Sequence[Path | str]) -> list[Path]:
    """Files named directly, plus sequence files found (recursively, sorted) in directories."""
    if not paths:
        raise GenosError("no input given; pass FASTA / text files or directories")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not p.name.startswith(".") and _is_sequence_name(p)
            )
            if not found:
                raise GenosError(
                    f"{path} is a directory with no sequence files "
                    f"(looked for {', '.join(sorted(SEQUENCE_SUFFIXES))}, optionally compressed)"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise GenosError(f"{path} is not a regular file or directory")
        else:
            raise GenosError(f"{path} does not exist")
    return files


def require_file(path: Path, expected: str) -> Path:
    """`path` if it is a file; else a GenosError saying that it does not exist or is a
    directory, and what was `expected` there ("a FASTA file")."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise GenosError(f"{path} {what}; expected {expected}")
    return path


def detect_compression(path: Path) -> str | None:
    """'gzip', 'bzip2', 'xz' or None, from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, codec in _MAGIC.items():
        if head.startswith(magic):
            return codec
    return None


class CountingReader:
    """Wraps a raw file to expose how many (compressed) bytes were consumed, for progress."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self.raw = raw
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.consumed += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # used by bz2/lzma
        n = self.raw.readinto(buffer)
        self.consumed += n or 0
        return n

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()


# What `open_sequence_file` yields to read: a decompressor over the counter, or the counter.
SequenceStream = io.BufferedIOBase | CountingReader


@contextmanager
def open_sequence_file(path: Path) -> Iterator[tuple[SequenceStream, CountingReader]]:
    """Yield (decompressed binary stream, raw byte counter) for `path`."""
    try:
        raw_fh = open(path, "rb")
    except OSError as exc:
        raise GenosError(f"cannot read {path}: {exc.strerror}") from None
    counter = CountingReader(raw_fh)
    codec = detect_compression(path)
    # The ignores: typeshed wants a whole (seekable) file for BZ2File and LZMAFile, which only
    # read from the counter.
    stream: SequenceStream
    if codec == "gzip":
        stream = _gzip.GzipFile(fileobj=counter, mode="rb")
    elif codec == "bzip2":
        stream = bz2.BZ2File(counter, mode="rb")  # type: ignore[call-overload]
    elif codec == "xz":
        stream = lzma.LZMAFile(counter, mode="rb")  # type: ignore[arg-type]
    else:
        stream = counter
    try:
        yield stream, counter
    finally:
        raw_fh.close()


def compression_error(path: Path, exc: BaseException) -> GenosError:
    codec = detect_compression(path) or "compressed"
    return GenosError(f"{path} is a truncated or corrupt {codec} file ({exc})")
