"""Which job this process is a rank of, when something else started it: torchrun (or any
launcher that sets torch's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT), or
SLURM's `srun` (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID / SLURM_JOB_NODELIST).

`genos train` run as one of those processes does not launch anything: every process builds
the same plan and runs `run_training` in itself, so `torchrun --nproc-per-node 2 -m genos_cli
train ...` and `srun genos train ...` are one DeepSpeed run over all of them. DeepSpeed (and
`torch.distributed`'s env:// rendezvous) read torch's variables, so a SLURM task gets them
derived from SLURM's (`export_torch_env`): rank = SLURM_PROCID, world = the step's tasks,
local rank = SLURM_LOCALID, MASTER_ADDR = the first host of the job's node list (via
`scontrol show hostnames`, else genos's own parser of SLURM's compact syntax), MASTER_PORT =
a port derived from the job id, so every task of the job computes the same one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Literal

from genos_cli.errors import GenosError

Source = Literal["torchrun", "slurm"]
TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# MASTER_PORT = PORT_BASE + job id mod PORT_SPAN: the same on every task of a job, and two
# jobs sharing a node rarely collide (PyTorch Lightning's SLURM environment does the same).
PORT_BASE, PORT_SPAN = 10_000, 50_000


@dataclass(frozen=True)
class RankEnv:
    """This process's place in a job something else launched."""

    source: Source
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int  # processes on this node
    master_addr: str | None  # None: left as the environment has it
    master_port: int | None

    @property
    def nodes(self) -> int:
        return max(1, math.ceil(self.world_size / max(1, self.local_world_size)))


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise GenosError(f"${name} is {value!r}, not a whole number") from None


def tasks_per_node(spec: str) -> list[int]:
    """SLURM's tasks-per-node syntax ('2(x3),1' = 2, 2, 2, 1) as a list."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise GenosError(f"cannot read SLURM's tasks per node {spec!r}")
        out += [int(m[1])] * int(m[2] or 1)
    return out


def in_slurm_step(env: Mapping[str, str]) -> bool:
    """A task `srun` started (the batch script itself has SLURM_PROCID too, but no step)."""
    return "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env)


def in_slurm_allocation(env: Mapping[str, str]) -> bool:
    return "SLURM_JOB_ID" in env or "SLURM_JOBID" in env


def detect(env: Mapping[str, str] | None = None) -> RankEnv | None:
    """This process's rank when a launcher started it, else None (a plain `genos train`).

    torch's variables win (torchrun, DeepSpeed's launcher, `srun torchrun ...`); otherwise an
    `srun` task's SLURM variables. The batch script of an sbatch job is not a rank: it has
    SLURM_PROCID but no step, and starts the ranks with srun. A world of one process is no
    launched job (a one-process run trains here either way; genos's own one-process group
    sets these variables too).
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env and env["WORLD_SIZE"] != "1":
        world = _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        local_world = (
            _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env
            else _int(env, "LOCAL_SIZE") if "LOCAL_SIZE" in env
            else world
        )  # fmt: skip
        return RankEnv("torchrun", _int(env, "RANK"), world, local, local_world, None, None)
    if not in_slurm_step(env):
        return None
    world_var = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    if world_var not in env:
        raise GenosError("SLURM_PROCID is set but neither SLURM_STEP_NUM_TASKS nor SLURM_NTASKS")
    world = _int(env, world_var)
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    local_world = max(tasks_per_node(spec)) if spec else world
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "0"
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    return RankEnv(
        "slurm",
        rank=_int(env, "SLURM_PROCID"),
        world_size=world,
        local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
        local_world_size=local_world,
        master_addr=first_host(nodelist),
        master_port=slurm_port(job),
    )


def slurm_port(job_id: str) -> int:
    """The rendezvous port of a SLURM job: the same for every task, from the job id."""
    digits = re.sub(r"\D", "", job_id) or "0"  # array jobs: 1234_5
    return PORT_BASE + int(digits) % PORT_SPAN


def export_torch_env(rank: RankEnv, env: MutableMapping[str, str] | None = None) -> None:
    """Set torch's variables for `rank` (what DeepSpeed's and torch's env:// init read);
    MASTER_ADDR / MASTER_PORT already set (an sbatch script's own) are kept."""
    env = os.environ if env is None else env
    env.update(
        RANK=str(rank.rank),
        WORLD_SIZE=str(rank.world_size),
        LOCAL_RANK=str(rank.local_rank),
        LOCAL_SIZE=str(rank.local_world_size),
        LOCAL_WORLD_SIZE=str(rank.local_world_size),
    )
    if rank.master_addr is not None:
        env.setdefault("MASTER_ADDR", rank.master_addr)
    if rank.master_port is not None:
        env.setdefault("MASTER_PORT", str(rank.master_port))
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in env]
    if missing:
        raise GenosError(
            f"{rank.source} set RANK and WORLD_SIZE but not {' or '.join(missing)}: "
            "the processes cannot meet"
        )


# -- SLURM node lists -------------------------------------------------------------------------


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `scontrol show hostnames` where SLURM's tools
    are installed (the authority), else genos's parser of the compact syntax."""
    scontrol = shutil.which("scontrol")
    if scontrol is not None:
        try:
            out = subprocess.run(
                [scontrol, "show", "hostnames", nodelist],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.split()  # fmt: skip
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return expand_nodelist(nodelist)[0]


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: 'a[1,2],b' -> ['a[1,2]', 'b']."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _range(body: str, nodelist: str) -> list[str]:
    """The members of one bracket: '01-03,7' -> ['01', '02', '03', '7'] (widths kept)."""
    out: list[str] = []
    for part in body.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise GenosError(f"cannot read the SLURM node list {nodelist!r} (at {part!r})")
        lo, hi = m[1], m[2] if m[2] is not None else m[1]
        if int(hi) < int(lo):
            raise GenosError(f"cannot read the SLURM node list {nodelist!r} ({lo}-{hi})")
        out += [f"{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1)]
    return out


def _expand_one(expr: str, nodelist: str) -> list[str]:
    m = re.search(r"\[([^\[\]]*)\]", expr)
    if m is None:
        if "[" in expr or "]" in expr:
            raise GenosError(f"cannot read the SLURM node list {nodelist!r} (unbalanced '[')")
        return [expr]
    head, tail = expr[: m.start()], expr[m.end() :]
    return [head + mid + rest for mid in _range(m[1], nodelist)
            for rest in _expand_one(tail, nodelist)]  # fmt: skip


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compact host list as host names, in order: 'gpu[01-02,05],login1' ->
    gpu01, gpu02, gpu05, login1; several brackets in one name multiply
    ('n[1-2]-ib[0-1]' -> n1-ib0, n1-ib1, n2-ib0, n2-ib1); zero padding is kept."""
    if _split_top_level(nodelist) and nodelist.count("[") != nodelist.count("]"):
        raise GenosError(f"cannot read the SLURM node list {nodelist!r} (unbalanced '[')")
    hosts = [h for expr in _split_top_level(nodelist) for h in _expand_one(expr, nodelist)]
    if not hosts:
        raise GenosError(f"the SLURM node list {nodelist!r} names no host")
    return hosts
