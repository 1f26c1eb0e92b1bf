"""`kill -9` a `genos train` run mid-step and mid-checkpoint-write: `--resume` continues
from the last complete checkpoint, a half-written checkpoint is never taken for the latest,
and the resumed run's losses are those of a run never interrupted."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from genos_cli.checkpoint import latest, resolve
from tests.reliability.conftest import (
    RUN,
    kill,
    latest_tag,
    log_records,
    run_genos,
    start,
    wait_until,
)

pytestmark = pytest.mark.slow  # kills and resumes `genos train` child processes


def assert_same_losses(run: Path, reference: Path) -> None:
    """Every record of `run` (both sessions, steps logged twice included) equals the
    uninterrupted run's record of that step, bit for bit."""
    for kind, key in (("train", "loss"), ("eval", "val_loss")):
        expected = {r["step"]: r[key] for r in log_records(reference, kind)}
        got = [(r["step"], r[key]) for r in log_records(run, kind)]
        assert {step for step, _ in got} == set(expected), kind
        for step, value in got:
            assert value == expected[step], (kind, step, value, expected[step])


def test_kill_mid_step_then_resume(tmp_path: Path, ecoli_data: Path, reference_run: Path) -> None:
    run = tmp_path / "run"
    args = ["train", *RUN, "--data-path", ecoli_data, "--save-interval", "4", "--output-dir", run]
    proc = start(*args)
    # Step 5 is logged: the checkpoint of step 4 is complete, step 6 is being computed.
    wait_until(lambda: any(r["step"] == 5 for r in log_records(run)), proc, "step 5 was logged")
    kill(proc)
    assert proc.returncode == -signal.SIGKILL
    checkpoints = run / "checkpoints"
    assert latest_tag(checkpoints) == "step_00000004"
    assert not (checkpoints / "step_00000008").exists()

    run_genos(*args, "--resume")
    assert_same_losses(run, reference_run)
    assert latest_tag(checkpoints) == "step_00000008"


# Fault injection, in this test file only: run the CLI with the consolidated-model writer
# replaced by one that writes half the model file of step N, signals, and waits to be killed.
# DeepSpeed's files of that checkpoint are complete by then; genos.json and latest.json are not.
HANG_IN_SAVE = r"""
import sys, time
from pathlib import Path
from genos_cli.atomic import temp_beside
from genos_cli.checkpoint import training

step, marker = int(sys.argv[1]), Path(sys.argv[2])
write = training.write_consolidated

def write_half_then_hang(directory, state_dict, config, tokenizer, meta):
    if meta["step"] != step:
        return write(directory, state_dict, config, tokenizer, meta)
    with temp_beside(directory / "model.safetensors") as fh:
        fh.write(bytes(100_000))
        fh.flush()
        marker.write_text(str(directory))
        time.sleep(600)

training.write_consolidated = write_half_then_hang
from genos_cli.cli.app import main
sys.argv = ["genos", *sys.argv[3:]]
main()
"""


def test_kill_mid_checkpoint_write_then_resume(
    tmp_path: Path, ecoli_data: Path, reference_run: Path
) -> None:
    run, marker = tmp_path / "run", tmp_path / "saving"
    args = ["train", *RUN, "--data-path", ecoli_data, "--save-interval", "2", "--output-dir", run]
    proc = start("4", marker, *args, wrapper=HANG_IN_SAVE)
    wait_until(lambda: marker.is_file() and marker.read_text() != "", proc, "the save began")
    kill(proc)
    checkpoints = run / "checkpoints"
    partial = Path(marker.read_text())
    assert partial.name == ".step_00000004.partial"  # DeepSpeed's files and half a model
    assert (partial / "mp_rank_00_model_states.pt").is_file()
    assert any(p.name.startswith(".model.safetensors.") for p in partial.iterdir())
    # The half-written checkpoint is invisible: latest is the previous one, for resuming
    # and for `genos eval` alike.
    assert latest_tag(checkpoints) == "step_00000002"
    assert not (checkpoints / "step_00000004").exists()
    assert latest(checkpoints) == checkpoints / "step_00000002"
    assert resolve(run) == checkpoints / "step_00000002"

    run_genos(*args, "--resume")
    assert_same_losses(run, reference_run)
    # Step 4 was saved again, whole; nothing the kill left remains (2 was pruned: keep 3).
    names = sorted(p.name for p in checkpoints.iterdir() if p.name != "zero_to_fp32.py")
    assert names == ["latest.json", "step_00000004", "step_00000006", "step_00000008",
                     "zero_to_torch.py"]  # fmt: skip
    assert (checkpoints / "step_00000004" / "genos.json").is_file()
