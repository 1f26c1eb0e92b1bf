"""What rank 0 shows while training: a Rich live panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from genos_cli.metrics.dashboard import duration, expert_balance, format_balance


def format_line(rec: dict[str, Any]) -> str:
    """One line per log record, for logs and non-interactive output."""
    mfu = rec.get("mfu")
    return (
        f"step {rec['step']}/{rec['total_steps']} loss {rec['loss']:.4f} "
        f"(lm {rec['lm_loss']:.4f} aux {rec['aux_loss']:.4f}) lr {rec['lr']:.2e} "
        f"{rec['tokens_per_s']:,.0f} tok/s "
        f"mfu {'-' if mfu is None else f'{100 * mfu:.1f}%'} "
        f"mem {rec['mem_peak_mb']:,.0f} MB eta {duration(rec.get('eta_s'))}"
    )


class TrainingView:
    """Live panel: step / total, losses, lr, throughput, MFU, memory, expert balance, ETA."""

    def __init__(self, run_name: str, total_steps: int, console: Console | None = None) -> None:
        self.console = console or Console()
        self.run_name = run_name
        self.total_steps = total_steps
        self.last: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
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

    def train_record(self, rec: dict[str, Any]) -> None:
        self.last = rec
        if self._live is not None:
            self._live.update(self._render())
        else:
            print(format_line(rec), file=sys.stdout, flush=True)

    def eval_record(self, rec: dict[str, Any]) -> None:
        self.last_eval = rec
        text = (
            f"eval at step {rec['step']}: val loss {rec['val_loss']:.4f}, "
            f"{rec['val_bits_per_base']:.4f} bits/base"
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
            done = rec["step"] / max(self.total_steps, 1)
            table.add_row("step", f"{rec['step']:,} / {self.total_steps:,}  ({100 * done:.1f}%)")
            table.add_row(
                "loss",
                f"{rec['loss']:.4f}   lm {rec['lm_loss']:.4f}   aux {rec['aux_loss']:.4f}",
            )
            table.add_row("lr", f"{rec['lr']:.3e}   grad norm {rec.get('grad_norm') or 0:.3f}")
            mfu = rec.get("mfu")
            table.add_row(
                "throughput",
                f"{rec['tokens_per_s']:,.0f} tokens/s   MFU "
                f"{'-' if mfu is None else f'{100 * mfu:.1f}%'}",
            )
            gpu = rec.get("gpu_util")
            table.add_row(
                "memory",
                f"{rec['mem_current_mb']:,.0f} MB (peak {rec['mem_peak_mb']:,.0f} MB)"
                + ("" if gpu is None else f"   GPU {gpu:.0f}%"),
            )
            table.add_row("expert balance", format_balance(expert_balance(rec.get("expert_load"))))
            table.add_row(
                "time",
                f"elapsed {duration(rec.get('elapsed_s'))}   ETA {duration(rec.get('eta_s'))}",
            )
        if self.last_eval is not None:
            ev = self.last_eval
            table.add_row(
                "validation",
                f"loss {ev['val_loss']:.4f}   {ev['val_bits_per_base']:.4f} bits/base "
                f"(step {ev['step']})",
            )
        title = Text(f"genos train · {self.run_name}", style="bold")
        return Group(title, table)
