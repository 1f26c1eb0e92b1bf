"""Entry point of every rank DeepSpeed's launcher starts: `python -m genos_cli.train.worker
--plan RUN_DIR/run_plan.json` (DeepSpeed adds `--local_rank`)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from genos_cli.errors import GenosError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genos-train-worker")
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--local_rank", type=int, default=None)  # set by DeepSpeed's launcher
    args = parser.parse_args(argv)
    # torch.distributed deprecation notices raised inside DeepSpeed, once per rank.
    warnings.filterwarnings("ignore", category=FutureWarning)

    from genos_cli.train.plan import TrainPlan
    from genos_cli.train.session import run_training

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
