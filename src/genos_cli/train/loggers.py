"""Where rank 0's records go: `training_log.jsonl`, and Weights & Biases and TensorBoard when
asked.

Every sink receives the same typed records (`genos_cli.telemetry.records`), so the log file,
the W&B history and the TensorBoard scalars hold the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genos_cli import extras
from genos_cli.telemetry.format import expert_balance
from genos_cli.telemetry.records import LOG_NAME, JsonlLog, Record, TrainRecord

if TYPE_CHECKING:
    from genos_cli.train.plan import TrainPlan

TENSORBOARD_DIR = "tensorboard"  # under the run's output directory


class RunLog:
    """The run's record sinks on rank 0; on other ranks writing is a no-op."""

    def __init__(self, plan: TrainPlan, is_main: bool) -> None:
        self.jsonl = JsonlLog(plan.output_dir / LOG_NAME) if is_main else None
        self.wandb = _wandb_run(plan) if is_main and plan.wandb_project else None
        self.tensorboard = TensorBoardLog(plan) if is_main and plan.tensorboard else None

    def write(self, record: Record) -> None:
        if self.jsonl is not None:
            self.jsonl.write(record)
        if self.wandb is not None:
            fields = record.model_dump(mode="json", exclude={"type"})
            self.wandb.log(fields, step=record.step)
        if self.tensorboard is not None:
            self.tensorboard.write(record)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.wandb is not None:
            self.wandb.finish()  # flush its history now, not at interpreter exit
        if self.tensorboard is not None:
            self.tensorboard.close()


def _wandb_run(plan: TrainPlan) -> Any:
    (wandb,) = extras.require("wandb")
    return wandb.init(
        project=plan.wandb_project,
        name=plan.config.name,
        dir=str(plan.output_dir),
        config=plan.config.model_dump(mode="json"),
    )


# Record fields that are not measurements: bookkeeping, or constants of the run.
_NOT_SCALARS = frozenset({"type", "step", "time", "total_steps", "world_size"})


def scalars(record: Record) -> dict[str, float]:
    """The record's numbers as TensorBoard tags: `train/loss`, `eval/val_bits_per_base`, ...
    (every numeric field, so the two logs cannot drift apart), and for a train record the
    expert balance, max/mean load per layer (`expert_balance/layer_0`, 1.0 = even)."""
    fields = record.model_dump(mode="json")
    out = {
        f"{record.type}/{name}": float(value)
        for name, value in fields.items()
        if name not in _NOT_SCALARS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }
    if isinstance(record, TrainRecord):
        balance = expert_balance(record.expert_load)
        if balance is not None:
            for layer, ratio in enumerate(balance.max_over_mean):
                out[f"expert_balance/layer_{layer}"] = ratio
    return out


class TensorBoardLog:
    """`OUTPUT_DIR/tensorboard/`: the records' scalars through `torch.utils.tensorboard`
    (`pip install 'genos[tensorboard]'`); `tensorboard --logdir OUTPUT_DIR` shows them."""

    def __init__(self, plan: TrainPlan) -> None:
        extras.require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(plan.output_dir / TENSORBOARD_DIR))

    def write(self, record: Record) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record.step, walltime=record.time)
        self.writer.flush()  # readable while the run goes on, as the JSONL is

    def close(self) -> None:
        self.writer.close()
