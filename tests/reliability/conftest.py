"""Shared pieces of the reliability tests: `genos` as a separate process that can be killed,
a reference run, and ways to make a directory full or read-only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import Result

from tests.tiny import TINY_TRAIN_ARGS

# Set by an in-process training run (torch.distributed's rendezvous); a child process that
# inherited them would try to join the test process's process group.
_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env() -> dict[str, str]:
    """The environment for a `genos` child process: one thread (runs being compared must
    use the same, and two threads on a shared 2-core machine crawl), no inherited rank."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def start(*args: str | Path, wrapper: str | None = None) -> subprocess.Popen:
    """`python -m genos_cli ARGS` (or `python -c WRAPPER ARGS`) in its own process group."""
    head = ["-c", wrapper] if wrapper else ["-m", "genos_cli"]
    return subprocess.Popen(
        [sys.executable, *head, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(),
        start_new_session=True,
    )


def run_genos(*args: str | Path) -> None:
    proc = start(*args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Poll `condition` every 2 ms; fail if the process ends first."""
    deadline = time.monotonic() + 300
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            pytest.fail(f"genos exited (code {proc.returncode}) before {what}\n{err}")
        if time.monotonic() > deadline:
            kill(proc)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group: no handler, no cleanup, as in a crash or OOM kill."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait()
    if proc.stderr:
        proc.stderr.close()


def log_records(run: Path, kind: str = "train") -> list[dict]:
    from genos_cli.telemetry.records import read_log

    path = run / "training_log.jsonl"
    if not path.is_file():
        return []
    return [r.model_dump(mode="json") for r in read_log(path) if r.type == kind]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory, ecoli_data: Path) -> Path:
    """An uninterrupted 8-step run, in a child process like the runs compared with it."""
    run = tmp_path_factory.mktemp("reference") / "run"
    run_genos("train", *RUN, "--data-path", ecoli_data, "--save-interval", "4",
              "--output-dir", run)  # fmt: skip
    return run


RUN = [*TINY_TRAIN_ARGS, "--max-steps", "8", "--eval-interval", "4"]


# -- full and read-only directories ------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path | None]:
    """A tmpfs of `size` mounted at `path` (root only), or None where mounting is not
    allowed; unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        yield None
        return
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[bool]:
    """Make `directory` unwritable: chmod 555, or for root (whom permissions do not stop)
    the immutable attribute. Yields False where neither is possible (root without a
    working chattr), so a test can leave that part out."""
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            yield True
        finally:
            directory.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)],
                                        capture_output=True).returncode != 0:  # fmt: skip
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def latest_tag(checkpoints: Path) -> str:
    return json.loads((checkpoints / "latest.json").read_text())["tag"]


def assert_train_error(result: Result, *needles: str) -> str:
    """`genos train` failed cleanly: exit 1 and one `error:` line on stderr (its progress
    went to stdout), no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr
