"""Write files and directories so that a reader never sees a half-written one: temp + rename.

Temporary files are hidden and named after the file they become, the host and the process
writing them (`.NAME.HOST-PID.XXXXXXXX.tmp`), so a later run can tell the leftovers of a
killed writer from the files of a live one and remove them (`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from genos_cli.errors import GenosError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("/", "_") or "host"


def temp_beside(path: Path, mode: str = "wb") -> IO:
    """An open temporary file in `path`'s directory (so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile(
        mode, dir=path.parent, prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp",
        delete=False,
    )  # fmt: skip


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_temps(path: Path) -> list[Path]:
    """Temporary files `temp_beside(path)` left behind by writers that are gone: processes
    of this host that no longer run. Files of live processes and of other hosts are kept."""
    if not path.parent.is_dir():
        return []
    stale = []
    host = _host()
    start = f".{path.name}."
    for tmp in path.parent.iterdir():
        if not (tmp.name.startswith(start) and tmp.name.endswith(".tmp")):
            continue
        owner = tmp.name[len(start) :].rsplit(".", 2)[0]  # HOST-PID
        tmp_host, _, pid = owner.rpartition("-")
        mine = tmp_host == host and pid.isdigit() and int(pid) != os.getpid()
        if mine and not _pid_alive(int(pid)):
            stale.append(tmp)
    return stale


def remove_stale_temps(path: Path) -> int:
    """Delete `stale_temps(path)`; how many were removed."""
    removed = 0
    for tmp in stale_temps(path):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX: a rename is on disk once the directory
    is synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms that cannot open directories
        return
    try:
        with contextlib.suppress(OSError):  # e.g. filesystems without directory fsync
            os.fsync(fd)
    finally:
        os.close(fd)


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
    if fsync:
        fsync_dir(final.parent)


def ensure_writable_dir(directory: Path, what: str) -> None:
    """Create `directory` (and parents) and check a file can be written in it, or raise a
    GenosError naming it: a pre-flight check, so a read-only or wrong path fails before any
    work instead of at the first save."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise GenosError(f"cannot use {directory} as the {what}: it is a file") from None
    except OSError as exc:
        raise GenosError(
            f"cannot create the {what} {directory}: {describe_os_error(exc, directory)}"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".genos-write-check."):
            pass
    except OSError as exc:
        raise GenosError(
            f"the {what} {directory} is not writable: {describe_os_error(exc, directory)}"
        ) from None


def describe_os_error(exc: BaseException, directory: Path | None = None) -> str:
    """A short reason for a failed write: the OS's words for it ("No space left on
    device", "Read-only file system", ...). Libraries that hide the errno (torch.save raises
    RuntimeError) are recognised by a full filesystem under `directory`."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    if directory is not None and disk_full(directory):
        return os.strerror(errno.ENOSPC).lower()
    return " ".join(str(exc).split())[:200]


def disk_full(directory: Path, *, below: int = 1 << 20) -> bool:
    """Less than `below` bytes (1 MiB) left for unprivileged writes on `directory`'s
    filesystem."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < below


def write_temp(path: Path, data: bytes) -> Path:
    """`data` in a new temporary file beside `path`, for `publish` to rename into place;
    nothing is left behind when writing fails."""
    fh = temp_beside(path)
    try:
        with fh:
            fh.write(data)
    except BaseException:
        Path(fh.name).unlink(missing_ok=True)
        raise
    return Path(fh.name)


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


def replace_dir(staging: Path, final: Path, aside: Path) -> None:
    """Rename the complete directory `staging` to `final`, durably.

    A directory cannot be renamed over a non-empty one, so an existing `final` is first
    renamed to `aside` (replacing what an interrupted earlier swap left there); the caller
    deletes `aside` once nothing needs the old directory.
    """
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(staging, final)
    fsync_dir(final.parent)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """`with atomic_dir(d) as tmp:` — fill the temporary directory `tmp`; `d` becomes it
    (replacing an existing `d`) on success, and is untouched on error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    aside = path.with_name(f".{path.name}.{os.getpid()}.old")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        replace_dir(tmp, path, aside)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


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
