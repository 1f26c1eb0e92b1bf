"""A training run, fully resolved before any work starts: config, data, parallel layout.

The CLI builds a `TrainPlan` from flags and config, checks everything that can be checked
cheaply (so bad options fail before a model is built), and hands it to the trainer — in this
process, or as a JSON file to every rank that DeepSpeed's launcher starts.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from genos_cli.config.schema import GenosConfig
from genos_cli.errors import GenosError

PLAN_NAME = "run_plan.json"


class TrainPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    config: GenosConfig
    output_dir: Path
    checkpoint_dir: Path
    train_prefixes: list[Path]
    val_prefixes: list[Path] = Field(default_factory=list)
    tokenizer_kind: str
    tokenizer_model: Path | None = None
    num_processes: int = 1
    hostfile: Path | None = None
    total_steps: int
    resume: bool = False
    stop_after: int | None = None  # steps this invocation runs before stopping (resumable)
    smoke_test: bool = False
    eval_iters: int = 8  # micro-batches per evaluation
    wandb_project: str | None = None
    compile: bool | None = None  # None: the model's default for the device
    peak_tflops: float | None = None  # per-device peak for MFU; None: GPU table or CPU measured

    @property
    def micro_batch_size(self) -> int:
        return self.config.training.micro_batch_size

    @property
    def warmup_steps(self) -> int:
        """The configured warmup, at most a tenth of the run: a short run (a first try with
        --train-tokens) should not spend its whole length warming up."""
        return min(self.config.training.warmup_steps, max(1, self.total_steps // 10))

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per rank per optimizer step for `world_size` data-parallel ranks."""
        t = self.config.training
        per_step = t.micro_batch_size * world_size
        if t.global_batch_size % per_step:
            raise GenosError(
                f"global batch size {t.global_batch_size} is not a multiple of micro batch size "
                f"{t.micro_batch_size} x {world_size} processes; change --global-batch-size or "
                "--micro-batch-size"
            )
        return t.global_batch_size // per_step

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> TrainPlan:
        return cls.model_validate_json(path.read_text())


def total_steps(config: GenosConfig, max_steps: int | None) -> int:
    """Optimizer steps: `max_steps` when given, else train_tokens / tokens per step, rounded up."""
    if max_steps is not None:
        return max_steps
    return math.ceil(config.training.train_tokens / config.tokens_per_step)


def launch_command(plan_path: Path, plan: TrainPlan, master_port: int) -> list[str]:
    """DeepSpeed's launcher starting `num_processes` ranks per node (on every host of the
    hostfile), each running `python -m genos_cli.train.worker --plan PLAN`."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if plan.hostfile is not None:
        cmd += ["--hostfile", str(plan.hostfile)]
    cmd += [
        "--num_gpus",
        str(plan.num_processes),
        "--master_port",
        str(master_port),
        "--module",
        "genos_cli.train.worker",
        "--plan",
        str(plan_path),
    ]
    return cmd


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
