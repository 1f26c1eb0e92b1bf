"""`genos export ...`: genos checkpoints to and from Hugging Face model directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genos_cli.cli._common import CheckpointArg, console, reports_errors, tokenizer_choice

app = typer.Typer(
    help="Export a trained model to Hugging Face transformers, or import one back.",
    no_args_is_help=True,
)

OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT_DIR if it exists and is not empty.")
]


def _say(text: str) -> None:
    """One line of plain text (paths and numbers uncoloured), wrapped by the terminal."""
    console.print(text, highlight=False, soft_wrap=True)


@app.callback()
def _export() -> None:
    """Export a trained model to Hugging Face transformers (Mixtral), or import one back."""


@app.command("hf")
@reports_errors
def hf(
    checkpoint: CheckpointArg,
    out_dir: Annotated[
        Path, typer.Argument(help="Directory to write the model to.", show_default=False)
    ],
    overwrite: OverwriteOption = False,
) -> None:
    """Write a checkpoint as a Hugging Face Mixtral directory, tokenizer included."""
    from genos_cli.interop.hf_export import export_hf

    result = export_hf(checkpoint, out_dir, overwrite=overwrite)
    step = f" (step {result.step:,})" if result.step is not None else ""
    _say(
        f"exported {result.source}{step}: Mixtral, {result.parameters:,} parameters, "
        f"{result.tokenizer_kind} tokenizer"
    )
    console.print(f"[bold]wrote[/] {out_dir}: {', '.join(result.files)}", soft_wrap=True)
    _say(
        f'load it with AutoModelForCausalLM.from_pretrained("{out_dir}") and '
        f'AutoTokenizer.from_pretrained("{out_dir}")'
    )


@app.command("import-hf")
@reports_errors
def import_hf(
    hf_dir: Annotated[
        Path,
        typer.Argument(
            help="A Hugging Face Mixtral directory (e.g. from `genos export hf`).",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Argument(help="Checkpoint directory to write (genos format).", show_default=False),
    ],
    tokenizer_model: Annotated[
        Path | None,
        typer.Option(help="SentencePiece model of a directory genos did not export."),
    ] = None,
    nucleotide_tokenizer: Annotated[
        bool,
        typer.Option(
            "--nucleotide-tokenizer", help="The model uses genos's one-token-per-base tokenizer."
        ),
    ] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Write a Hugging Face Mixtral directory as a genos checkpoint directory."""
    from genos_cli.interop.hf_export import import_hf as run_import

    result = run_import(
        hf_dir,
        out_dir,
        overwrite=overwrite,
        tokenizer_kind=tokenizer_choice(tokenizer_model, nucleotide_tokenizer),
        tokenizer_model=tokenizer_model,
    )
    origin = "exported by genos: its config restored" if result.from_genos else "Mixtral"
    _say(
        f"imported {result.source} ({origin}): {result.parameters:,} parameters, "
        f"{result.tokenizer_kind} tokenizer"
    )
    console.print(f"[bold]wrote[/] checkpoint {out_dir}", soft_wrap=True)
