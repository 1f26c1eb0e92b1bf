"""The `genos` Typer application. Subcommand modules import heavy libraries lazily so
that `genos --help` stays instant."""

from __future__ import annotations

from typing import Annotated

import typer

from genos_cli import __version__
from genos_cli.cli import (
    config_cmd,
    embed_cmd,
    env_cmd,
    eval_cmd,
    export_cmd,
    generate_cmd,
    metrics_cmd,
    preprocess_cmd,
    score_cmd,
    tokenize_cmd,
    train_cmd,
)

app = typer.Typer(
    name="genos",
    help="Build small Mixture-of-Experts DNA language models: genomes in, trained model out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(tokenize_cmd.app, name="tokenize")
app.add_typer(metrics_cmd.app, name="metrics")
app.command(name="preprocess")(preprocess_cmd.preprocess)
app.command(name="train", cls=train_cmd.TrainCommand, epilog=train_cmd.ENVIRONMENT_HELP)(
    train_cmd.train
)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(export_cmd.app, name="export")
app.command(name="generate")(generate_cmd.generate)
app.command(name="score")(score_cmd.score)
app.command(name="embed")(embed_cmd.embed)
app.command(name="env")(env_cmd.env)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"genos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """genos: genomes (FASTA) → tokenizer → Megatron data → MoE DNA language model."""


def main() -> None:
    """Console-script entry point."""
    app()
