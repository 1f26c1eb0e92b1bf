"""Write files so that a reader never sees a half-written one: temp file + rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path, mode: str = "wb") -> IO:
    """An open temporary file in `path`'s directory (so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile(
        mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )


def publish(tmp: str | Path, final: Path, *, fsync: bool = True) -> None:
    """Give `tmp` the usual permissions (temp files are 0600) and rename it to `final`."""
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, final)


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """`with atomic_write(p) as fh:` — `p` appears complete on success, untouched on error."""
    fh = temp_beside(path, mode)
    try:
        with fh:
            yield fh
        publish(fh.name, path)
    except BaseException:
        Path(fh.name).unlink(missing_ok=True)
        raise


class BackgroundSync:
    """Flush a file being written to disk in a background thread every `every` bytes.

    A final fsync of a large file stalls for as long as the disk needs to write all of it;
    flushing as the file grows overlaps that I/O with the work that produces the data, so
    the closing fsync (in `publish`) only has the tail left to write.
    """

    def __init__(self, fd: int, every: int = 32 << 20) -> None:
        self.fd = fd
        self.every = every
        self._pending = 0
        self._thread: threading.Thread | None = None

    def wrote(self, nbytes: int) -> None:
        self._pending += nbytes
        if self._pending >= self.every and not (self._thread and self._thread.is_alive()):
            self._pending = 0
            self._thread = threading.Thread(target=self._sync, daemon=True)
            self._thread.start()

    def _sync(self) -> None:
        with contextlib.suppress(OSError):  # the closing fsync reports real errors
            os.fdatasync(self.fd)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
