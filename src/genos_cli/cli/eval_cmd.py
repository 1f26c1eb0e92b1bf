"""`genos eval`: a checkpoint's bits per base against baselines, and downstream probes.

`genos eval CHECKPOINT --data ...` runs the language-model evaluation (the `lm` command,
also reachable by name); `genos eval probe CHECKPOINT ...` the linear probe.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from genos_cli.cli._common import (
    CheckpointArg,
    DeviceOpt,
    JsonOpt,
    ProgressBar,
    StrideOpt,
    console,
    reports_errors,
)


class _DefaultToLM(TyperGroup):
    """`genos eval CHECKPOINT ...` means `genos eval lm CHECKPOINT ...`."""

    # The ignores: typer >= 0.29 passes the Context of its own copy of click.
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["lm", *args]
        return super().parse_args(ctx, args)  # type: ignore[arg-type]


app = typer.Typer(
    cls=_DefaultToLM,
    help="Evaluate a checkpoint: bits per base against baselines (default), or a probe.",
    no_args_is_help=True,
)


@app.command("lm")
@reports_errors
def lm(
    checkpoint: CheckpointArg,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            help="Held-out data: FASTA/text files or directories, a `genos preprocess` prefix "
            "(its validation split) or a .bin/.idx prefix; repeatable (default: the "
            "validation split of the checkpoint's own training data).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    stride: StrideOpt = None,
    markov_order: Annotated[int, typer.Option(help="Order k of the Markov baseline.")] = 10,
    markov_data: Annotated[
        list[Path] | None,
        typer.Option(
            help="Data to fit the Markov baseline on (default: the checkpoint's training "
            "data); repeatable."
        ),
    ] = None,
    markov: Annotated[
        bool, typer.Option("--markov/--no-markov", help="Fit and show the Markov baseline.")
    ] = True,
    both_strands: Annotated[
        bool,
        typer.Option(
            "--both-strands",
            help="Also score each document's reverse complement (the other strand of the "
            "same DNA): bits per base over both strands, the Markov baseline too.",
        ),
    ] = False,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Loss, perplexity and bits per base on held-out DNA, next to uniform and Markov
    baselines on the same bases, plus expert usage per layer."""
    from genos_cli.eval.run import LMOptions, evaluate_lm

    opts = LMOptions(
        checkpoint=checkpoint,
        data=list(data) if data else None,
        batch_size=batch_size,
        stride=stride,
        markov_order=markov_order,
        markov_data=list(markov_data) if markov_data else None,
        markov=markov,
        device=device,
        both_strands=both_strands,
    )
    _run(evaluate_lm, opts, as_json, _render_lm)


def _run(
    func: Callable[..., dict[str, Any]],
    opts: object,
    as_json: bool,
    render: Callable[[dict[str, Any]], None],
) -> None:
    """Run an evaluation with a progress bar (none for --json), then print its result."""
    with ProgressBar() as bar:
        result = func(opts, progress=None if as_json else bar)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        render(result)


def _title(command: str, r: dict[str, Any]) -> None:
    step = f" (step {r['step']:,})" if r["step"] is not None else ""
    console.print(f"[bold]{command}[/] · {r['checkpoint']}{step}", highlight=False)


