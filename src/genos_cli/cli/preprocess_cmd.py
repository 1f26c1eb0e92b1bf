"""`genos preprocess`: FASTA / text → Megatron `.bin/.idx` training data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genos_cli.cli._common import console, reports_errors
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from genos_cli.data.pipeline import PreprocessResult


@reports_errors
def preprocess(
    output_prefix: Annotated[
        Path,
        typer.Option(
            "--output-prefix",
            "-o",
            help="Writes PREFIX_train_text_document.{bin,idx}, PREFIX_val_text_document.{bin,idx} "
            "(PREFIX_text_document.* without a split) and PREFIX.json.",
        ),
    ],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="FASTA (multi-record, .gz/.bz2/.xz) or one-sequence-per-line text files, "
            "or directories of them (default: the E. coli genome shipped with genos).",
            show_default=False,
        ),
    ] = None,
    tokenizer_model: Annotated[
        Path | None,
        typer.Option(help="SentencePiece model to encode with (default: the one shipped)."),
    ] = None,
    nucleotide_tokenizer: Annotated[
        bool,
        typer.Option(
            "--nucleotide-tokenizer", help="Encode one token per base (DNANucleotideTokenizer)."
        ),
    ] = False,
    seq_length: Annotated[
        int | None, typer.Option(help="Sequence length in bp (default: 512).")
    ] = None,
    stride: Annotated[
        int | None, typer.Option(help="Distance between sequence starts in bp (default: length).")
    ] = None,
    min_length: Annotated[
        int | None,
        typer.Option(
            help="Keep run ends at least this long as shorter sequences (default: length)."
        ),
    ] = None,
    val_ratio: Annotated[
        float | None,
        typer.Option(
            help="Share of sequences for validation; 0 writes one data set (default: 0.02)."
        ),
    ] = None,
    split_seed: Annotated[int | None, typer.Option(help="Seed of the train/val split.")] = None,
    holdout: Annotated[
        list[Path] | None,
        typer.Option(help="A file whose sequences all go to validation (repeatable)."),
    ] = None,
    append_eod: Annotated[
        bool | None,
        typer.Option(
            "--append-eod/--no-append-eod",
            help="End each sequence with the end-of-document token (default: on).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="Encoding processes; 0 = one per CPU core for BPE, 1 for nucleotide."),
    ] = 0,
    write_text: Annotated[
        Path | None,
        typer.Option(help="Also write DIR/train.txt and DIR/val.txt, one sequence per line."),
    ] = None,
    hf_dataset: Annotated[
        str | None,
        typer.Option(
            help="Also read this Hugging Face dataset, streamed (a Hub id such as "
            "InstaDeepAI/multi_species_genomes, or a local path; needs the datasets package).",
            rich_help_panel="Hugging Face datasets",
        ),
    ] = None,
    hf_split: Annotated[
        str, typer.Option(help="Split to read.", rich_help_panel="Hugging Face datasets")
    ] = "train",
    hf_column: Annotated[
        str,
        typer.Option(help="Column holding the DNA.", rich_help_panel="Hugging Face datasets"),
    ] = "sequence",
    hf_config: Annotated[
        str | None,
        typer.Option(
            help="Dataset configuration (subset), if it has several.",
            rich_help_panel="Hugging Face datasets",
        ),
    ] = None,
    hf_revision: Annotated[
        str | None,
        typer.Option(
            help="Branch, tag or commit of a Hub dataset.", rich_help_panel="Hugging Face datasets"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Take data and tokenizer settings from this genos config file."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
) -> None:
    """Prepare genomes as Megatron-LM training data: cut into ACGT sequences, split
    train/val, tokenize, write `.bin/.idx` (readable by Megatron-LM)."""
    from genos_cli.config import DataConfig, TokenizerConfig, load_config
    from genos_cli.data.hf_source import HFDatasetSpec
    from genos_cli.data.pipeline import PreprocessSettings, make_plan, run
    from genos_cli.data.sources import default_genome_path
    from genos_cli.data.windows import WindowSpec

    hf = None
    if hf_dataset is not None:
        hf = HFDatasetSpec(hf_dataset, hf_split, hf_column, hf_config, hf_revision)
    if not inputs and hf is None:
        inputs = [default_genome_path()]
        console.print(f"no input given: using the embedded E. coli K-12 genome ({inputs[0]})")

    data, tok = DataConfig(), TokenizerConfig()
    if config is not None:
        cfg = load_config(path=config)
        data, tok = cfg.data, cfg.tokenizer
    if nucleotide_tokenizer and tokenizer_model is not None:
        raise GenosError("use either --tokenizer-model or --nucleotide-tokenizer, not both")
    kind = "nucleotide" if nucleotide_tokenizer else ("bpe" if tokenizer_model else tok.kind)
    model = tokenizer_model if tokenizer_model is not None else tok.model_path
    length = seq_length if seq_length is not None else data.sequence_length_bp
    window_stride = stride if stride is not None else (data.stride_bp or length)
    window_min = min_length if min_length is not None else (data.min_length_bp or length)
    for flag, value in (("--seq-length", length), ("--stride", window_stride)):
        if value < 1:
            raise GenosError(f"{flag} must be a positive number of bp, got {value}")
    if not 1 <= window_min <= length:
        raise GenosError(
            f"--min-length must be between 1 and the length ({length}), got {window_min}"
        )
    if workers < 0:
        raise GenosError(f"--workers must be 0 (auto) or more, got {workers}")
    if workers == 0:
        workers = 1 if kind == "nucleotide" else max(1, os.cpu_count() or 1)
    settings = PreprocessSettings(
        inputs=tuple(inputs or ()),
        output_prefix=output_prefix,
        tokenizer_kind=kind,
        tokenizer_model=model if kind == "bpe" else None,
        window=WindowSpec(length=length, stride=window_stride, min_length=window_min),
        val_ratio=val_ratio if val_ratio is not None else data.val_ratio,
        split_seed=split_seed if split_seed is not None else data.split_seed,
        holdout=tuple(holdout or ()),
        hf_dataset=hf,
        append_eod=append_eod if append_eod is not None else data.append_eod,
        workers=workers,
        write_text=write_text,
        overwrite=overwrite,
    )
    result = _run_with_progress(make_plan(settings), run)
    _render_summary(result, workers)


def _run_with_progress(plan, run):  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]preprocessing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[bp]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        # A streamed dataset has no known size: the bar then only shows bases and rate.
        total = None if plan.settings.hf_dataset else plan.input_bytes
        task = progress.add_task("preprocess", total=total, bp="", rate="")

        def update(done_bytes: int, bases: int) -> None:
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(
                task,
                completed=done_bytes,
                bp=f"{bases / 1e6:,.1f} Mbp",
                rate=f"{bases / elapsed / 1e6:,.1f} Mbp/s",
            )

        return run(plan, progress=update)


def _render_summary(result: PreprocessResult, workers: int) -> None:
    from rich.table import Table

    read, win = result.read, result.windows
    bases = max(read.bases, 1)

    def bp(n: int) -> str:
        return f"{n:,} bp ({100 * n / bases:.2f}%)"

    table = Table(title="genos preprocess", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("files / records", f"{read.files:,} / {read.records:,}")
    table.add_row("bases read", f"{read.bases:,} bp")
    table.add_row("dropped: N / ambiguous", bp(read.bases - win.acgt_bp))
    table.add_row("dropped: runs < min length", bp(win.short_bp))
    table.add_row("dropped: run ends / stride gaps", bp(win.uncovered_bp))
    table.add_row("kept in sequences", bp(win.covered_bp))
    for name, out in result.outputs.items():
        table.add_row(f"{name} sequences / tokens", f"{out.sequences:,} / {out.tokens:,}")
    table.add_row("bp / token", f"{result.bp_per_token:.3f} ({result.tokenizer['kind']})")
    table.add_row(
        "time",
        f"{result.seconds:.1f} s, {read.bases / max(result.seconds, 1e-9) / 1e6:,.1f} Mbp/s "
        f"({workers} worker{'s' if workers > 1 else ''})",
    )
    console.print(table)
    for name, out in result.outputs.items():
        console.print(f"[bold]{name}[/]: {out.prefix}.bin / .idx", soft_wrap=True)
    for path in result.text_files:
        console.print(f"[bold]text[/]: {path}", soft_wrap=True)
    console.print(f"[bold]manifest[/]: {result.manifest}", soft_wrap=True)
