"""Helpers every subcommand shares: consoles and turning user errors into exit codes."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from genos_cli.errors import GenosError

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

_ENVIRONMENT_ERRORS = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
}  # fmt: skip


def fail(message: str) -> typer.Exit:
    """Print one red error sentence to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so `GenosError` prints one sentence and exits 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except GenosError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            if exc.errno not in _ENVIRONMENT_ERRORS:
                raise
            # A full disk, a read-only or missing path the library did not foresee: still one
            # sentence, not a traceback.
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{os.strerror(exc.errno).lower()}") from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper
