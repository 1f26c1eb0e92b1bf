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

from genos_cli.cli._common import console, reports_errors
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer

app = typer.Typer(
    help="Train a DNA BPE tokenizer (SentencePiece) and inspect how DNA tokenizes.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer-model",
        "-t",
        help="SentencePiece .model file (default: the BPE tokenizer genos ships, vocab 128).",
        show_default=False,
    ),
]
NucleotideOption = Annotated[
    bool,
    typer.Option("--nucleotide", help="Use the one-token-per-base tokenizer instead of BPE."),
]
_PIECE_STYLES = ("bold cyan", "bold magenta", "bold green", "bold yellow")


def _load(model: Path | None, nucleotide: bool) -> DNATokenizer:
    from genos_cli.data.tokenizers import load_tokenizer

    if nucleotide and model is not None:
        raise GenosError("give either --tokenizer-model or --nucleotide, not both")
    return load_tokenizer("nucleotide" if nucleotide else "bpe", model)


def _describe(tok: DNATokenizer) -> str:
    path = getattr(tok, "path", None)
    where = f"{path}, " if path else ""
    return f"{tok.kind} tokenizer ({where}vocab {tok.vocab_size})"


@app.command()
@reports_errors
def train(
    inputs: Annotated[
        list[Path],
        typer.Option(
            "--input",
            "-i",
            help="FASTA (.gz/.bz2/.xz) or one-sequence-per-line file, or a directory of them "
            "(repeatable).",
            show_default=False,
        ),
    ],
    output_prefix: Annotated[
        Path,
        typer.Option(
            "--output-prefix",
            "-o",
            help="Writes PREFIX.model and PREFIX.vocab (the directory is created).",
        ),
    ] = Path("tokenizer/dna_tokenizer"),
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", help="Vocabulary size, special tokens included.")
    ] = 128,
    max_piece_length: Annotated[
        int, typer.Option("--max-piece-length", help="Longest piece, in bases.")
    ] = 16,
    sentence_bp: Annotated[
        int,
        typer.Option(
            "--sentence-bp", help="Training sentences are ACGT fragments of at most this many bp."
        ),
    ] = 1500,
    max_train_bp: Annotated[
        int,
        typer.Option(
            "--max-train-bp",
            help="Train on at most this many bp; larger inputs are sampled evenly.",
        ),
    ] = 100_000_000,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="SentencePiece threads (default: all CPUs).", min=1),
    ] = None,
) -> None:
    """Train a SentencePiece BPE tokenizer on DNA."""
    from genos_cli.data.tokenizers.training import train_sentencepiece, validate_train_settings

    validate_train_settings(
        vocab_size=vocab_size,
        max_piece_length=max_piece_length,
        sentence_bp=sentence_bp,
        max_train_bp=max_train_bp,
    )
    with console.status("reading input…") as status:
        result = train_sentencepiece(
            inputs,
            output_prefix,
            vocab_size=vocab_size,
            max_piece_length=max_piece_length,
            sentence_bp=sentence_bp,
            max_train_bp=max_train_bp,
            num_threads=threads,
            on_phase=lambda phase: status.update(f"{phase}…"),
        )
    table = Table(show_header=False, box=None, title="tokenizer trained", title_justify="left")
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
    console.print(table)


