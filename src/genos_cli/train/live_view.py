"""What rank 0 shows while training: a Rich live panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from genos_cli.telemetry.format import duration, expert_balance, format_balance
from genos_cli.telemetry.records import LOG_NAME, EvalRecord, TrainRecord

if TYPE_CHECKING:
    from genos_cli.train.plan import TrainPlan
    from genos_cli.train.trainer import TrainResult


def format_line(rec: TrainRecord) -> str:
    """One line per log record, for logs and non-interactive output."""
    mfu = rec.mfu
    return (
        f"step {rec.step}/{rec.total_steps} loss {rec.loss:.4f} "
        f"(lm {rec.lm_loss:.4f} aux {rec.aux_loss:.4f}) lr {rec.lr:.2e} "
        f"{rec.tokens_per_s:,.0f} tok/s "
        f"mfu {'-' if mfu is None else f'{100 * mfu:.1f}%'} "
        f"mem {rec.mem_peak_mb:,.0f} MB eta {duration(rec.eta_s)}"
    )


class TrainingView:
    """Live panel: step / total, losses, lr, throughput, MFU, memory, expert balance, ETA."""

    def __init__(self, run_name: str, total_steps: int, console: Console | None = None) -> None:
        self.console = console or Console()
        self.run_name = run_name
        self.total_steps = total_steps
        self.last: TrainRecord | None = None
        self.last_eval: EvalRecord | None = None
        self.started = time.time()
        self._live: Live | None = None

    def __enter__(self) -> TrainingView:
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def train_record(self, rec: TrainRecord) -> None:
        self.last = rec
        if self._live is not None:
            self._live.update(self._render())
        else:
            print(format_line(rec), file=sys.stdout, flush=True)

    def eval_record(self, rec: EvalRecord) -> None:
        self.last_eval = rec
        text = (
            f"eval at step {rec.step}: val loss {rec.val_loss:.4f}, "
            f"{rec.val_bits_per_base:.4f} bits/base"
        )
        if self._live is not None:
            self._live.console.print(text, highlight=False)
            self._live.update(self._render())
        else:
            print(text, file=sys.stdout, flush=True)

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", justify="right")
        table.add_column()
        rec = self.last
        if rec is None:
            table.add_row("step", f"0 / {self.total_steps}")
            table.add_row("status", "starting…")
        else:
            done = rec.step / max(self.total_steps, 1)
            table.add_row("step", f"{rec.step:,} / {self.total_steps:,}  ({100 * done:.1f}%)")
            table.add_row(
                "loss",
                f"{rec.loss:.4f}   lm {rec.lm_loss:.4f}   aux {rec.aux_loss:.4f}",
            )
            table.add_row("lr", f"{rec.lr:.3e}   grad norm {rec.grad_norm or 0:.3f}")
            mfu = rec.mfu
            table.add_row(
                "throughput",
                f"{rec.tokens_per_s:,.0f} tokens/s   MFU "
                f"{'-' if mfu is None else f'{100 * mfu:.1f}%'}",
            )
            gpu = rec.gpu_util
            table.add_row(
                "memory",
                f"{rec.mem_current_mb:,.0f} MB (peak {rec.mem_peak_mb:,.0f} MB)"
                + ("" if gpu is None else f"   GPU {gpu:.0f}%"),
            )
            table.add_row("expert balance", format_balance(expert_balance(rec.expert_load)))
            table.add_row(
                "time",
                f"elapsed {duration(rec.elapsed_s)}   ETA {duration(rec.eta_s)}",
            )
        if self.last_eval is not None:
            ev = self.last_eval
            table.add_row(
                "validation",
                f"loss {ev.val_loss:.4f}   {ev.val_bits_per_base:.4f} bits/base (step {ev.step})",
            )
        title = Text(f"genos train · {self.run_name}", style="bold")
        return Group(title, table)


def print_summary(console: Console, plan: TrainPlan, result: TrainResult) -> None:
    """The closing table rank 0 prints."""
    from rich.table import Table

    table = Table(
        title=f"genos train · {plan.config.name}", show_header=False, title_justify="left"
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("steps", f"{result.steps:,}")
    table.add_row("tokens", f"{result.tokens:,}")
    table.add_row("time", f"{result.seconds:,.1f} s")
    if result.final_loss is not None:
        table.add_row("final train loss", f"{result.final_loss:.4f}")
    if result.val_loss is not None:
        table.add_row("validation loss", f"{result.val_loss:.4f}")
    if result.val_bits_per_base is not None:
        table.add_row("validation bits/base", f"{result.val_bits_per_base:.4f} (uniform: 2.0000)")
    table.add_row("log", str(plan.output_dir / LOG_NAME))
    if result.checkpoint:
        table.add_row("checkpoint", result.checkpoint)
    console.print(table)
