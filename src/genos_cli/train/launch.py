"""Starting a plan's processes, with the launcher it names (`genos train --launcher`):

- `deepspeed` (the default): this process for one process on one node, else DeepSpeed's
  launcher, which starts every rank (on every host of the hostfile), each running
  `python -m genos_cli.train.rank --plan RUN_DIR/run_plan.json`;
- `torchrun`: `python -m torch.distributed.run ... -m genos_cli train OPTIONS` (torchrun
  itself); every process it starts is one rank, builds the same plan and trains;
- `slurm`: `srun ... python -m genos_cli train OPTIONS` inside an allocation, or, with
  `--dry-run`, an sbatch script (`RUN_DIR/train.sbatch`) that does it;
- `none`: this process, as it is (one process, or a rank something else started).

A process that is already a rank of a torchrun / srun job (`cluster.detect`) launches
nothing: it runs `run_training` itself. One training loop, whatever started the processes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from genos_cli.errors import GenosError
from genos_cli.telemetry.records import PLAN_NAME
from genos_cli.train import cluster
from genos_cli.train.plan import TrainPlan

SBATCH_NAME = "train.sbatch"  # in the run's output directory
TORCHRUN_PORT = 29500  # torchrun's own default


def describe(plan: TrainPlan, rank_args: list[str]) -> dict[str, Any]:
    """What --dry-run prints: the DeepSpeed config and the launch command (for SLURM, the
    sbatch script); `rank_args` are the options each rank's `genos train` gets."""
    import torch

    from genos_cli.device import resolve_precision
    from genos_cli.train.runtime import deepspeed_config

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    precision = resolve_precision(plan.config.training.precision, device)
    world = plan.world_size
    ds_config = deepspeed_config(plan, plan.grad_accum(world), precision)
    plan_path = plan.output_dir / PLAN_NAME
    info: dict[str, Any] = {"deepspeed_config": ds_config, "precision": precision,
                            "world_size": world}  # fmt: skip
    if plan.launched_by is not None or plan.launcher == "none" or _in_this_process(plan):
        where = f"this process (rank of a {plan.launched_by} job)" if plan.launched_by else ""
        info["command"] = (
            shell_line(["python", "-m", "genos_cli.train.rank", "--plan", str(plan_path)])
            + f"   (genos runs this in {where or 'its own process'})"
        )
    elif plan.launcher == "deepspeed":
        info["command"] = shell_line(launch_command(plan_path, plan, master_port=TORCHRUN_PORT))
    elif plan.launcher == "torchrun":
        info["command"] = shell_line(torchrun_command(plan, rank_args))
    else:
        info["sbatch"] = sbatch_script(plan, rank_args, gpus=torch.cuda.is_available())
        info["sbatch_path"] = plan.output_dir / SBATCH_NAME
        info["command"] = f"sbatch {shlex.quote(str(plan.output_dir / SBATCH_NAME))}"
    return info


def _in_this_process(plan: TrainPlan) -> bool:
    return plan.launcher == "deepspeed" and plan.world_size == 1 and plan.hostfile is None


def check_launchable(plan: TrainPlan) -> None:
    """What stops a launch, found before anything is written."""
    if plan.launched_by is not None:
        return
    if plan.launcher == "slurm":
        if not cluster.in_slurm_allocation(os.environ):
            raise GenosError(
                "--launcher slurm: this is not a SLURM job; write a batch script with "
                "--dry-run and submit it (sbatch), or run `srun genos train ...` in an "
                "allocation"
            )
        if shutil.which("srun") is None:
            raise GenosError("--launcher slurm: srun is not on PATH")
    if plan.launcher == "torchrun" and plan.nodes > 1:
        raise GenosError(
            f"--launcher torchrun over {plan.nodes} nodes: torchrun starts one node's "
            "processes; run the command --dry-run prints on every node (NODE_RANK=0..."
            f"{plan.nodes - 1}), or use --launcher slurm or deepspeed with a --hostfile"
        )


