"""Starting a plan: in this process for one process on one node, else through DeepSpeed's
launcher (which starts every rank, on every host of the hostfile, each running
`python -m genos_cli.train.rank --plan RUN_DIR/run_plan.json`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from genos_cli.telemetry.records import PLAN_NAME
from genos_cli.train.plan import TrainPlan


def describe(plan: TrainPlan) -> dict[str, Any]:
    """What --dry-run prints: the DeepSpeed config and the launch command."""
    import torch

    from genos_cli.device import resolve_precision
    from genos_cli.train.runtime import deepspeed_config

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    precision = resolve_precision(plan.config.training.precision, device)
    world = plan.world_size
    ds_config = deepspeed_config(plan, plan.grad_accum(world), precision)
    plan_path = plan.output_dir / PLAN_NAME
    if plan.num_processes == 1 and plan.hostfile is None:
        command = (
            shell_line(["python", "-m", "genos_cli.train.rank", "--plan", str(plan_path)])
            + "   (genos runs this in its own process)"
        )
    else:
        command = shell_line(launch_command(plan_path, plan, master_port=29500))
    return {
        "deepspeed_config": ds_config,
        "command": command,
        "precision": precision,
        "world_size": world,
    }


def launch(plan: TrainPlan) -> int:
    """Run the plan: in this process for one process on one node, else through DeepSpeed's
    launcher (which starts every rank, on every host of the hostfile)."""
    from genos_cli.atomic import ensure_writable_dir

    # A read-only or mistyped path fails now, not at the first checkpoint hours later.
    ensure_writable_dir(plan.output_dir, "output directory")
    ensure_writable_dir(plan.checkpoint_dir, "checkpoint directory")
    plan_path = plan.output_dir / PLAN_NAME
    plan.write(plan_path)
    if plan.num_processes == 1 and plan.hostfile is None:
        from genos_cli.train.rank import run_training

        run_training(plan)
        return 0
    from genos_cli.train.runtime import free_port

    cmd = launch_command(plan_path, plan, master_port=free_port())
    env = dict(os.environ)
    if not _cuda_visible():
        # CPU ranks: split the cores between the processes instead of oversubscribing.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.num_processes)))
    return subprocess.run(cmd, env=env, check=False).returncode


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def launch_command(plan_path: Path, plan: TrainPlan, master_port: int) -> list[str]:
    """DeepSpeed's launcher starting `num_processes` ranks per node (on every host of the
    hostfile), each running `python -m genos_cli.train.rank --plan PLAN`."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if plan.hostfile is not None:
        cmd += ["--hostfile", str(plan.hostfile)]
    cmd += [
        "--num_gpus",
        str(plan.num_processes),
        "--master_port",
        str(master_port),
        "--module",
        "genos_cli.train.rank",
        "--plan",
        str(plan_path),
    ]
    return cmd


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
