"""`genos generate CHECKPOINT`: sample DNA from a trained model, as FASTA."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genos_cli.cli._common import (
    CheckpointArg,
    DeviceOpt,
    OutputOpt,
    ProgressBar,
    note,
    reports_errors,
    staged_output,
)

_TEMPERATURE = "Softmax temperature; 0 = greedy (the most likely token)."
_TOP_P = "Sample among the most likely tokens holding this much probability."
_SEED = "Seed of the sampler (default: random, written to every header)."
_INCLUDE_PROMPT = "Write the prompt before the generated bases."


@reports_errors
def generate(
    checkpoint: CheckpointArg,
    prompt: Annotated[
        str | None,
        typer.Option(help="Bases to continue (A/C/G/T); default: start a new document."),
    ] = None,
    fasta: Annotated[
        Path | None, typer.Option(help="FASTA file of prompts: every record is continued.")
    ] = None,
    num_bases: Annotated[int, typer.Option(help="Bases to generate per sample.")] = 1000,
    num_samples: Annotated[int, typer.Option(help="Samples per prompt.")] = 1,
    temperature: Annotated[float, typer.Option(help=_TEMPERATURE)] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens; 0 = all.")] = 0,
    top_p: Annotated[float, typer.Option(help=_TOP_P)] = 1.0,
    seed: Annotated[int | None, typer.Option(help=_SEED, show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Samples of a prompt decoded together.")] = 16,
    include_prompt: Annotated[bool, typer.Option("--include-prompt", help=_INCLUDE_PROMPT)] = False,
    output: OutputOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Generate DNA with a KV-cached decoder: continue prompts, or start new documents.
    Each prompt is read after the end-of-document id, as in training; only tokens that spell
    A/C/G/T are ever chosen, and every sample is exactly --num-bases bases. Same seed and
    options, same output."""
    from genos_cli.inference.generate import GenerateOptions, generate_fasta
    from genos_cli.inference.sampling import Sampling

    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    opts = GenerateOptions(checkpoint, prompt, fasta, num_bases, num_samples, sampling, seed,
                           batch_size, include_prompt, device)  # fmt: skip
    with staged_output(output) as tmp, ProgressBar() as bar:
        r = generate_fasta(opts, tmp, progress=bar)
    note(
        f"generated {r.samples:,} x {opts.num_bases:,} bases from {r.checkpoint} on {r.device}: "
        f"{r.tokens:,} tokens in {r.seconds:.1f} s ({r.tokens / r.seconds:,.0f} tokens/s), "
        f"seed {r.seed}" + (f" → {output}" if output else "")
    )
