"""`genos metrics summary`: one run's log reduced to the figures that compare runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from genos_cli.metrics.logs import RunHistory
from genos_cli.telemetry.format import duration, expert_balance
from genos_cli.telemetry.peak import record_mfu


@dataclass(frozen=True)
class RunSummary:
    """Figures of one run. Means are over steady-state log windows: each invocation's first
    window (allocation, compilation) is left out. None: the log does not say."""

    run: str
    steps: int
    total_steps: int | None
    tokens: int | None
    train_seconds: float  # the training loops' own time, summed over resumes
    invocations: int
    final_loss: float | None
    best_loss: float | None
    best_loss_step: int | None
    final_val_loss: float | None
    final_val_bits_per_base: float | None
    best_val_bits_per_base: float | None
    best_val_step: int | None
    mean_tokens_per_s: float | None
    mean_mfu: float | None
    mfu_peak_tflops: float | None  # per-device peak the MFU is relative to
    peak_memory_mb: float | None
    world_size: int
    final_expert_max_over_mean: float | None  # busiest expert / mean, worst layer

    def to_json(self) -> dict[str, Any]:
        # NaN is not JSON: a missing figure is null.
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


def summarize(
    run: Path,
    history: RunHistory,
    *,
    peak_flops: float | None = None,
    flops_per_token: float | None = None,
) -> RunSummary:
    """Summary of a run whose history has at least one train record. MFU is the log's own,
    or recomputed against `peak_flops` (per device) when given."""
    last = history.last
    assert last is not None, "summarize() needs train records"
    steady = history.steady()
    losses = [(r.loss, r.step) for r in history.train if r.loss is not None]
    evals = [
        (e.val_bits_per_base, e.step)
        for e in history.evals
        if e.val_bits_per_base is not None and math.isfinite(e.val_bits_per_base)
    ]
    mfus = [record_mfu(r, peak_flops, flops_per_token) for r in steady]
    memory = [r.mem_peak_mb for r in history.train if r.mem_peak_mb is not None]
    balance = expert_balance(last.expert_load)
    last_eval = history.last_eval
    peak = peak_flops if peak_flops is not None else last.peak_flops
    best_loss = min(losses) if losses else None
    best_val = min(evals) if evals else None
    return RunSummary(
        run=str(run),
        steps=last.step,
        total_steps=last.total_steps,
        tokens=last.tokens,
        train_seconds=history.seconds,
        invocations=history.invocations,
        final_loss=last.loss,
        best_loss=None if best_loss is None else best_loss[0],
        best_loss_step=None if best_loss is None else best_loss[1],
        final_val_loss=None if last_eval is None else last_eval.val_loss,
        final_val_bits_per_base=None if last_eval is None else last_eval.val_bits_per_base,
        best_val_bits_per_base=None if best_val is None else best_val[0],
        best_val_step=None if best_val is None else best_val[1],
        mean_tokens_per_s=_mean([r.tokens_per_s for r in steady]),
        mean_mfu=_mean(mfus),
        mfu_peak_tflops=None if peak is None else peak / 1e12,
        peak_memory_mb=max(memory) if memory else None,
        world_size=last.world_size or 1,
        final_expert_max_over_mean=None if balance is None else max(balance.max_over_mean),
    )


def summary_table(summaries: Sequence[RunSummary]) -> Table:
    """Runs side by side: one column per run, one row per figure."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("", style="bold cyan", no_wrap=True)
    for s in summaries:
        table.add_column(s.run, justify="right", overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("steps", lambda s: f"{s.steps:,}" + (f" / {s.total_steps:,}" if s.total_steps else "")),
        ("tokens", lambda s: _fmt(s.tokens, ",")),
        ("training time", lambda s: duration(s.train_seconds) + _resumes(s.invocations)),
        ("final loss", lambda s: _fmt(s.final_loss, ".4f")),
        ("best loss", lambda s: _at(s.best_loss, s.best_loss_step)),
        ("final val loss", lambda s: _fmt(s.final_val_loss, ".4f")),
        ("final val bits/base", lambda s: _fmt(s.final_val_bits_per_base, ".4f")),
        ("best val bits/base", lambda s: _at(s.best_val_bits_per_base, s.best_val_step)),
        ("mean tokens/s", lambda s: _fmt(s.mean_tokens_per_s, ",.0f")),
        ("mean MFU", _mfu_cell),
        ("peak memory MiB", lambda s: _fmt(s.peak_memory_mb, ",.0f")),
        ("processes", lambda s: str(s.world_size)),
        ("expert max/mean", lambda s: _fmt(s.final_expert_max_over_mean, ".2f")),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(s) for s in summaries))
    return table


def _mfu_cell(s: RunSummary) -> str:
    if s.mean_mfu is None:
        return "-"
    of = "" if s.mfu_peak_tflops is None else f" of {_tflops(s.mfu_peak_tflops)}"
    return f"{100 * s.mean_mfu:.2f}%{of}"


def _tflops(value: float) -> str:
    # CPU peaks are a few hundred GFLOP/s at most: say so in units a reader recognises.
    return f"{value * 1e3:,.1f} GFLOP/s" if value < 1 else f"{value:,.0f} TFLOP/s"


def _resumes(invocations: int) -> str:
    return "" if invocations <= 1 else f" ({invocations} invocations)"


def _at(value: float | None, step: int | None) -> str:
    return "-" if value is None else f"{value:.4f} (step {step:,})"


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mean(values: Sequence[float | None]) -> float | None:
    numbers = [v for v in values if v is not None and math.isfinite(v)]
    return sum(numbers) / len(numbers) if numbers else None


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