def _render_lm(r: dict[str, Any]) -> None:
    _title("genos eval", r)
    console.print(
        f"data: {', '.join(r['data'])} — {r['bases']:,} bases, {r['tokens']:,} tokens, "
        f"{r['windows']:,} windows of {r['context']} tokens (stride {r['stride']})"
        + (
            ", both strands (each document also as its reverse complement)"
            if "per_strand" in r
            else ""
        ),
        highlight=False,
    )
    table = Table(box=None, padding=(0, 2))
    table.add_column("model")
    table.add_column("bits/base", justify="right")
    table.add_column("loss/token", justify="right")
    table.add_column("perplexity", justify="right")
    table.add_row(
        "[bold]genos[/]",
        f"[bold]{r['bits_per_base']:.4f}[/]",
        f"{r['loss']:.4f}",
        f"{r['perplexity']:.3f}",
    )
    for b in r["baselines"]:
        table.add_row(b["name"], f"{b['bits_per_base']:.4f}", "", "")
    console.print(table)
    if "per_strand" in r:
        markov = next((b for b in r["baselines"] if "per_strand" in b), None)
        for name, strand in r["per_strand"].items():
            versus = f" (Markov {markov['per_strand'][name]:.4f})" if markov else ""
            console.print(
                f"{name.replace('_', ' ')}: {strand['bits_per_base']:.4f} bits/base{versus} "
                f"over {strand['bases']:,} bases",
                highlight=False,
            )
    console.print(
        f"throughput: {r['tokens_per_s']:,.0f} tokens/s ({r['bases_per_s']:,.0f} bases/s) "
        f"on {r['device']}, {r['seconds']:.1f} s",
        highlight=False,
    )
    usage = Table(title="expert usage (share of routed tokens)", title_justify="left", box=None)
    usage.add_column("layer", justify="right")
    for e in range(len(r["expert_usage"][0]["shares"])):
        usage.add_column(f"e{e}", justify="right")
    usage.add_column("entropy", justify="right")
    usage.add_column("max/mean", justify="right")
    for layer in r["expert_usage"]:
        usage.add_row(
            str(layer["layer"]),
            *(f"{s:.3f}" for s in layer["shares"]),
            f"{layer['entropy_bits']:.3f} bits",
            f"{layer['max_over_mean']:.2f}",
        )
    console.print(usage)
    for note in r["notes"]:
        console.print(f"[yellow]{note}[/]")


@app.command("probe")
@reports_errors
def probe(
    checkpoint: CheckpointArg,
    train: Annotated[
        list[Path] | None,
        typer.Option(help="Training FASTA, one per class (repeat, or list after the flag)."),
    ] = None,
    test: Annotated[
        list[Path] | None, typer.Option(help="Test FASTA, one per class, in the --train order.")
    ] = None,
    train_tsv: Annotated[
        Path | None, typer.Option(help="Training sequences as `sequence<TAB>label` lines.")
    ] = None,
    test_tsv: Annotated[Path | None, typer.Option(help="Test sequences, same format.")] = None,
    class_names: Annotated[
        str | None, typer.Option(help="Comma-separated class names for the FASTA files.")
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(help="Hidden states after this many blocks (default: the last, normed)."),
    ] = None,
    kmer: Annotated[int, typer.Option(help="k of the k-mer frequency baseline.")] = 6,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the cross-validation folds.")] = 0,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Linear probe: logistic regression on mean-pooled embeddings, against k-mer counts."""
    from genos_cli.eval.run import ProbeOptions
    from genos_cli.eval.run import probe as run_probe

    opts = ProbeOptions(
        checkpoint=checkpoint,
        train=list(train) if train else None,
        test=list(test) if test else None,
        train_tsv=train_tsv,
        test_tsv=test_tsv,
        class_names=[c.strip() for c in class_names.split(",")] if class_names else None,
        layer=layer,
        kmer=kmer,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    _run(run_probe, opts, as_json, _render_probe)


def _render_probe(r: dict[str, Any]) -> None:
    _title("genos eval probe", r)
    sizes = ", ".join(
        f"{c} {r['sequences']['train'][i]:,}/{r['sequences']['test'][i]:,}"
        for i, c in enumerate(r["classes"])
    )
    console.print(f"classes (train/test sequences): {sizes}", highlight=False)
    table = Table(box=None, padding=(0, 2))
    for col in ("features", "accuracy", "MCC", "macro-F1", "C"):
        table.add_column(col, justify="right")
    table.columns[0].justify = "left"
    table.columns[0].header = "features"
    for s in r["results"]:
        table.add_row(
            f"{s['name']} ({s['features']:,})",
            f"{s['accuracy']:.3f}",
            f"{s['mcc']:.3f}",
            f"{s['macro_f1']:.3f}",
            f"{s['c']:g}",
        )
    console.print(table)
    console.print(
        f"embedding: {r['embedding_seconds']:.1f} s ({r['embedding_tokens_per_s']:,.0f} tokens/s)",
        highlight=False,
    )
    if r["dropped_bases"]:
        console.print(f"[yellow]{r['dropped_bases']:,} non-ACGT bases were dropped[/]")
