"""`genos tokenize ...`: train a DNA BPE tokenizer, and look at how sequences tokenize.

numpy and sentencepiece are imported inside the commands, so `genos --help` stays instant.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from genos_cli.cli._common import (
    JsonOpt,
    config_help,
    console,
    reports_errors,
    tokenizer_choice,
)
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer
    from genos_cli.data.tokenizers.training import Compression, TrainResult

app = typer.Typer(
    help="Train a DNA BPE tokenizer (SentencePiece) and inspect how DNA tokenizes.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer-model",
        "-t",
        help=config_help("tokenizer.model_path"),
        show_default=False,
    ),
]
NucleotideOption = Annotated[
    bool,
    typer.Option("--nucleotide", help="Use the one-token-per-base tokenizer instead of BPE."),
]
TrainInputsOpt = Annotated[
    list[Path],
    typer.Option(
        "--input",
        "-i",
        help="FASTA (.gz/.bz2/.xz) or one-sequence-per-line file, or a directory of them "
        "(repeatable).",
        show_default=False,
    ),
]
OutputPrefixOpt = Annotated[
    Path,
    typer.Option(
        "--output-prefix",
        "-o",
        help="Writes PREFIX.model and PREFIX.vocab (the directory is created).",
    ),
]
VocabSizeOpt = Annotated[
    int, typer.Option("--vocab-size", help="Vocabulary size, special tokens included.")
]
MaxPieceLengthOpt = Annotated[
    int, typer.Option("--max-piece-length", help="Longest piece, in bases.")
]
SentenceBpOpt = Annotated[
    int,
    typer.Option(
        "--sentence-bp", help="Training sentences are ACGT fragments of at most this many bp."
    ),
]
MaxTrainBpOpt = Annotated[
    int,
    typer.Option(
        "--max-train-bp", help="Train on at most this many bp; larger inputs are sampled evenly."
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="SentencePiece threads (default: all CPUs).", min=1),
]
SequenceArg = Annotated[
    str | None, typer.Argument(help="DNA to encode (uppercased first).", show_default=False)
]
EncodeInputOpt = Annotated[
    Path | None,
    typer.Option(
        "--input", "-i", help="Encode the first fragments of this file instead.", show_default=False
    ),
]
CountOpt = Annotated[
    int, typer.Option("--count", "-n", help="With --input: how many fragments.", min=1)
]
LengthOpt = Annotated[
    int, typer.Option("--length", help="With --input: fragment length in bp.", min=1)
]
MeasureInputsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--input",
        "-i",
        help="Also measure bp/token on these files (repeatable).",
        show_default=False,
    ),
]
SampleBpOpt = Annotated[
    int,
    typer.Option(
        "--sample-bp", help="With --input: bases measured per file (from its start).", min=1
    ),
]
ShowVocabOpt = Annotated[bool, typer.Option("--vocab/--no-vocab", help="List the vocabulary.")]

_PIECE_STYLES = ("bold cyan", "bold magenta", "bold green", "bold yellow")


def _load(model: Path | None, nucleotide: bool) -> DNATokenizer:
    from genos_cli.data.tokenizers import load_tokenizer

    kind = tokenizer_choice(model, nucleotide, nucleotide_flag="--nucleotide")
    return load_tokenizer(kind or "bpe", model)


def _describe(tok: DNATokenizer) -> str:
    path = getattr(tok, "path", None)
    where = f"{path}, " if path else ""
    return f"{tok.kind} tokenizer ({where}vocab {tok.vocab_size})"


def _table(title: str | None = None, **kwargs: Any) -> Table:
    return Table(title=title, title_justify="left", box=None, **kwargs)


# -- genos tokenize train ---------------------------------------------------------------------


@app.command()
@reports_errors
def train(
    inputs: TrainInputsOpt,
    output_prefix: OutputPrefixOpt = Path("tokenizer/dna_tokenizer"),
    vocab_size: VocabSizeOpt = 128,
    max_piece_length: MaxPieceLengthOpt = 16,
    sentence_bp: SentenceBpOpt = 1500,
    max_train_bp: MaxTrainBpOpt = 100_000_000,
    threads: ThreadsOpt = None,
) -> None:
    """Train a SentencePiece BPE tokenizer on DNA."""
    from genos_cli.data.tokenizers.training import train_sentencepiece, validate_train_settings

    settings = {
        "vocab_size": vocab_size,
        "max_piece_length": max_piece_length,
        "sentence_bp": sentence_bp,
        "max_train_bp": max_train_bp,
    }
    validate_train_settings(**settings)
    with console.status("reading input…") as status:
        result = train_sentencepiece(
            inputs,
            output_prefix,
            **settings,
            num_threads=threads,
            on_phase=lambda phase: status.update(f"{phase}…"),
        )
    console.print(_trained_table(result))


def _trained_table(result: TrainResult) -> Table:
    table = _table("tokenizer trained", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    sampled = "" if result.bp_used == result.bp_available else " (evenly spread sample)"
    table.add_row("model", str(result.model_path))
    table.add_row("vocab", str(result.vocab_path))
    table.add_row("vocab size", str(result.vocab_size))
    table.add_row(
        "bp used",
        f"{result.bp_used:,} of {result.bp_available:,}{sampled} in {result.sentences:,} sentences",
    )
    table.add_row("training time", f"{result.seconds:.1f} s")
    table.add_row("bp / token", f"{result.bp_per_token:.3f} (sample of the training sentences)")
    return table


# -- genos tokenize encode / decode -----------------------------------------------------------


@app.command()
@reports_errors
def encode(
    sequence: SequenceArg = None,
    input_file: EncodeInputOpt = None,
    count: CountOpt = 3,
    length: LengthOpt = 120,
    model: ModelOption = None,
    nucleotide: NucleotideOption = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the pieces and ids a sequence tokenizes into, and its bp per token."""
    if (sequence is None) == (input_file is None):
        raise GenosError("give a SEQUENCE argument or --input FILE (one of them)")
    tok = _load(model, nucleotide)
    if input_file is not None:
        sequences = _file_fragments(input_file, count, length)
    else:
        sequences = ["".join(sequence.split()).upper()]  # type: ignore[union-attr]
        if not sequences[0]:
            raise GenosError("the SEQUENCE argument is empty")
    records = [_encoded(tok, seq) for seq in sequences]
    if as_json:
        typer.echo(json.dumps(records if input_file is not None else records[0]))
        return
    console.print(f"[dim]{_describe(tok)}[/]")
    for record in records:
        _print_encoded(record)


