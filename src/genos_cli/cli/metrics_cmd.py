"""`genos metrics watch | summary | plot | peak`: follow, compare and chart training runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from genos_cli.cli._common import console, err_console, reports_errors
from genos_cli.errors import GenosError

app = typer.Typer(
    help="Live GPU/CPU and training dashboard, run summaries, plots, and device peaks (MFU).",
    no_args_is_help=True,
)

PeakOption = Annotated[
    float | None,
    typer.Option(
        help="Peak TFLOP/s of one device: recompute MFU against it instead of showing the "
        "MFU the run logged (e.g. 989 for an H100 SXM in bf16)."
    ),
]
RunDirs = Annotated[
    list[Path], typer.Argument(help="Run directories (`genos train --output-dir`), or their logs.")
]


def _peak_flops(peak_tflops: float | None) -> float | None:
    if peak_tflops is None:
        return None
    if not peak_tflops > 0:
        raise GenosError(f"--peak-tflops must be positive, got {peak_tflops}")
    return peak_tflops * 1e12


@app.command()
@reports_errors
def watch(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="A run directory to follow; its log may not exist yet."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame and exit (scripts, tests).")
    ] = False,
    peak_tflops: PeakOption = None,
) -> None:
    """Live dashboard of the GPUs (or CPU) and, with RUN_DIR, of a training run.

    Per GPU: utilisation, memory used/total, temperature, power, SM clock (NVML); without an
    NVIDIA GPU: CPU utilisation, load, system and training-process memory. With RUN_DIR:
    step, loss and its sparkline, tokens/s, MFU, memory, expert balance, ETA, validation,
    read from its training_log.jsonl as it grows. Ctrl-C exits.
    """
    from genos_cli.metrics.watch import Watcher
    from genos_cli.metrics.watch import watch as run_watch
    from genos_cli.telemetry.system import open_gpu_sampler

    peak = _peak_flops(peak_tflops)
    if not interval > 0:
        raise GenosError(f"--interval must be positive, got {interval}")
    if run_dir is not None and not run_dir.exists():
        raise GenosError(f"{run_dir}: no such run directory")
    gpu, why_not = open_gpu_sampler()
    if gpu is None:
        # Said once, before the frames: the dashboard itself then shows CPU readings.
        console.print(f"no NVIDIA GPU ({why_not}): showing CPU and memory", highlight=False)
    run_watch(console, Watcher(run_dir, gpu, peak_flops=peak), interval=interval, once=once)


@app.command()
@reports_errors
def summary(
    run_dirs: RunDirs,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    peak_tflops: PeakOption = None,
) -> None:
    """Compare runs side by side (a table, or --json).

    Per run: steps, tokens, training time, final and best loss and validation bits per base,
    mean tokens/s and MFU (each invocation's first log window left out), peak memory.
    """
    from genos_cli.metrics.logs import load_runs
    from genos_cli.metrics.summary import summarize, summary_table

    peak = _peak_flops(peak_tflops)
    summaries = [
        summarize(run.path, run.history, peak_flops=peak, flops_per_token=run.flops_per_token)
        for run in load_runs(run_dirs, peak)
    ]
    if json_:
        typer.echo(json.dumps([s.to_json() for s in summaries], indent=2))
    else:
        console.print(summary_table(summaries))


@app.command()
@reports_errors
def plot(
    run_dirs: RunDirs,
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write (.png).")],
    peak_tflops: PeakOption = None,
) -> None:
    """Plot training curves of runs, overlaid, into one image.

    Loss, validation bits per base, tokens/s, MFU and expert load over steps. Needs
    matplotlib (the `plot` extra of genos).
    """
    from genos_cli.metrics.logs import load_runs
    from genos_cli.metrics.plot import _pyplot, plot_runs, series

    _pyplot()  # without matplotlib, say so before reading any log
    peak = _peak_flops(peak_tflops)
    runs = [
        (str(run.path), series(run.history, peak_flops=peak, flops_per_token=run.flops_per_token))
        for run in load_runs(run_dirs, peak)
    ]
    plot_runs(runs, out)
    console.print(f"wrote {out}", highlight=False)


@app.command()
@reports_errors
def peak(
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads to measure with (default: torch's, as training uses)."),
    ] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Measure again instead of using the cached figure.")
    ] = False,
) -> None:
    """Show the peak FLOP/s that MFU is measured against.

    This CPU's fp32 matmul rate (the best measured here, cached; training measures again
    at every start) and, for each NVIDIA GPU, its dense TFLOP/s entry in genos's table.
    """
    import torch

    from genos_cli.telemetry.peak import (
        cached_cpu_peak_flops,
        cpu_peak_cache_file,
        cpu_peak_flops,
        gpu_peak_entry,
    )
    from genos_cli.telemetry.system import open_gpu_sampler

    threads = threads or torch.get_num_threads()
    if threads < 1:
        raise GenosError(f"--threads must be at least 1, got {threads}")
    cached = not refresh and cached_cpu_peak_flops(threads) is not None
    if not cached:
        err_console.print(f"measuring fp32 matmul peak on {threads} thread(s)…", highlight=False)
    flops = cpu_peak_flops(threads, refresh=refresh)
    console.print(
        f"CPU fp32 matmul peak: {flops / 1e9:,.1f} GFLOP/s "
        f"({'cached' if cached else 'measured now'})\n"
        f"threads: {threads} of {os.cpu_count()} logical CPUs\n"
        f"cache: {cpu_peak_cache_file()}",
        highlight=False,
    )
    gpu, why_not = open_gpu_sampler()
    if gpu is None:
        console.print(f"GPU: none ({why_not})", highlight=False)
        return
    for sample in gpu.sample():
        entry = gpu_peak_entry(sample.name)
        figures = (
            "not in genos's table: pass --peak-tflops"
            if entry is None
            else ", ".join(f"{dtype} {tf:g}" for dtype, tf in entry[1].items())
            + f" TFLOP/s dense (table entry '{entry[0]}')"
        )
        console.print(f"GPU {sample.index}: {sample.name}: {figures}", highlight=False)
