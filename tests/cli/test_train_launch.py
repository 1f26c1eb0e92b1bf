"""`genos train` where users run it: --launcher (dry runs, the sbatch file, refusals), the same
run through DeepSpeed's launcher, torchrun and SLURM tasks, the micro-batch genos picks, the
environment variables, and the options' clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_train import records
from tests.helpers import assert_user_error, genos
from tests.tiny import TINY_TRAIN_ARGS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache without the embedded data set: dry runs must not prepare it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENOS_CACHE_DIR", str(cache))
    return cache


def test_slurm_dry_run_writes_a_ready_sbatch_file(tmp_path: Path, no_cache: Path) -> None:
    out = tmp_path / "run"
    result = genos("train", "--size", "small", "--launcher", "slurm", "--nodes", "4",
                   "--num-gpus", "8", "--dry-run", "--output-dir", out,
                   "--max-steps", "100")  # fmt: skip
    assert result.exit_code == 0, result.output
    script = (out / "train.sbatch").read_text()
    assert f"# sbatch script (written to {out / 'train.sbatch'})" in result.stdout
    assert "#SBATCH --nodes=4" in script and "#SBATCH --ntasks-per-node=8" in script
    assert "MASTER_ADDR=$(scontrol show hostnames" in script
    (srun,) = [ln for ln in script.splitlines() if ln.startswith("srun ")]
    # Every task runs genos train with the options given, less those that place processes.
    assert srun.endswith(f"-m genos_cli train --size small --output-dir {out} --max-steps 100")
    assert "processes: 32 on 4 nodes" in result.stdout
    assert f"sbatch {out / 'train.sbatch'}" in result.stdout
    assert os.access(out / "train.sbatch", os.X_OK)
    assert sorted(p.name for p in out.iterdir()) == ["train.sbatch"]  # nothing else
    assert not (no_cache / "data").exists()


def test_torchrun_dry_run_and_the_micro_batch_genos_picks(tmp_path: Path, no_cache: Path) -> None:
    out = tmp_path / "run"
    result = genos("train", "--size", "small", "--launcher", "torchrun", "--num-gpus", "2",
                   "--dry-run", "--output-dir", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    command = result.stdout.split("# launch command")[1]
    assert "-m torch.distributed.run --nproc-per-node 2 --standalone -m genos_cli train" in command
    # No --micro-batch-size on a CPU: 8, the fastest here, and the global batch stays 512.
    assert "micro-batch 8 (auto: sized for cpu; global batch 512 kept, 32 accumulation" in (
        " ".join(result.stdout.split())
    )
    assert '"train_micro_batch_size_per_gpu": 8' in result.stdout
    given = genos("train", "--size", "small", "--micro-batch-size", "16", "--dry-run",
                  "--output-dir", out)  # fmt: skip
    assert '"train_micro_batch_size_per_gpu": 16' in given.stdout and "auto:" not in given.stdout
    assert not out.exists()


def test_a_global_batch_below_the_presets_micro_batch(tmp_path: Path, no_cache: Path) -> None:
    """--global-batch-size 16 without --micro-batch-size works with the small preset (whose
    micro-batch is 64): the micro-batch follows the global batch (then the CPU's size)."""
    out = tmp_path / "run"
    args = ["train", "--size", "small", "--global-batch-size", "16", "--dry-run"]
    result = genos(*args, "--output-dir", out, "--launcher", "none")
    assert result.exit_code == 0, result.output
    assert '"train_micro_batch_size_per_gpu": 8' in result.stdout
    assert "micro-batch 8 (auto: sized for cpu; global batch 16 kept, 2 accumulation" in (
        " ".join(result.stdout.split())
    )
    odd = genos("train", "--size", "small", "--global-batch-size", "24", "--micro-batch-size",
                "64", "--dry-run", "--output-dir", out)  # fmt: skip
    assert_user_error(odd, "global_batch_size (24) must be a multiple of micro_batch_size (64)")
    assert not out.exists()


def test_output_and_cache_dirs_from_the_environment(
    tmp_path: Path, no_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENOS_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    result = genos("train", "--size", "small", "--dry-run")
    assert result.exit_code == 0, result.output
    flat = "".join(result.stdout.split())
    assert f"output:{tmp_path / 'elsewhere' / 'small_8m'}" in flat
    assert f"data:{no_cache / 'data'}" in flat  # the embedded genome's cache
    help_text = " ".join(genos("train", "--help").stdout.split())
    for name in ("GENOS_CACHE_DIR", "GENOS_OUTPUT_DIR", "WANDB_API_KEY", "SLURM_PROCID"):
        assert name in help_text


def test_launcher_errors(tmp_path: Path, ecoli_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "x"
    common = [*TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--output-dir", out]
    assert_user_error(genos("train", *common, "--launcher", "slurm"), "not a SLURM job", "sbatch")
    assert_user_error(genos("train", *common, "--nodes", "2"), "--nodes 2 needs --launcher")
    assert_user_error(
        genos("train", *common, "--launcher", "torchrun", "--nodes", "2"),
        "torchrun starts one node's processes",
    )
    assert_user_error(
        genos("train", *common, "--engine", "megatron", "--launcher", "slurm", "--dry-run"),
        "--engine megatron",
    )
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.multiproc
def test_torchrun_and_slurm_tasks_match_deepspeeds_launcher(
    tmp_path: Path, ecoli_data: Path
) -> None:
    """The same 2-process run started three ways — DeepSpeed's launcher (genos starts it),
    torchrun running `genos train` twice, and two `genos train` processes with the variables
    srun sets — is one DeepSpeed run each time: the same loss curve and evaluation."""
    common = [*TINY_TRAIN_ARGS, "--data-path", str(ecoli_data), "--max-steps", "4",
              "--zero-stage", "2", "--eval-interval", "4", "--save-interval", "4"]  # fmt: skip
    result = genos("train", *common, "--num-gpus", "2", "--output-dir", tmp_path / "ds")
    assert result.exit_code == 0, result.output

    env = _clean_env()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--standalone", "-m", "genos_cli", "train", *common,
                "--output-dir", str(tmp_path / "torchrun")]  # fmt: skip
    done = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    job = _job_id_with_free_port()
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "genos_cli", "train", *common,
             "--output-dir", str(tmp_path / "slurm")],
            env={**env, "SLURM_JOB_ID": str(job), "SLURM_STEP_ID": "0", "SLURM_PROCID": str(i),
                 "SLURM_LOCALID": str(i), "SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "2",
                 "SLURM_JOB_NODELIST": "localhost"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    outputs = [task.communicate(timeout=600)[0] for task in tasks]
    assert [t.returncode for t in tasks] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    reference = records(tmp_path / "ds")
    assert [r["world_size"] for r in reference] == [2] * 4
    for how in ("torchrun", "slurm"):
        run = tmp_path / how
        assert [r["world_size"] for r in records(run)] == [2] * 4, how
        for a, b in zip(reference, records(run), strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-6), how
        e1, e2 = records(tmp_path / "ds", "eval"), records(run, "eval")
        assert e2[-1]["val_loss"] == pytest.approx(e1[-1]["val_loss"], rel=1e-6), how
        plan = json.loads((run / "run_plan.json").read_text())
        assert plan["launched_by"] == how and plan["node_processes"] == []
        assert (run / "checkpoints/step_00000004/model.safetensors").is_file()


_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE",
                "MASTER_ADDR", "MASTER_PORT")  # fmt: skip


def _clean_env() -> dict[str, str]:
    """This process's environment less what an in-process run or a job left in it, with
    this checkout importable and one thread per process."""
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCH_VARS and not k.startswith("SLURM_")}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO),
                                                      env.get("PYTHONPATH")]))  # fmt: skip
    env["OMP_NUM_THREADS"] = "1"
    return env


def _job_id_with_free_port() -> int:
    """A SLURM job id whose rendezvous port (10000 + id mod 50000) is free here."""
    from genos_cli.train.runtime import free_port

    for _ in range(100):
        port = free_port()
        if 10_000 <= port < 60_000:
            return port - 10_000
    raise AssertionError("no free port in 10000-59999")
