"""`genos preprocess`: FASTA / text → Megatron `.bin/.idx` training data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genos_cli.cli._common import (
    NucleotideTokenizerOpt,
    TokenizerModelOpt,
    config_help,
    console,
    flag_name,
    flag_settings,
    reports_errors,
    tokenizer_settings,
    validated,
)
from genos_cli.config import DataConfig, TokenizerConfig
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from genos_cli.data.hf_source import HFDatasetSpec
    from genos_cli.data.pipeline import PreprocessPlan, PreprocessResult

# Options that each set one `data` setting: parameter name -> setting name.
_DATA_OPTIONS = {
    "seq_length": "sequence_length_bp",
    "stride": "stride_bp",
    "min_length": "min_length_bp",
    "val_ratio": "val_ratio",
    "split_seed": "split_seed",
    "append_eod": "append_eod",
    "reverse_complement": "reverse_complement",
}


def _data_option(setting: str, *, show_default: bool = True, metavar: str | None = None) -> Any:
    return typer.Option(
        help=config_help(f"data.{setting}", show_default=show_default), metavar=metavar
    )


OutputPrefixOpt = Annotated[
    Path,
    typer.Option(
        "--output-prefix",
        "-o",
        help="Writes PREFIX_train_text_document.{bin,idx}, PREFIX_val_text_document.{bin,idx} "
        "(PREFIX_text_document.* without a split) and PREFIX.json.",
    ),
]
InputsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="FASTA (multi-record, .gz/.bz2/.xz) or one-sequence-per-line text files, "
        "or directories of them (default: the E. coli genome shipped with genos).",
        show_default=False,
    ),
]
HoldoutOpt = Annotated[
    list[Path] | None,
    typer.Option(help="A file whose sequences all go to validation (repeatable)."),
]
AppendEodOpt = Annotated[
    bool | None,
    typer.Option(
        "--append-eod/--no-append-eod",
        help=config_help("data.append_eod", show_default=True),
        show_default=False,
    ),
]
ReverseComplementOpt = Annotated[
    bool | None,
    typer.Option(
        "--reverse-complement/--no-reverse-complement",
        help=config_help("data.reverse_complement", show_default=True),
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int,
    typer.Option(help="Encoding processes; 0 = one per CPU core for BPE, 1 for nucleotide."),
]
WriteTextOpt = Annotated[
    Path | None,
    typer.Option(help="Also write DIR/train.txt and DIR/val.txt, one sequence per line."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(help="Take data and tokenizer settings from this genos config file."),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]


def _hf_option(text: str) -> Any:
    return typer.Option(help=text, rich_help_panel="Hugging Face datasets")


HFDatasetOpt = Annotated[
    str | None,
    _hf_option(
        "Also read this Hugging Face dataset, streamed (a Hub id such as "
        "InstaDeepAI/multi_species_genomes, or a local path; needs the datasets package)."
    ),
]


@reports_errors
def preprocess(
    ctx: typer.Context,
    output_prefix: OutputPrefixOpt,
    inputs: InputsArg = None,
    tokenizer_model: TokenizerModelOpt = None,
    nucleotide_tokenizer: NucleotideTokenizerOpt = False,
    seq_length: Annotated[str | None, _data_option("sequence_length_bp", metavar="BP|auto")] = None,
    stride: Annotated[int | None, _data_option("stride_bp", show_default=False)] = None,
    min_length: Annotated[int | None, _data_option("min_length_bp", show_default=False)] = None,
    val_ratio: Annotated[float | None, _data_option("val_ratio")] = None,
    split_seed: Annotated[int | None, _data_option("split_seed")] = None,
    holdout: HoldoutOpt = None,
    append_eod: AppendEodOpt = None,
    reverse_complement: ReverseComplementOpt = None,
    workers: WorkersOpt = 0,
    write_text: WriteTextOpt = None,
    hf_dataset: HFDatasetOpt = None,
    hf_split: Annotated[str, _hf_option("Split to read.")] = "train",
    hf_column: Annotated[str, _hf_option("Column holding the DNA.")] = "sequence",
    hf_config: Annotated[
        str | None, _hf_option("Dataset configuration (subset), if it has several.")
    ] = None,
    hf_revision: Annotated[
        str | None, _hf_option("Branch, tag or commit of a Hub dataset.")
    ] = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Prepare genomes as Megatron-LM training data: cut into ACGT sequences, split
    train/val, tokenize, write `.bin/.idx` (readable by Megatron-LM)."""
    from genos_cli.data.hf_source import HFDatasetSpec
    from genos_cli.data.pipeline import PreprocessSettings, make_plan

    data, tokenizer, length_note = _settings(
        config,
        flag_settings(ctx.params, _DATA_OPTIONS),
        tokenizer_settings(tokenizer_model, nucleotide_tokenizer),
    )
    workers = _workers(workers, tokenizer.kind)
    hf = None
    if hf_dataset is not None:
        hf = HFDatasetSpec(hf_dataset, hf_split, hf_column, hf_config, hf_revision)
    settings = PreprocessSettings(
        inputs=_inputs(inputs, hf),
        output_prefix=output_prefix,
        tokenizer_kind=tokenizer.kind,
        tokenizer_model=tokenizer.model_path,
        window=data.window_spec(),
        val_ratio=data.val_ratio,
        split_seed=data.split_seed,
        holdout=tuple(holdout or ()),
        reverse_complement=data.reverse_complement,
        hf_dataset=hf,
        append_eod=data.append_eod,
        workers=workers,
        write_text=write_text,
        overwrite=overwrite,
    )
    result = _run_with_progress(make_plan(settings))
    _render_summary(result, workers, f"{data.sequence_length_bp:,} bp{length_note}")