def _file_fragments(path: Path, count: int, length: int) -> list[str]:
    """The first `count` ACGT fragments of at most `length` bp in `path`."""
    from genos_cli.data.fasta import read_acgt_runs

    sequences = []
    for run in read_acgt_runs([path], max_run_bp=length):
        sequences.append(run.decode("ascii"))
        if len(sequences) == count:
            break
    return sequences


def _encoded(tok: DNATokenizer, seq: str) -> dict[str, Any]:
    """The JSON record of one encoded sequence."""
    ids = tok.encode(seq)
    return {
        "sequence": seq,
        "bp": len(seq),
        "tokens": len(ids),
        "bp_per_token": round(len(seq) / len(ids), 4) if ids else 0.0,
        "ids": ids,
        "pieces": [tok.id_to_piece(i) for i in ids],
    }


def _print_encoded(record: dict[str, Any]) -> None:
    console.print(
        f"[bold]{record['bp']} bp → {record['tokens']} tokens[/] "
        f"({record['bp_per_token']:.2f} bp/token)"
    )
    if console.is_terminal:  # pieces back to back, told apart by colour
        pieces = Text()
        for k, piece in enumerate(record["pieces"]):
            pieces.append(piece, style=_PIECE_STYLES[k % len(_PIECE_STYLES)])
        console.print(pieces)
    else:  # no colour: separate them
        console.print(" ".join(record["pieces"]), highlight=False)
    console.print("ids: " + " ".join(map(str, record["ids"])), highlight=False)


