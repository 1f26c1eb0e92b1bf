"""`genos config ...`: print the resolved run config and its parameter counts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from genos_cli.cli._common import console, reports_errors
from genos_cli.config import (
    DEFAULT_PRESET,
    ParamCounts,
    config_to_yaml,
    count_parameters,
    human_count,
    load_config,
    parse_overrides,
    preset_names,
)
from genos_cli.errors import GenosError

app = typer.Typer(
    help="Inspect run configurations (presets, YAML files, --set overrides).",
    no_args_is_help=True,
)


@app.callback()
def _config() -> None:
    """Inspect run configurations: presets, YAML files and --set overrides."""
    # An explicit callback keeps `show` a named subcommand even while it is the only one.


SizeOption = Annotated[
    str | None,
    typer.Option(
        "--size",
        "-s",
        help=f"Preset to start from: {', '.join(preset_names())} (default {DEFAULT_PRESET}).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file to start from instead of a preset.",
        show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY.PATH=VALUE",
        help="Override one setting, e.g. --set model.num_layers=6 (repeatable; value is YAML).",
        show_default=False,
    ),
]


def _summary(counts: ParamCounts) -> str:
    return (
        f"total {human_count(counts.total)}, active {human_count(counts.active)} per token "
        f"({human_count(counts.active_non_embedding)} non-embedding)"
    )


def _params_table(counts: ParamCounts) -> Table:
    table = Table(title="parameters", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(justify="right", style="dim")
    rows = [
        ("total", counts.total),
        ("active per token", counts.active),
        ("  non-embedding", counts.active_non_embedding),
        ("embedding + head", counts.embedding),
    ]
    for label, n in rows:
        table.add_row(label, human_count(n), f"{n:,}")
    return table


@app.command()
@reports_errors
def show(
    size: SizeOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Print the resolved config as YAML, then its total and active parameter counts.

    Piped output is plain YAML (counts as comments): save it, edit it, pass it to --config.
    """
    if size is not None and config is not None:
        raise GenosError("--size and --config are mutually exclusive; give one of them")
    cfg = load_config(size=size, path=config, overrides=parse_overrides(set_ or []))
    source = f"--config {config}" if config is not None else f"--size {size or DEFAULT_PRESET}"
    source += "".join(f" --set {item}" for item in set_ or [])
    text = config_to_yaml(cfg, header=f"genos config show {source}")
    counts = count_parameters(cfg.model)

    if console.is_terminal:
        console.print(Syntax(text.rstrip("\n"), "yaml", background_color="default"))
        console.print(_params_table(counts))
    else:
        # Keep stdout valid YAML when piped: the counts go in as comments.
        typer.echo(text, nl=False)
        typer.echo(f"\n# parameters: {_summary(counts)}")
        typer.echo(f"#   total {counts.total:,}; active {counts.active:,}")
