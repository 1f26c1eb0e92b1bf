"""Running a plan on this process (rank): the trainer with rank 0's live view and summary."""

from __future__ import annotations

from genos_cli.train.plan import TrainPlan
from genos_cli.train.trainer import Trainer, TrainResult


def run_training(plan: TrainPlan) -> TrainResult:
    try:
        return _run_training(plan)
    except OSError as exc:  # e.g. the disk filled up under the log: one sentence, no trace
        from genos_cli.atomic import describe_os_error
        from genos_cli.errors import GenosError

        where = exc.filename or plan.output_dir
        raise GenosError(f"training stopped: {where}: {describe_os_error(exc)}") from None


def _run_training(plan: TrainPlan) -> TrainResult:
    import os

    from rich.console import Console

    from genos_cli.train.view import TrainingView

    is_main = int(os.environ.get("RANK", "0")) == 0
    view = TrainingView(plan.config.name, plan.total_steps, Console()) if is_main else None
    if view is None:
        return Trainer(plan).train()
    with view:
        trainer = Trainer(plan, view=view)
        result = trainer.train()
    if is_main:
        _summary(view.console, plan, result)
    return result


def _summary(console, plan: TrainPlan, result: TrainResult) -> None:  # type: ignore[no-untyped-def]
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
    table.add_row("log", str(plan.output_dir / "training_log.jsonl"))
    if result.checkpoint:
        table.add_row("checkpoint", result.checkpoint)
    console.print(table)
