"""`genos metrics plot`: training curves of one or more runs, overlaid, in one image.

matplotlib is an optional extra (`pip install 'genos[plot]'`) and is imported only here,
with the non-interactive Agg backend: the command runs on machines without a display.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from genos_cli import extras
from genos_cli.atomic import atomic_write
from genos_cli.errors import GenosError
from genos_cli.metrics.logs import RunHistory
from genos_cli.telemetry.format import expert_balance
from genos_cli.telemetry.peak import record_mfu
from genos_cli.telemetry.records import EvalRecord, TrainRecord

PANELS = ("loss", "val bits/base", "tokens/s", "MFU (%)", "expert load: max/mean (layer mean)")
Series = tuple[list[int], list[float]]  # (steps, values)
R = TypeVar("R", TrainRecord, EvalRecord)


def _pyplot() -> Any:
    (matplotlib,) = extras.require("plot")
    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def series(
    history: RunHistory, *, peak_flops: float | None = None, flops_per_token: float | None = None
) -> dict[str, Series]:
    """(steps, values) per panel for one run; a panel the log has nothing for is empty."""

    def balance(rec: TrainRecord) -> float | None:
        b = expert_balance(rec.expert_load)
        return None if b is None else sum(b.max_over_mean) / len(b.max_over_mean)

    def mfu_percent(rec: TrainRecord) -> float | None:
        value = record_mfu(rec, peak_flops, flops_per_token)
        return None if value is None else 100 * value

    train, evals = list(history.train), list(history.evals)
    return {
        "loss": _pick(train, lambda r: r.loss),
        "val bits/base": _pick(evals, lambda r: r.val_bits_per_base),
        "tokens/s": _pick(train, lambda r: r.tokens_per_s),
        "MFU (%)": _pick(train, mfu_percent),
        PANELS[4]: _pick(train, balance),
    }


def _pick(records: Sequence[R], value: Callable[[R], float | None]) -> Series:
    points = [(r.step, value(r)) for r in records]
    kept = [(s, v) for s, v in points if v is not None]
    return [s for s, _ in kept], [v for _, v in kept]


def plot_runs(
    runs: Sequence[tuple[str, dict[str, Series]]],
    out: Path,
    *,
    dpi: int = 120,
) -> None:
    """Draw every run's series into one figure of five panels and write it to `out`
    atomically (a reader never sees a half-written image)."""
    plt = _pyplot()
    fmt = out.suffix.lstrip(".").lower() or "png"
    fig, axes = plt.subplots(3, 2, figsize=(12, 11), constrained_layout=True)
    try:
        if fmt not in fig.canvas.get_supported_filetypes():
            raise GenosError(f"{out}: cannot write .{fmt} images; use a .png file name")
        flat = axes.ravel()
        for ax, panel in zip(flat, PANELS, strict=False):
            for label, data in runs:
                steps, values = data[panel]
                if steps:
                    # One point (a single eval) is invisible as a line: mark points too.
                    ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3,
                            label=label)  # fmt: skip
            ax.set_title(panel)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, "not in the log", ha="center", va="center",
                        transform=ax.transAxes, color="gray")  # fmt: skip
        flat[PANELS.index("loss")].set_ylabel("train loss (nats/token)")
        flat[4].axhline(1.0, color="gray", lw=0.8, ls="--")
        legend_ax = flat[len(PANELS)]
        legend_ax.axis("off")
        handles, labels = flat[0].get_legend_handles_labels()
        if handles:
            legend_ax.legend(handles, labels, loc="center", title="runs", frameon=False)
        with atomic_write(out) as fh:
            fig.savefig(fh, format=fmt, dpi=dpi)
    finally:
        plt.close(fig)
