"""Helpers every subcommand shares: consoles, options, flags that set config settings, and
turning user errors into exit codes."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from genos_cli.atomic import publish, temp_beside
from genos_cli.config import setting_field, validation_problems
from genos_cli.data.vocab import NUCLEOTIDE_VOCAB_SIZE
from genos_cli.errors import GenosError

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

_ENVIRONMENT_ERRORS = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
}  # fmt: skip


def fail(message: str) -> typer.Exit:
    """Print one red error sentence to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def note(text: str) -> None:
    """One line of plain text on stderr (paths and numbers uncoloured), wrapped by the
    terminal: what a command whose output goes to stdout or a file says about it."""
    err_console.print(text, highlight=False, soft_wrap=True)


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


# -- flags that set config settings: the schema is their single source ---------------------


def config_help(path: str, *, show_default: bool = False) -> str:
    """The --help text of the flag that sets the config setting `path` (e.g. "training.lr"):
    the setting's description in the schema, so the two cannot drift apart."""
    field = setting_field(path)
    text = field.description or ""
    if not show_default:
        return text
    default = field.get_default(call_default_factory=True)
    shown = str(default).lower() if isinstance(default, bool) else str(default)
    text = text.rstrip(".")
    if text.endswith(")"):  # "... (reproducible)" -> "... (reproducible; default: 1234)."
        return f"{text[:-1]}; default: {shown})."
    return f"{text} (default: {shown})."


def flag_name(param: str) -> str:
    """The option Typer makes of parameter `param`: seq_length -> --seq-length."""
    return "--" + param.replace("_", "-")


def flag_settings(params: Mapping[str, Any], options: Mapping[str, str]) -> dict[str, Any]:
    """The settings set by the options given: `options` maps parameter names to setting
    names, `params` holds the parameters' values (a command's `ctx.params`); None = not given."""
    return {setting: params[name] for name, setting in options.items() if params[name] is not None}


def validated(model: type[M], values: Mapping[str, Any], flags: Mapping[str, str]) -> M:
    """`model` validated from `values`; a GenosError otherwise, in one sentence that names
    each setting by the flag that sets it (`flags`: setting name -> flag)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = validation_problems(exc, flags)
        raise GenosError("; ".join(f"{where} {what}".strip() for where, what in problems)) from None


def tokenizer_choice(
    model: Path | None, nucleotide: bool, *, nucleotide_flag: str = "--nucleotide-tokenizer"
) -> str | None:
    """The tokenizer kind --tokenizer-model / --nucleotide-tokenizer choose: "bpe",
    "nucleotide", or None when neither is given."""
    if nucleotide and model is not None:
        raise GenosError(f"use either --tokenizer-model or {nucleotide_flag}, not both")
    if nucleotide:
        return "nucleotide"
    return "bpe" if model is not None else None


def tokenizer_settings(model: Path | None, nucleotide: bool) -> dict[str, Any]:
    """The `tokenizer` settings that --tokenizer-model / --nucleotide-tokenizer choose ({} for
    neither: the config's own)."""
    kind = tokenizer_choice(model, nucleotide)
    if kind == "nucleotide":
        return {"kind": kind, "model_path": None, "vocab_size": NUCLEOTIDE_VOCAB_SIZE}
    if kind == "bpe":
        return {"kind": kind, "model_path": model}
    return {}


# -- options several commands share ---------------------------------------------------------

CheckpointArg = Annotated[
    Path,
    typer.Argument(
        help="A checkpoint (step_XXXXXXXX), a run's checkpoints directory or its output "
        "directory (the latest checkpoint is used).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="cpu, cuda or cuda:N (default: a GPU when present).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
TokenizerModelOpt = Annotated[
    Path | None, typer.Option(help=config_help("tokenizer.model_path"), show_default=False)
]
NucleotideTokenizerOpt = Annotated[
    bool,
    typer.Option(
        "--nucleotide-tokenizer", help="Use the one-token-per-base tokenizer instead of BPE."
    ),
]
StrideOpt = Annotated[
    int | None,
    typer.Option(
        help="Tokens between window starts (default: the context, no overlap); smaller "
        "gives every token more context for context/stride times the compute."
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="File to write (default: standard output).", show_default=False
    ),
]


# -- progress and output -----------------------------------------------------------------------


class ProgressBar:
    """A Rich progress bar on stderr (stdout stays clean for --json and piped output), called
    as `bar(what, done, total)`."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.tasks:  # started by the first report: errors before it print alone
            self.progress.start()
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=total)
        self.progress.update(self.tasks[what], completed=done, total=total)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.stop()


@contextlib.contextmanager
def staged_output(path: Path | None) -> Iterator[Path]:
    """A path to write a command's output to, so that a failed command leaves none of it.

    With `path`: a temporary file beside it, renamed onto it when the block succeeds. With
    None (standard output): a temporary file copied to stdout when the block succeeds. Either
    way the temporary file is removed when the block fails, and the output streams to disk
    as it is produced (bounded memory).
    """
    if path is not None and path.is_dir():
        raise GenosError(f"-o {path} is a directory; give a file name to write to")
    if path is not None:
        with temp_beside(path) as fh:
            tmp = Path(fh.name)
    else:
        with tempfile.NamedTemporaryFile(prefix="genos-out-", delete=False) as fh:
            tmp = Path(fh.name)
    try:
        yield tmp
        if path is not None:
            publish(tmp, path)
        else:
            sys.stdout.flush()
            with tmp.open("rb") as fh:
                shutil.copyfileobj(fh, sys.stdout.buffer)
            sys.stdout.flush()
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_outputs(paths: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """`staged_output` for several files written together: each is renamed into place only
    when the whole block succeeds."""
    with contextlib.ExitStack() as stack:
        yield {key: stack.enter_context(staged_output(path)) for key, path in paths.items()}