def _settings(
    config: Path | None, data_flags: dict[str, Any], tokenizer_flags: dict[str, Any]
) -> tuple[DataConfig, TokenizerConfig, str]:
    """The data and tokenizer settings: the options given over `config`'s (or the defaults),
    checked by the schema; a wrong value is reported under its option's name. A fragment
    length of 'auto' is resolved here (for `config`'s context, else the default preset's);
    the third value says how, for the summary ('' for a length given in bp)."""
    from genos_cli.config import load_config

    cfg = load_config(path=config)  # no config file: the default preset
    data: dict[str, Any] = cfg.data.model_dump() if config is not None else {}
    tokenizer: dict[str, Any] = cfg.tokenizer.model_dump() if config is not None else {}
    flags = {setting: flag_name(param) for param, setting in _DATA_OPTIONS.items()}
    data_cfg = validated(DataConfig, {**data, **data_flags}, flags)
    tokenizer_cfg = validated(TokenizerConfig, {**tokenizer, **tokenizer_flags}, {})
    how = ""
    if data_cfg.sequence_length_bp == "auto":
        from genos_cli.data.context_fill import reference_bp_per_token
        from genos_cli.data.tokenizers import load_tokenizer

        context = cfg.model.max_seq_length
        bp_per_token = reference_bp_per_token(
            load_tokenizer(tokenizer_cfg.kind, tokenizer_cfg.model_path)
        )
        length = data_cfg.auto_length_bp(context, bp_per_token)
        how = (
            f" (auto: {data_cfg.contexts_per_document:g} x {context} tokens x "
            f"{bp_per_token:.3f} bp/token)"
        )
        data_cfg = validated(
            DataConfig, {**data_cfg.model_dump(), "sequence_length_bp": length}, flags
        )
    return data_cfg, tokenizer_cfg, how


def _workers(workers: int, tokenizer_kind: str) -> int:
    """--workers, with 0 (auto) resolved: nucleotide encoding is too cheap to parallelise."""
    if workers < 0:
        raise GenosError(f"--workers must be 0 (auto) or more, got {workers}")
    if workers == 0:
        return 1 if tokenizer_kind == "nucleotide" else max(1, os.cpu_count() or 1)
    return workers


def _inputs(inputs: list[Path] | None, hf: HFDatasetSpec | None) -> tuple[Path, ...]:
    """The files to read; the embedded E. coli genome when neither files nor a dataset are
    named."""
    from genos_cli.data.sources import default_genome_path

    if inputs or hf is not None:
        return tuple(inputs or ())
    genome = default_genome_path()
    console.print(f"no input given: using the embedded E. coli K-12 genome ({genome})")
    return (genome,)


def _run_with_progress(plan: PreprocessPlan) -> PreprocessResult:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from genos_cli.data.pipeline import run

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


def _render_summary(result: PreprocessResult, workers: int, length: str) -> None:
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
    table.add_row("sequence length", length)
    table.add_row("dropped: N / ambiguous", bp(read.bases - win.acgt_bp))
    table.add_row("dropped: runs < min length", bp(win.short_bp))
    table.add_row("dropped: run ends / stride gaps", bp(win.uncovered_bp))
    table.add_row("kept in sequences", bp(win.covered_bp))
    for name, out in result.outputs.items():
        table.add_row(f"{name} sequences / tokens", f"{out.sequences:,} / {out.tokens:,}")
    added = sum(out.sequences for out in result.outputs.values()) - win.sequences
    if added:
        table.add_row("reverse complements", f"{added:,} (one per training sequence)")
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
