"""What `genos metrics watch` shows, as pure functions: readings + records → Rich renderables.

Nothing here samples a device or reads a file, so every frame can be rendered (and tested)
from recorded GPU readings and log records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from genos_cli.metrics.logs import RunHistory
from genos_cli.telemetry.format import duration, expert_balance, format_balance, percent
from genos_cli.telemetry.peak import record_mfu
from genos_cli.telemetry.records import TrainRecord
from genos_cli.telemetry.system import CpuSample, GpuSample

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40


# -- small formatters -------------------------------------------------------------------------


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """The last `width` values as unicode blocks, lowest ▁ to highest █ (min-max scaled)."""
    finite = [v for v in values[-width:] if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    if hi == lo:
        return SPARK_BLOCKS[len(SPARK_BLOCKS) // 2] * len(finite)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - lo) / (hi - lo) * top)] for v in finite)


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


# -- system -----------------------------------------------------------------------------------


def gpu_table(samples: Sequence[GpuSample]) -> Table:
    """One row per GPU: utilisation, memory used/total, temperature, power, SM clock."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("GPU", justify="right", no_wrap=True)
    table.add_column("name")  # the one column that wraps when the terminal is narrow
    table.add_column("util", justify="right", no_wrap=True)
    table.add_column("memory MiB", justify="right", no_wrap=True)
    table.add_column("temp", justify="right", no_wrap=True)
    table.add_column("power W", justify="right", no_wrap=True)
    table.add_column("SM MHz", justify="right", no_wrap=True)
    for s in samples:
        table.add_row(
            str(s.index),
            s.name,
            _num(s.util_percent, ".0f", "%"),
            f"{_num(s.mem_used_mb, ',.0f')} / {_num(s.mem_total_mb, ',.0f')}",
            _num(s.temperature_c, ".0f", "°C"),
            f"{_num(s.power_w, '.0f')} / {_num(s.power_limit_w, '.0f')}",
            _num(s.sm_clock_mhz, ",.0f"),
        )
    return table


def cpu_table(sample: CpuSample) -> Table:
    """CPU utilisation and load, system memory, and the training process when known."""
    table = _grid()
    cores = " ".join(f"{p:.0f}" for p in sample.per_cpu_percent)
    table.add_row("CPU", f"{sample.cpu_percent:.0f}% of {sample.cores} cores   (per core: {cores})")
    table.add_row("load", " ".join(f"{x:.2f}" for x in sample.load_avg) + "   (1, 5, 15 min)")
    table.add_row(
        "memory",
        f"{sample.mem_used_mb:,.0f} / {sample.mem_total_mb:,.0f} MiB used   "
        f"({sample.mem_available_mb:,.0f} MiB available)",
    )
    if sample.process is not None:
        p = sample.process
        table.add_row(
            "process",
            f"{p.name} (pid {p.pid}): {p.rss_mb:,.0f} MiB resident, CPU {p.cpu_percent:.0f}%, "
            f"{p.threads} threads",
        )
    return table


def system_panel(gpus: Sequence[GpuSample] | None, cpu: CpuSample | None) -> RenderableType:
    if gpus:
        return gpu_table(gpus)
    if cpu is not None:
        return cpu_table(cpu)
    return Text("no system readings")


# -- the run ----------------------------------------------------------------------------------


@dataclass
class RunView:
    """What the dashboard knows of the run it follows."""

    run_dir: Path
    log: Path
    log_exists: bool
    history: RunHistory
    peak_flops: float | None = None  # per-device override (--peak-tflops); None: the log's
    flops_per_token: float | None = None  # for logs whose records lack it
    bad_lines: int = 0
    now: float | None = None  # wall clock for "last record N s ago"


def run_panel(view: RunView) -> RenderableType:
    title = Text(f"run {view.run_dir}", style="bold")
    table = _grid()
    rec = view.history.last
    if not view.log_exists:
        table.add_row("status", f"waiting for {view.log.name} (the run has not started yet)")
        return Group(title, table)
    if rec is None:
        table.add_row("status", f"{view.log.name} holds no training records yet")
        return Group(title, table)
    _train_rows(table, rec, view)
    ev = view.history.last_eval
    if ev is not None:
        table.add_row(
            "validation",
            f"loss {_or_nan(ev.val_loss):.4f}   "
            f"{_or_nan(ev.val_bits_per_base):.4f} bits/base (step {ev.step:,})",
        )
    if view.bad_lines:
        table.add_row("log", f"[yellow]{view.bad_lines} unreadable line(s) skipped[/]")
    return Group(title, table)


def _train_rows(table: Table, rec: TrainRecord, view: RunView) -> None:
    total = rec.total_steps or 0
    done = f"  ({100 * rec.step / total:.1f}%)" if total else ""
    status = ""
    if total and rec.step >= total:
        status = "   [green]finished[/]"
    elif view.now is not None and rec.time is not None:
        status = f"   last record {duration(view.now - rec.time)} ago"
    seen = "" if rec.tokens is None else f"   {rec.tokens:,} tokens"
    table.add_row("step", f"{rec.step:,} / {total:,}{done}{seen}{status}")
    table.add_row("loss", f"{_or_nan(rec.loss):.4f}   {sparkline(_recent_losses(view.history))}")
    table.add_row(
        "throughput",
        f"{rec.tokens_per_s or 0:,.0f} tokens/s   MFU "
        f"{percent(record_mfu(rec, view.peak_flops, view.flops_per_token))}"
        + ("" if view.peak_flops is None else f" (of {view.peak_flops / 1e12:g} TFLOP/s/device)"),
    )
    table.add_row(
        "memory",
        f"{_num(rec.mem_current_mb, ',.0f')} MiB (peak {_num(rec.mem_peak_mb, ',.0f')} MiB)"
        + ("" if rec.gpu_util is None else f"   GPU {rec.gpu_util:.0f}%"),
    )
    table.add_row("expert balance", format_balance(expert_balance(rec.expert_load)))
    table.add_row("time", f"elapsed {duration(rec.elapsed_s)}   ETA {duration(rec.eta_s)}")


def _or_nan(value: float | None) -> float:
    # Older logs may lack a figure: it reads "nan", as it always has.
    return float("nan") if value is None else value


def _recent_losses(history: RunHistory) -> list[float]:
    recent = list(history.train)[-SPARK_WIDTH:]
    return [r.loss for r in recent if r.loss is not None]


def frame(
    gpus: Sequence[GpuSample] | None,
    cpu: CpuSample | None,
    run: RunView | None,
    *,
    clock: float | None = None,
) -> Group:
    """One whole dashboard frame: the machine, then the run (when one is followed)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(clock if clock is not None else time.time()))
    parts: list[RenderableType] = [
        Text(f"genos metrics · {stamp}", style="bold"),
        system_panel(gpus, cpu),
    ]
    if run is not None:
        parts += [Text(""), run_panel(run)]
    return Group(*parts)


def _grid() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", justify="right", no_wrap=True)
    table.add_column()
    return table
