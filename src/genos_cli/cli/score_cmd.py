"""`genos score CHECKPOINT`: zero-shot log-likelihoods of sequences (`--fasta`) or variant
effect scores (`--vcf --reference`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genos_cli.cli._common import (
    CheckpointArg,
    DeviceOpt,
    OutputOpt,
    ProgressBar,
    StrideOpt,
    note,
    reports_errors,
    staged_output,
)
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from genos_cli.inference.score import ScoreOptions, VariantOptions

_FASTA = "Score every record: log-likelihood, bits per base, length (TSV)."
_VCF = "Score every ALT allele of this VCF/BCF (plain or bgzipped)."
_REFERENCE = "Reference FASTA of the VCF (plain or bgzip; .fai built if missing)."
_WINDOW = "Bases of reference scored around each variant (default: the model's context - 1)."
_ON_MISMATCH = (
    "A record that does not fit the reference (REF mismatch, unknown contig, past the contig "
    "end): error, or skip and count it."
)


@reports_errors
def score(
    checkpoint: CheckpointArg,
    fasta: Annotated[Path | None, typer.Option(help=_FASTA)] = None,
    vcf: Annotated[Path | None, typer.Option(help=_VCF)] = None,
    reference: Annotated[Path | None, typer.Option(help=_REFERENCE)] = None,
    window: Annotated[int | None, typer.Option(help=_WINDOW)] = None,
    both_strands: Annotated[
        bool, typer.Option("--both-strands", help="Average the score with the reverse strand's.")
    ] = False,
    on_mismatch: Annotated[str, typer.Option(help=_ON_MISMATCH)] = "error",
    tsv: Annotated[
        bool, typer.Option("--tsv", help="With --vcf: write TSV instead of the annotated VCF.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --fasta: one JSON object per line, not TSV.")
    ] = False,
    stride: StrideOpt = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 64,
    output: OutputOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Zero-shot scores: the log-likelihood and bits per base of every FASTA record
    (--fasta), or each variant's ln P(ALT window) - ln P(REF window) around the same
    reference flanks (--vcf --reference), added to the VCF as INFO/GENOS_LLR (or --tsv).
    Output appears in -o (or on stdout) only once complete."""
    from genos_cli.inference.score import ScoreOptions, VariantOptions

    if fasta is not None and vcf is None:
        if reference is not None or tsv or both_strands or window is not None:
            raise GenosError(
                "--reference, --window, --both-strands and --tsv go with --vcf, not --fasta"
            )
        opts = ScoreOptions(checkpoint, batch_size=batch_size, stride=stride, device=device)
        with ProgressBar() as bar:
            _score_fasta(opts, fasta, output, as_json, bar)
    elif vcf is not None and fasta is None:
        if reference is None:
            raise GenosError("--vcf needs --reference: the FASTA the variants were called on")
        if as_json or stride is not None:
            raise GenosError("--json and --stride go with --fasta; use --tsv with --vcf")
        variant_opts = VariantOptions(
            checkpoint, batch_size=batch_size, device=device, window=window,
            both_strands=both_strands, on_mismatch=on_mismatch, tsv=tsv,
            output_name=output.name if output else None,
        )  # fmt: skip
        with ProgressBar() as bar:
            _score_vcf(variant_opts, vcf, reference, output, bar)
    else:
        raise GenosError("give either --fasta FILE or --vcf FILE --reference FASTA")


def _number(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.6f}"


def _score_fasta(
    opts: ScoreOptions, fasta: Path, output: Path | None, as_json: bool, bar: ProgressBar
) -> None:
    from genos_cli.inference.score import score_sequences

    count = bases = 0
    with staged_output(output) as tmp, tmp.open("w", encoding="utf-8") as fh:
        if not as_json:
            fh.write("id\tlength\tscored_bases\ttokens\tlog_likelihood\tbits_per_base\n")
        for r in score_sequences(opts, fasta, progress=bar):
            if as_json:
                bpb = None if math.isnan(r.bits_per_base) else r.bits_per_base
                row = {"id": r.id, "length": r.length, "scored_bases": r.scored_bases,
                       "tokens": r.tokens, "log_likelihood": r.log_likelihood,
                       "bits_per_base": bpb}  # fmt: skip
                fh.write(json.dumps(row) + "\n")
            else:
                fh.write(f"{r.id}\t{r.length}\t{r.scored_bases}\t{r.tokens}\t"
                         f"{_number(r.log_likelihood)}\t{_number(r.bits_per_base)}\n")  # fmt: skip
            count += 1
            bases += r.scored_bases
    note(f"scored {count:,} sequences ({bases:,} bases)" + (f" → {output}" if output else ""))


def _score_vcf(
    opts: VariantOptions, vcf: Path, reference: Path, output: Path | None, bar: ProgressBar
) -> None:
    from genos_cli.inference.score import score_variants

    with staged_output(output) as tmp:
        r = score_variants(opts, vcf, reference, tmp, progress=bar)
    skipped = "; ".join(f"{n:,} {why}" for why, n in r.skipped.items())
    note(
        f"scored {r.scored_alleles:,} ALT alleles of {r.scored_records:,}/{r.records:,} records "
        f"({r.window} bp windows{', both strands' if r.both_strands else ''}) in "
        f"{r.seconds:.1f} s, {r.scored_alleles / r.seconds:,.1f} variants/s"
        + (f"; skipped: {skipped}" if skipped else "")
        + (f" → {output}" if output else "")
    )
