"""Numerical faults: a non-finite loss or gradient is caught at its step and handled by
`training.on_nan` — `stop` (the default) ends the run with an error naming the step, `skip`
drops that step's update with a warning — and nothing non-finite is ever trained on or
saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from genos_cli.train import trainer as trainer_module
from genos_cli.train.plan import TrainOptions, build_plan
from genos_cli.train.trainer import Trainer
from tests.helpers import genos
from tests.reliability.conftest import assert_train_error, latest_tag, log_records
from tests.tiny import TINY_OVERRIDES, TINY_TRAIN_ARGS, TINY_TRAINING

# Adam's first update at lr 1e30 makes the weights so large that the next backward pass
# overflows: a real, deterministic non-finite gradient (norm inf) at step 2.
EXPLODE = [*TINY_TRAIN_ARGS, "--lr", "1e30", "--save-interval", "1", "--eval-interval", "100"]


def test_stop_names_the_step_and_keeps_the_last_finite_checkpoint(
    tmp_path: Path, ecoli_data: Path
) -> None:
    run = tmp_path / "run"
    result = genos("train", *EXPLODE, "--data-path", ecoli_data, "--max-steps", "4",
                   "--output-dir", run)  # fmt: skip
    assert_train_error(result, "non-finite gradient norm inf at step 2", "--on-nan skip")
    assert latest_tag(run / "checkpoints") == "step_00000001"
    assert not (run / "checkpoints" / "step_00000002").exists()
    assert [r["step"] for r in log_records(run)] == [1]


def test_skip_gives_up_after_consecutive_skips(
    tmp_path: Path, ecoli_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_module, "MAX_NAN_SKIPS", 3)
    run = tmp_path / "run"
    result = genos("train", *EXPLODE, "--data-path", ecoli_data, "--max-steps", "8",
                   "--output-dir", run, "--on-nan", "skip")  # fmt: skip
    assert_train_error(result, "3 steps in a row (2 to 4)", "weights of step 1")
    warnings = log_records(run, "warning")
    assert [w["step"] for w in warnings] == [2, 3, 4]
    assert warnings[0]["grad_norm"] == "inf" and warnings[0]["event"] == "non_finite"
    assert [r["step"] for r in log_records(run)] == [1]  # skipped steps log no train record
    # Checkpoints taken while skipping hold step 1's weights, untouched.
    ckpt = run / "checkpoints"
    first = load_file(ckpt / "step_00000001" / "model.safetensors")
    third = load_file(ckpt / "step_00000003" / "model.safetensors")
    assert all(torch.equal(first[k], third[k]) for k in first)
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 3


def _trainer(run: Path, data: Path, **training: Any) -> Trainer:
    overrides: dict[str, Any] = dict(TINY_OVERRIDES)
    overrides.update({f"training.{k}": v for k, v in TINY_TRAINING.items()})
    overrides.update({"training.min_lr": 3e-4, "training.eval_interval": 100,
                      "training.save_interval": 100})  # fmt: skip
    overrides.update({f"training.{k}": v for k, v in training.items()})
    opts = TrainOptions(size="small", overrides=overrides, data_paths=[data], output_dir=run,
                        max_steps=4, compile=False)  # fmt: skip
    return Trainer(build_plan(opts))


def _snapshot(t: Trainer) -> list[torch.Tensor]:
    """Weights and every optimizer tensor (Adam's moments, ZeRO's fp32 partitions)."""
    tensors = [p.detach().clone() for p in t.runtime.module.parameters()]

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            tensors.append(obj.detach().clone())
        elif isinstance(obj, dict):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list | tuple):
            for value in obj:
                walk(value)

    walk(t.runtime.optimizer.state_dict())
    return tensors


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_skip_drops_exactly_the_bad_step(tmp_path: Path, ecoli_data: Path, zero_stage: int) -> None:
    """A NaN in one step's forward pass (ZeRO 1: DeepSpeed's optimizer skips the update;
    ZeRO 0: genos's own check does) leaves weights and optimizer state bit-identical, logs a
    warning naming the step, and training goes on."""
    t = _trainer(tmp_path / "run", ecoli_data, on_nan="skip", zero_stage=zero_stage)
    t.train_step()
    t.step += 1
    before = _snapshot(t)
    poison = t.runtime.module.lm_head.register_forward_hook(lambda m, i, out: out * float("nan"))
    metrics = t.train_step()
    poison.remove()
    t.step += 1
    assert metrics.skipped
    after = _snapshot(t)
    assert len(after) == len(before)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    [warning] = log_records(tmp_path / "run", "warning")
    assert warning["step"] == 2 and warning["loss"] == "nan"
    result = t.train()  # steps 3 and 4, then a checkpoint
    assert [r["step"] for r in log_records(tmp_path / "run")] == [3, 4]  # 1, 2 ran by hand
    assert result.final_loss is not None and result.final_loss < 5
    weights = load_file(tmp_path / "run" / "checkpoints" / "step_00000004" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_on_nan_reaches_the_config(tmp_path: Path) -> None:
    result = genos("train", "--size", "small", "--dry-run", "--on-nan", "skip",
                   "--output-dir", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "on_nan: skip" in result.stdout
    assert "--on-nan" in genos("train", "--help").stdout