@app.command()
@reports_errors
def encode(
    sequence: Annotated[
        str | None,
        typer.Argument(help="DNA to encode (uppercased first).", show_default=False),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Encode the first fragments of this file instead.",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("--count", "-n", help="With --input: how many fragments.", min=1)
    ] = 3,
    length: Annotated[
        int, typer.Option("--length", help="With --input: fragment length in bp.", min=1)
    ] = 120,
    model: ModelOption = None,
    nucleotide: NucleotideOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the pieces and ids a sequence tokenizes into, and its bp per token."""
    if (sequence is None) == (input_file is None):
        raise GenosError("give a SEQUENCE argument or --input FILE (one of them)")
    tok = _load(model, nucleotide)
    if input_file is not None:
        from genos_cli.data.fasta import read_acgt_runs

        sequences = []
        for run in read_acgt_runs([input_file], max_run_bp=length):
            sequences.append(run.decode("ascii"))
            if len(sequences) == count:
                break
    else:
        sequences = ["".join(sequence.split()).upper()]  # type: ignore[union-attr]
        if not sequences[0]:
            raise GenosError("the SEQUENCE argument is empty")

    records: list[dict[str, Any]] = []
    for seq in sequences:
        ids = tok.encode(seq)
        records.append(
            {
                "sequence": seq,
                "bp": len(seq),
                "tokens": len(ids),
                "bp_per_token": round(len(seq) / len(ids), 4) if ids else 0.0,
                "ids": ids,
                "pieces": [tok.id_to_piece(i) for i in ids],
            }
        )
    if as_json:
        typer.echo(json.dumps(records if input_file is not None else records[0]))
        return
    console.print(f"[dim]{_describe(tok)}[/]")
    for record in records:
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


@app.command()
@reports_errors
def inspect(
    model: ModelOption = None,
    nucleotide: NucleotideOption = False,
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--input",
            "-i",
            help="Also measure bp/token on these files (repeatable).",
            show_default=False,
        ),
    ] = None,
    sample_bp: Annotated[
        int,
        typer.Option(
            "--sample-bp", help="With --input: bases measured per file (from its start).", min=1
        ),
    ] = 2_000_000,
    show_vocab: Annotated[
        bool, typer.Option("--vocab/--no-vocab", help="List the vocabulary.")
    ] = True,
) -> None:
    """Vocabulary size, special ids, the vocabulary and its piece lengths; bp/token on files."""
    tok = _load(model, nucleotide)
    console.print(f"[bold]{_describe(tok)}[/]")
    console.print(f"fingerprint {tok.fingerprint()}", highlight=False)

    specials = Table(title="special ids", title_justify="left", box=None)
    specials.add_column("id", justify="right")
    specials.add_column("piece")
    roles = {tok.pad_id: "pad", tok.unk_id: "unk", tok.bos_id: "bos", tok.eos_id: "eos / eod"}
    if tok.mask_id is not None:
        roles[tok.mask_id] = "mask"
    for i in range(tok.vocab_size):
        if tok.is_special(i) or i in roles:
            role = roles.get(i)
            specials.add_row(str(i), tok.id_to_piece(i) + (f"  [dim]{role}[/]" if role else ""))
    console.print(specials)

    pieces = [(i, tok.id_to_piece(i)) for i in range(tok.vocab_size) if not tok.is_special(i)]
    lengths = Counter(len(p) for _, p in pieces)
    dist = Table(title="piece lengths", title_justify="left", box=None)
    dist.add_column("bp", justify="right")
    dist.add_column("pieces", justify="right")
    dist.add_column("")
    top = max(lengths.values(), default=1)
    for n in sorted(lengths):
        dist.add_row(str(n), str(lengths[n]), "█" * max(1, round(30 * lengths[n] / top)))
    console.print(dist)

    if show_vocab:
        groups = 4
        vocab = Table(title="vocabulary", title_justify="left", box=None, padding=(0, 1))
        for _ in range(groups):
            vocab.add_column("id", justify="right", style="dim")
            vocab.add_column("piece")
            vocab.add_column("bp", justify="right", style="dim")
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
            vocab.add_row(*cells)
        console.print(vocab)

    if inputs:
        from genos_cli.data.tokenizers.training import measure_compression

        with console.status("tokenizing…"):
            results = measure_compression(tok, inputs, sample_bp=sample_bp)
        table = Table(title="compression", title_justify="left", box=None)
        table.add_column("file")
        table.add_column("bp", justify="right")
        table.add_column("tokens", justify="right")
        table.add_column("bp/token", justify="right", style="bold")
        for res in results:
            bp_per_token = f"{res.bp_per_token:.3f}"
            table.add_row(str(res.path), f"{res.bp:,}", f"{res.tokens:,}", bp_per_token)
        console.print(table)
