"""Where rank 0's records go: `training_log.jsonl`, and Weights & Biases when asked.

Every sink receives the same typed records (`genos_cli.telemetry.records`), so the log file
and the W&B history hold the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genos_cli import extras
from genos_cli.telemetry.records import LOG_NAME, JsonlLog, Record

if TYPE_CHECKING:
    from genos_cli.train.plan import TrainPlan


class RunLog:
    """The run's record sinks on rank 0; on other ranks writing is a no-op."""

    def __init__(self, plan: TrainPlan, is_main: bool) -> None:
        self.jsonl = JsonlLog(plan.output_dir / LOG_NAME) if is_main else None
        self.wandb = _wandb_run(plan) if is_main and plan.wandb_project else None

    def write(self, record: Record) -> None:
        if self.jsonl is not None:
            self.jsonl.write(record)
        if self.wandb is not None:
            fields = record.model_dump(mode="json", exclude={"type"})
            self.wandb.log(fields, step=record.step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.wandb is not None:
            self.wandb.finish()  # flush its history now, not at interpreter exit


def _wandb_run(plan: TrainPlan) -> Any:
    (wandb,) = extras.require("wandb")
    return wandb.init(
        project=plan.wandb_project,
        name=plan.config.name,
        dir=str(plan.output_dir),
        config=plan.config.model_dump(mode="json"),
    )
