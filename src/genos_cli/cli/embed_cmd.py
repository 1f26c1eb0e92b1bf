"""`genos embed CHECKPOINT`: per-sequence (and per-token) hidden states, for downstream
models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genos_cli.cli._common import (
    CheckpointArg,
    DeviceOpt,
    ProgressBar,
    err_console,
    note,
    reports_errors,
    staged_outputs,
)

_OUTPUT = "OUT.npy (NumPy (N, D) float32, ids in OUT.ids.txt) or OUT.parquet."
_TSV = (
    "Tab-separated file: a header naming a `sequence` column (and `id`), or sequences in the "
    "first column."
)
_LAYER = (
    "Hidden states after this many blocks (0 = token embeddings; default: the last, after the "
    "final norm)."
)


@reports_errors
def embed(
    checkpoint: CheckpointArg,
    output: Annotated[Path, typer.Option("--output", "-o", help=_OUTPUT, show_default=False)],
    fasta: Annotated[
        Path | None, typer.Option(help="FASTA file: one embedding per record.")
    ] = None,
    tsv: Annotated[Path | None, typer.Option(help=_TSV)] = None,
    layer: Annotated[int | None, typer.Option(help=_LAYER)] = None,
    per_token: Annotated[
        bool,
        typer.Option("--per-token", help="Also write every token's hidden state (and its id)."),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Pieces of sequence per forward pass.")] = 32,
    device: DeviceOpt = None,
) -> None:
    """Embeddings for downstream models: the mean over each sequence's tokens of a layer's
    hidden states (and every token's, with --per-token). Sequences are read as in training,
    after the end-of-document id; N splits them into runs and long ones are read in
    context-sized pieces, pooled together. `genos eval probe` embeds with the same code."""
    from genos_cli.inference.embed import EmbedOptions, embed_sequences, output_files

    opts = EmbedOptions(checkpoint=checkpoint, fasta=fasta, tsv=tsv, layer=layer,
                        per_token=per_token, batch_size=batch_size, device=device)  # fmt: skip
    files = output_files(output, per_token)
    with staged_outputs(files) as staged, ProgressBar() as bar:
        r = embed_sequences(opts, staged, progress=bar)
    note(
        f"embedded {r.sequences:,} sequences ({r.tokens:,} tokens) with {r.checkpoint}, "
        f"layer {r.layer}, {r.dim} dimensions, in {r.seconds:.1f} s → "
        + ", ".join(str(p) for p in files.values())
    )
    if r.without_bases:
        err_console.print(
            f"[yellow]{r.without_bases:,} sequences have no A/C/G/T bases: their rows are NaN[/]"
        )
