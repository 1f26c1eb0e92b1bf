"""`training_log.jsonl`: the typed records a training run writes and everything else reads.

One JSON object per line, appended and flushed as it is produced, so a crash loses at most
the line being written and `genos metrics` can tail the file while the run goes on. Three
kinds, told apart by `"type"`:

- `TrainRecord` ("train"), every log interval: losses, lr, throughput, MFU, memory, expert load;
- `EvalRecord` ("eval"), every evaluation: validation loss and bits per base;
- `WarningRecord` ("warning"): a skipped non-finite step (`--on-nan skip`).

The trainer builds these models and the live view, `genos metrics` and W&B / TensorBoard
read them, so a field is named and typed once. Reading is lenient: logs written by older
genos versions lack some fields (None), and unknown fields are ignored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict

# The files `genos train` writes into its output directory, besides checkpoints/.
LOG_NAME = "training_log.jsonl"
PLAN_NAME = "run_plan.json"  # the resolved run (config, data, layout): train.plan.TrainPlan


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    step: int
    time: float | None = None  # seconds since the epoch, when written

    def to_json(self) -> str:
        """One compact JSON line: `type` and `step` first, `time` last, as genos always wrote."""
        fields = self.model_dump(mode="json")
        ordered = {"type": fields.pop("type"), "step": fields.pop("step")}
        time = fields.pop("time")
        return json.dumps({**ordered, **fields, "time": time}, separators=(",", ":"))


class TrainRecord(_Record):
    """One log interval of training, as of its last step."""

    type: Literal["train"] = "train"
    total_steps: int | None = None
    tokens: int | None = None  # tokens trained on so far
    loss: float | None = None  # lm_loss + aux_loss_coeff * aux_loss (+ z_loss_coeff * z_loss)
    lm_loss: float | None = None
    aux_loss: float | None = None
    z_loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None  # over the interval
    samples_per_s: float | None = None
    mfu: float | None = None  # model FLOPs utilisation against `peak_flops` x world_size
    flops_per_token: float | None = None  # training model FLOPs per token
    peak_flops: float | None = None  # one device's peak FLOP/s
    mem_current_mb: float | None = None  # GPU memory allocated by torch, else process RSS
    mem_peak_mb: float | None = None
    gpu_util: float | None = None  # NVML, percent
    expert_load: list[list[float]] | None = None  # (layers, experts) shares of the routes
    elapsed_s: float | None = None  # since this invocation of `genos train` started
    eta_s: float | None = None
    world_size: int | None = None


class EvalRecord(_Record):
    """One validation pass."""

    type: Literal["eval"] = "eval"
    val_loss: float | None = None  # nats per token
    val_bits_per_base: float | None = None
    val_tokens: int | None = None
    val_bases: int | None = None


class WarningRecord(_Record):
    """A step whose update was skipped (non-finite loss or gradient, `--on-nan skip`)."""

    type: Literal["warning"] = "warning"
    event: str = ""
    message: str = ""
    loss: float | str | None = None  # "nan" / "inf": strict JSON has no NaN
    grad_norm: float | str | None = None
    skipped_steps: int | None = None


Record = TrainRecord | EvalRecord | WarningRecord
_KINDS: dict[str, type[TrainRecord] | type[EvalRecord] | type[WarningRecord]] = {
    "train": TrainRecord,
    "eval": EvalRecord,
    "warning": WarningRecord,
}


def parse_record(obj: Any) -> Record | None:
    """A decoded JSON line as its record, or None if it is not one genos writes."""
    if not isinstance(obj, dict):
        return None
    name = obj.get("type")
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None or not isinstance(obj.get("step"), int):
        return None
    try:
        return kind.model_validate(obj)
    except ValueError:  # pydantic's ValidationError: a field of the wrong type
        return None


def parse_line(line: str | bytes) -> Record | None:
    """One line of a log as its record, or None if it is not JSON or not a record."""
    try:
        return parse_record(json.loads(line))
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes
        return None


def json_number(value: float) -> float | str:
    """Non-finite floats as "nan" / "inf" / "-inf": strict JSON has no NaN."""
    return value if math.isfinite(value) else str(value)


class JsonlLog:
    """Append-only JSON-lines file of records; only rank 0 should open one."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[str] = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, record: Record) -> None:
        self._fh.write(record.to_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_log(path: Path) -> list[Record]:
    """All complete records of a log (a half-written last line is skipped)."""
    with open(path, encoding="utf-8") as fh:
        return [record for line in fh if (record := parse_line(line)) is not None]