def launch(plan: TrainPlan, rank_args: list[str] | None = None) -> int:
    """Run the plan (see the module doc); the exit code of the launcher, or 0."""
    from genos_cli.atomic import ensure_writable_dir

    check_launchable(plan)
    # A read-only or mistyped path fails now, not at the first checkpoint hours later.
    ensure_writable_dir(plan.output_dir, "output directory")
    ensure_writable_dir(plan.checkpoint_dir, "checkpoint directory")
    plan_path = plan.output_dir / PLAN_NAME
    if plan.launched_by is not None or plan.launcher == "none" or _in_this_process(plan):
        return _run_here(plan, plan_path)
    env = dict(os.environ)
    if not _cuda_visible():
        # CPU ranks: split the cores between the processes instead of oversubscribing.
        env.setdefault("OMP_NUM_THREADS", str(max(1, _cores() // plan.num_processes)))
    if plan.launcher == "deepspeed":
        from genos_cli.train.runtime import free_port

        plan.write(plan_path)
        cmd = launch_command(plan_path, plan, master_port=free_port())
    elif plan.launcher == "torchrun":
        cmd = torchrun_command(plan, rank_args or [])  # rank 0 writes the plan
    else:
        cmd = srun_command(plan, rank_args or [])
    return subprocess.run(cmd, env=env, check=False).returncode


def _run_here(plan: TrainPlan, plan_path: Path) -> int:
    """This process trains: the only one, or one rank of a job torchrun / srun started
    (the first of which writes the plan; every rank built the same one)."""
    from genos_cli.train.rank import run_training

    rank = cluster.detect()
    if rank is not None:
        cluster.export_torch_env(rank)  # what DeepSpeed's process group reads
        if not _cuda_visible() and "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(max(1, _cores() // max(1, rank.local_world_size)))
    if rank is None or rank.rank == 0:
        plan.write(plan_path)
    run_training(plan)
    return 0


def _cores() -> int:
    """The cores this process may run on (SLURM and containers restrict them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def launch_command(plan_path: Path, plan: TrainPlan, master_port: int) -> list[str]:
    """DeepSpeed's launcher starting the plan's ranks (on every host of the hostfile), each
    running `python -m genos_cli.train.rank --plan PLAN`. `--num_gpus N` makes DeepSpeed run
    N on every host; without it each host runs its hostfile slots, so it is left out where
    the hosts' counts differ."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if plan.hostfile is not None:
        cmd += ["--hostfile", str(plan.hostfile)]
    if len(set(plan.processes_per_node)) == 1:
        cmd += ["--num_gpus", str(plan.num_processes)]
    cmd += [
        "--master_port",
        str(master_port),
        "--module",
        "genos_cli.train.rank",
        "--plan",
        str(plan_path),
    ]
    return cmd


def genos_train(rank_args: list[str]) -> list[str]:
    """`genos train OPTIONS` with this interpreter, as each rank runs it."""
    return [sys.executable, "-m", "genos_cli", "train", *rank_args]


def torchrun_command(plan: TrainPlan, rank_args: list[str]) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, torch's own entry point) starting
    the node's processes, each `genos train OPTIONS`. One node: `--standalone`. Several: the
    command for every node, with its NODE_RANK, meeting on the hostfile's first host (or
    $MASTER_ADDR)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
           str(plan.num_processes)]  # fmt: skip
    if plan.nodes == 1:
        cmd += ["--standalone"]
    else:
        from genos_cli.train.plan import host_names

        master = host_names(plan.hostfile)[0] if plan.hostfile is not None else "${MASTER_ADDR}"
        cmd += ["--nnodes", str(plan.nodes), "--node-rank", "${NODE_RANK}",
                "--master-addr", master, "--master-port", str(TORCHRUN_PORT)]  # fmt: skip
    return [*cmd, "-m", "genos_cli", "train", *rank_args]


def srun_command(plan: TrainPlan, rank_args: list[str]) -> list[str]:
    """srun starting the plan's tasks in this allocation, each `genos train OPTIONS`."""
    return ["srun", f"--nodes={plan.nodes}", f"--ntasks-per-node={plan.num_processes}",
            "--kill-on-bad-exit=1", *genos_train(rank_args)]  # fmt: skip


def sbatch_script(plan: TrainPlan, rank_args: list[str], *, gpus: bool) -> str:
    """A batch script for `sbatch`: the allocation (nodes, one task per GPU / process), the
    rendezvous (MASTER_ADDR = the first node, MASTER_PORT from the job id: what genos
    would derive itself, set here so it can be seen and changed), and srun starting every
    task as `genos train OPTIONS`. Partition, account and time limit are the cluster's: add
    them as #SBATCH lines or sbatch options."""
    out = plan.output_dir.resolve()
    gpu_line = f"#SBATCH --gpus-per-node={plan.num_processes}"
    if not gpus:  # written where no GPU is visible: CPU tasks, unless the nodes have GPUs
        gpu_line = "#" + gpu_line + "   # GPU nodes: remove one '#'"
    quoted = " ".join(_quote(w) for w in genos_train(rank_args))
    return "\n".join([
        "#!/bin/bash",
        f"# genos train {plan.config.name}: {plan.nodes} node(s) x {plan.num_processes} "
        f"process(es) = {plan.world_size} ranks. Submit: sbatch {_quote(str(out / SBATCH_NAME))}",
        f"#SBATCH --job-name=genos-{plan.config.name}",
        f"#SBATCH --nodes={plan.nodes}",
        f"#SBATCH --ntasks-per-node={plan.num_processes}",
        gpu_line,
        f"#SBATCH --chdir={_quote(os.getcwd())}",
        f"#SBATCH --output={_quote(str(out / 'slurm-%j.out'))}",
        "set -euo pipefail",
        "",
        "# Rendezvous: every task meets rank 0 on the first node of the allocation.",
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export MASTER_PORT=$(( {cluster.PORT_BASE} + SLURM_JOB_ID % {cluster.PORT_SPAN} ))",
        "",
        "# One task per process; each is one rank of the same DeepSpeed run (genos reads",
        "# SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID).",
        f"srun --kill-on-bad-exit=1 {quoted}",
        "",
    ])  # fmt: skip


def write_sbatch(path: Path, script: str) -> None:
    from genos_cli.atomic import atomic_write, ensure_writable_dir

    ensure_writable_dir(path.parent, "output directory")
    with atomic_write(path, "w") as fh:
        fh.write(script)
    path.chmod(0o755)


def _quote(word: str) -> str:
    return word if word.startswith("${") else shlex.quote(word)  # ${VAR}: left to the shell


def shell_line(cmd: list[str]) -> str:
    return " ".join(_quote(c) for c in cmd)