@app.command()
@reports_errors
def decode(
    ids: Annotated[list[int], typer.Argument(help="Token ids to decode.", show_default=False)],
    model: ModelOption = None,
    nucleotide: NucleotideOption = False,
) -> None:
    """Turn token ids back into DNA (special ids such as <eos> decode to nothing)."""
    tok = _load(model, nucleotide)
    typer.echo(tok.decode(ids))


# -- genos tokenize inspect -------------------------------------------------------------------


@app.command()
@reports_errors
def inspect(
    model: ModelOption = None,
    nucleotide: NucleotideOption = False,
    inputs: MeasureInputsOpt = None,
    sample_bp: SampleBpOpt = 2_000_000,
    show_vocab: ShowVocabOpt = True,
) -> None:
    """Vocabulary size, special ids, the vocabulary and its piece lengths; bp/token on files."""
    tok = _load(model, nucleotide)
    console.print(f"[bold]{_describe(tok)}[/]")
    console.print(f"fingerprint {tok.fingerprint()}", highlight=False)
    console.print(_specials_table(tok))
    pieces = [(i, tok.id_to_piece(i)) for i in range(tok.vocab_size) if not tok.is_special(i)]
    console.print(_piece_lengths_table(pieces))
    if show_vocab:
        console.print(_vocab_table(pieces))
    if inputs:
        from genos_cli.data.tokenizers.training import measure_compression

        with console.status("tokenizing…"):
            results = measure_compression(tok, inputs, sample_bp=sample_bp)
        console.print(_compression_table(results))


def _specials_table(tok: DNATokenizer) -> Table:
    table = _table("special ids")
    table.add_column("id", justify="right")
    table.add_column("piece")
    roles = {tok.pad_id: "pad", tok.unk_id: "unk", tok.bos_id: "bos", tok.eos_id: "eos / eod"}
    if tok.mask_id is not None:
        roles[tok.mask_id] = "mask"
    for i in range(tok.vocab_size):
        if tok.is_special(i) or i in roles:
            role = roles.get(i)
            table.add_row(str(i), tok.id_to_piece(i) + (f"  [dim]{role}[/]" if role else ""))
    return table


def _piece_lengths_table(pieces: list[tuple[int, str]]) -> Table:
    lengths = Counter(len(p) for _, p in pieces)
    table = _table("piece lengths")
    table.add_column("bp", justify="right")
    table.add_column("pieces", justify="right")
    table.add_column("")
    top = max(lengths.values(), default=1)
    for n in sorted(lengths):
        table.add_row(str(n), str(lengths[n]), "█" * max(1, round(30 * lengths[n] / top)))
    return table


def _vocab_table(pieces: list[tuple[int, str]], groups: int = 4) -> Table:
    """The pieces in `groups` side-by-side columns of (id, piece, length), top to bottom."""
    table = _table("vocabulary", padding=(0, 1))
    for _ in range(groups):
        table.add_column("id", justify="right", style="dim")
        table.add_column("piece")
        table.add_column("bp", justify="right", style="dim")
    rows = (len(pieces) + groups - 1) // groups
    for r in range(rows):
        cells: list[str] = []
        for g in range(groups):
            k = g * rows + r
            if k < len(pieces):
                i, piece = pieces[k]
                cells += [str(i), piece, str(len(piece))]
            else:
                cells += ["", "", ""]
        table.add_row(*cells)
    return table


def _compression_table(results: list[Compression]) -> Table:
    table = _table("compression")
    table.add_column("file")
    table.add_column("bp", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("bp/token", justify="right", style="bold")
    for res in results:
        table.add_row(str(res.path), f"{res.bp:,}", f"{res.tokens:,}", f"{res.bp_per_token:.3f}")
    return table
