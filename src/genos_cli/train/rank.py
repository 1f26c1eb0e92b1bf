"""What every rank runs: `python -m genos_cli.train.rank --plan RUN_DIR/run_plan.json`
(DeepSpeed's launcher adds `--local_rank`), or `run_training(plan)` in this process.

Rank 0 shows the live view and the closing summary; every rank runs a `Trainer`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from genos_cli.errors import GenosError
from genos_cli.train.plan import TrainPlan
from genos_cli.train.trainer import Trainer, TrainResult


def run_training(plan: TrainPlan) -> TrainResult:
    try:
        return _run(plan)
    except OSError as exc:  # e.g. the disk filled up under the log: one sentence, no trace
        from genos_cli.atomic import describe_os_error

        where = exc.filename or plan.output_dir
        raise GenosError(f"training stopped: {where}: {describe_os_error(exc)}") from None


def _run(plan: TrainPlan) -> TrainResult:
    from rich.console import Console

    from genos_cli.train.live_view import TrainingView, print_summary

    if int(os.environ.get("RANK", "0")) != 0:
        return Trainer(plan).train()
    with TrainingView(plan.config.name, plan.total_steps, Console()) as view:
        result = Trainer(plan, view=view).train()
    print_summary(view.console, plan, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genos-train-rank")
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--local_rank", type=int, default=None)  # set by DeepSpeed's launcher
    args = parser.parse_args(argv)
    from genos_cli.train import cluster

    rank = cluster.detect()
    if rank is not None and rank.source == "slurm":  # `srun python -m genos_cli.train.rank`
        cluster.export_torch_env(rank)
    # torch.distributed deprecation notices raised inside DeepSpeed, once per rank.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        run_training(TrainPlan.read(args.plan))
    except GenosError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
