"""Where a run's processes are and what starts them: SLURM's node lists and variables,
torchrun's, the layout a hostfile or --nodes gives, the launch commands and the sbatch
script, and the micro-batch genos picks on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from genos_cli.config import load_config
from genos_cli.errors import GenosError
from genos_cli.train import cluster
from genos_cli.train.launch import launch_command, sbatch_script, srun_command, torchrun_command
from genos_cli.train.plan import TrainOptions, TrainPlan, auto_micro_batch, layout


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("gpu[01-02,05],login1", ["gpu01", "gpu02", "gpu05", "login1"]),
        ("a[008-010]", ["a008", "a009", "a010"]),  # zero padding kept across a decade
        ("n[1-2]-ib[0-1]", ["n1-ib0", "n1-ib1", "n2-ib0", "n2-ib1"]),
        ("x1,y[3,1]", ["x1", "y3", "y1"]),  # the order SLURM gives
        ("c-[9-10]-z", ["c-9-z", "c-10-z"]),
    ],
)
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert cluster.expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[1-", "node[a-b]", "node[3-1]", "", "n]1["])
def test_expand_nodelist_refuses_what_it_cannot_read(bad: str) -> None:
    with pytest.raises(GenosError, match="node list"):
        cluster.expand_nodelist(bad)


def test_first_host_without_scontrol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    assert cluster.first_host("gpu[07-09],cpu1") == "gpu07"


def test_tasks_per_node() -> None:
    assert cluster.tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert cluster.tasks_per_node("4") == [4]
    with pytest.raises(GenosError):
        cluster.tasks_per_node("two")


SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
    "SLURM_JOB_NODELIST": "gpu[12-13]",
}


def test_detect_an_srun_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    rank = cluster.detect(SLURM_TASK)
    assert rank == cluster.RankEnv("slurm", 5, 8, 1, 4, "gpu12", 10_000 + 4242)
    assert rank.nodes == 2
    env: dict[str, str] = {"MASTER_ADDR": "set-by-the-script"}
    cluster.export_torch_env(rank, env)
    assert env["RANK"] == "5" and env["WORLD_SIZE"] == "8" and env["LOCAL_RANK"] == "1"
    assert env["MASTER_ADDR"] == "set-by-the-script"  # an sbatch script's own wins
    assert env["MASTER_PORT"] == "14242"
    # The batch script itself (no step) is not a rank; nor is a plain shell.
    batch = {k: v for k, v in SLURM_TASK.items() if k != "SLURM_STEP_ID"}
    assert cluster.detect(batch) is None
    assert cluster.detect({}) is None


def test_detect_torchrun_and_its_precedence() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "h", "MASTER_PORT": "1234", **SLURM_TASK}  # fmt: skip
    rank = cluster.detect(env)
    assert rank == cluster.RankEnv("torchrun", 1, 4, 1, 2, None, None) and rank.nodes == 2
    # genos's own one-process group sets RANK=0, WORLD_SIZE=1: no launched job.
    assert cluster.detect({"RANK": "0", "WORLD_SIZE": "1"}) is None
    with pytest.raises(GenosError, match="WORLD_SIZE"):
        cluster.detect({"RANK": "0", "WORLD_SIZE": "many"})
    with pytest.raises(GenosError, match="MASTER_ADDR"):
        cluster.export_torch_env(cluster.RankEnv("torchrun", 0, 2, 0, 2, None, None), {})


def test_slurm_port_is_the_jobs() -> None:
    assert cluster.slurm_port("123") == cluster.slurm_port("123") == 10_123
    assert cluster.slurm_port("50123") == 10_123  # wraps within the range
    assert 10_000 <= cluster.slurm_port("77_3") < 60_000  # array jobs


def _hostfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts"
    path.write_text(text)
    return path


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside any torchrun / srun job, on a machine without GPUs."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("no_launcher_env")
def test_unequal_hostfile_slots_give_the_sum(tmp_path: Path) -> None:
    hostfile = _hostfile(tmp_path, "node1 slots=4\nnode2 slots=2  # smaller\n# node3 slots=8\n")
    where = layout(TrainOptions(hostfile=hostfile))
    assert where.node_processes == [4, 2] and where.num_processes == 4
    plan = _plan(num_processes=4, node_processes=[4, 2], hostfile=hostfile)
    assert plan.world_size == 6 and plan.nodes == 2
    # DeepSpeed's --num_gpus N would run N on every host: left out, each host runs its slots.
    assert "--num_gpus" not in launch_command(Path("p.json"), plan, master_port=1)
    # --num-gpus given: that many on every host, as DeepSpeed does.
    assert layout(TrainOptions(hostfile=hostfile, num_processes=2)).node_processes == [2, 2]
    with pytest.raises(GenosError, match="same number of processes on every node"):
        layout(TrainOptions(hostfile=hostfile, launcher="torchrun"))
    bad = _hostfile(tmp_path, "node1 slots=zero\n")
    with pytest.raises(GenosError, match="line 1"):
        layout(TrainOptions(hostfile=bad))


@pytest.mark.usefixtures("no_launcher_env")
def test_layout_options_that_contradict_each_other() -> None:
    assert (
        layout(TrainOptions(launcher="slurm", nodes=4, num_processes=8)).node_processes == [8] * 4
    )
    for opts, needle in [
        (TrainOptions(nodes=2), "--nodes 2 needs --launcher slurm or torchrun"),
        (TrainOptions(launcher="none", num_processes=2), "runs one process"),
        (TrainOptions(num_processes=0), "at least 1"),
        (TrainOptions(launcher="slurm", hostfile=Path("h")), "SLURM places the processes"),
    ]:
        with pytest.raises(GenosError, match=needle):
            layout(opts)


def test_layout_under_a_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "h", "MASTER_PORT": "1"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    where = layout(TrainOptions())
    assert where.node_processes == [2, 2] and where.launched_by == "torchrun"
    with pytest.raises(GenosError, match="torchrun started 2 processes"):
        layout(TrainOptions(num_processes=4))
    with pytest.raises(GenosError, match="already a rank"):
        layout(TrainOptions(launcher="slurm"))


def _plan(**changes: object) -> TrainPlan:
    cfg = load_config("small")
    fields: dict[str, object] = {
        "config": cfg,
        "output_dir": Path("runs/x"),
        "checkpoint_dir": Path("runs/x/checkpoints"),
        "train_prefixes": [Path("d_train_text_document")],
        "tokenizer_kind": "bpe",
        "total_steps": 10,
    }
    fields.update(changes)
    return TrainPlan.model_validate(fields)


def test_torchrun_and_srun_commands_run_genos_train_on_every_rank(tmp_path: Path) -> None:
    args = ["--size", "small", "--max-steps", "5"]
    one = torchrun_command(_plan(num_processes=2), args)
    assert one[1:5] == ["-m", "torch.distributed.run", "--nproc-per-node", "2"]
    assert "--standalone" in one and one[-7:] == ["-m", "genos_cli", "train", *args]
    hostfile = _hostfile(tmp_path, "n1 slots=8\nn2 slots=8\n")
    two = torchrun_command(_plan(num_processes=8, node_processes=[8, 8], hostfile=hostfile), args)
    assert two[two.index("--nnodes") + 1] == "2" and two[two.index("--master-addr") + 1] == "n1"
    assert "${NODE_RANK}" in two
    srun = srun_command(_plan(num_processes=4, node_processes=[4, 4]), args)
    assert srun[:4] == ["srun", "--nodes=2", "--ntasks-per-node=4", "--kill-on-bad-exit=1"]


def test_sbatch_script() -> None:
    plan = _plan(num_processes=8, node_processes=[8] * 4, launcher="slurm")
    script = sbatch_script(plan, ["--size", "small", "--output-dir", "runs/x"], gpus=True)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --gpus-per-node=8"):  # fmt: skip
        assert line in lines
    assert any(ln.startswith("export MASTER_ADDR=$(scontrol show hostnames") for ln in lines)
    assert "export MASTER_PORT=$(( 10000 + SLURM_JOB_ID % 50000 ))" in lines
    (srun,) = [ln for ln in lines if ln.startswith("srun ")]
    assert srun.endswith("-m genos_cli train --size small --output-dir runs/x")
    # Written where no GPU is visible: the GPU request is there, commented out.
    cpu = sbatch_script(plan, [], gpus=False)
    assert "##SBATCH --gpus-per-node=8" in cpu


def test_auto_micro_batch_on_cpu() -> None:
    small = load_config("small")  # micro 64, global 512, 512-token sequences
    choice = auto_micro_batch(small, 1, device_type="cpu")
    assert choice is not None and (choice.size, choice.preset) == (8, 64)
    assert choice.describe(512, 64).startswith(
        "micro-batch 8 (auto: sized for cpu; global batch 512 kept, 64 accumulation steps"
    )
    assert auto_micro_batch(small, 1, device_type="cuda") is None  # presets are for GPUs
    # 128 processes: 4 sequences each, so 4 (a divisor of the rank's share).
    many = auto_micro_batch(small, 128, device_type="cpu")
    assert many is not None and many.size == 4
    longer = load_config("small", overrides={"model.max_seq_length": 2048})
    assert auto_micro_batch(longer, 1, device_type="cpu").size == 2  # type: ignore[union-attr]
    tiny_batch = load_config("small", overrides={"training.micro_batch_size": 4,
                                                 "training.global_batch_size": 8})  # fmt: skip
    assert auto_micro_batch(tiny_batch, 1, device_type="cpu") is None  # already small
