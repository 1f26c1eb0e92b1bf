"""The GPU path, proven where the logic allows on this CPU machine (DeepSpeed runs bf16 on
CPU too): bf16 training follows fp32 and saves the fp32 master weights; a training step
makes no host sync of genos's own; the data loader works ahead of the compute."""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from genos_cli.train.plan import TrainOptions, build_plan
from genos_cli.train.trainer import Trainer
from tests.helpers import genos
from tests.tiny import TINY_OVERRIDES, TINY_TRAIN_ARGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train_records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "training_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "train"]


# Four micro-batches per step (micro 2, global 8): the accumulation DeepSpeed's bf16
# optimizer got wrong while genos's outputs were a dataclass it could not hook.
BF16_RUN = [*TINY_TRAIN_ARGS, "--micro-batch-size", "2", "--global-batch-size", "8",
            "--max-steps", "4", "--save-interval", "4", "--eval-interval", "100"]  # fmt: skip


@pytest.mark.slow
def test_bf16_follows_fp32_and_saves_the_fp32_masters(tmp_path: Path, ecoli_data: Path) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = tmp_path / precision
        result = genos("train", *BF16_RUN, "--precision", precision, "--data-path", ecoli_data,
                       "--output-dir", runs[precision])  # fmt: skip
        assert result.exit_code == 0, result.output
    fp32, bf16 = (_train_records(runs[p]) for p in ("fp32", "bf16"))
    assert [r["step"] for r in bf16] == [1, 2, 3, 4]
    for a, b in zip(fp32, bf16, strict=True):
        # bf16 rounds activations: the same run to ~1e-3 (measured: ~1e-4 on these steps).
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-2)
        # The gradient norm, accumulated in fp32 over the 4 micro-batches, is fp32's to a few
        # percent; with the micro-batches mis-accumulated it was (4+1)/2 = 2.5x too large.
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=3e-2)

    step = runs["bf16"] / "checkpoints" / "step_00000004"
    saved = load_file(step / "model.safetensors")
    masters = _bf16_optimizer_masters(step / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert set(saved) == set(masters)
    for name, weight in saved.items():
        assert weight.dtype == torch.float32
        assert torch.equal(weight.reshape(-1), masters[name]), name
    # ... and not the bf16 copies the module computes with (those are the masters, rounded).
    module = torch.load(step / "mp_rank_00_model_states.pt", map_location="cpu",
                        weights_only=False)["module"]  # fmt: skip
    assert all(module[k].dtype == torch.bfloat16 for k in saved)
    assert any(not torch.equal(saved[k], module[k].float()) for k in saved)
    assert all(torch.equal(module[k], saved[k].bfloat16()) for k in saved)


def _bf16_optimizer_masters(path: Path) -> dict[str, torch.Tensor]:
    """The fp32 master of every parameter, read from DeepSpeed's own bf16 optimizer file
    (its flat fp32 partition and the parameter -> slice map): an independent reader."""
    state = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
    masters = {}
    for flat, mapping in zip(state["single_partition_of_fp32_groups"],
                             state["param_slice_mappings"], strict=True):  # fmt: skip
        for name, fragment in mapping.items():
            masters[name] = flat[fragment.start : fragment.start + fragment.numel]
    return masters


# -- host syncs ----------------------------------------------------------------------------------


# Reads of tensors that are host copies by construction (on a GPU as here): not syncs.
HOST_READS = {"_group_bounds"}  # genos_cli.model.moe: the CPU copy of the expert bounds


class _SyncCounter(TorchDispatchMode):
    """Counts host syncs by who asked: `aten._local_scalar_dense` (item(), float(), bool()
    of a tensor) and Tensor.cpu() / .tolist() / .numpy() (device-to-host copies on a GPU),
    attributed to genos or DeepSpeed by the innermost frame of either package."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.where: list[str] = []

    def record(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # the data loader's thread works on host arrays: no device to wait for
        for frame in reversed(traceback.extract_stack()[:-2]):
            if frame.name in HOST_READS:
                return
            if "deepspeed" in frame.filename:
                self.calls["deepspeed"] += 1
                return
            if "genos_cli" in frame.filename:
                self.calls["genos"] += 1
                self.where.append(f"{Path(frame.filename).name}:{frame.lineno} {frame.line}")
                return

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            self.record()
        return func(*args, **(kwargs or {}))


@contextmanager
def counting_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SyncCounter]:
    counter = _SyncCounter()
    for name in ("cpu", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *a, _original=original, **k):  # type: ignore[no-untyped-def]
            counter.record()
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    with counter:
        yield counter
    monkeypatch.undo()


def _trainer(run: Path, data: Path, **training: Any) -> Trainer:
    overrides = dict(TINY_OVERRIDES)
    overrides.update({"training.micro_batch_size": 2, "training.global_batch_size": 4,
                      "training.eval_interval": 100, "training.save_interval": 100,
                      "training.log_interval": 3})  # fmt: skip
    overrides.update({f"training.{k}": v for k, v in training.items()})
    opts = TrainOptions(size="small", overrides=overrides, data_paths=[data], output_dir=run,
                        max_steps=6, compile=False)  # fmt: skip
    return Trainer(build_plan(opts))


def test_a_training_step_makes_no_host_sync_of_its_own(
    tmp_path: Path, ecoli_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metrics stay on the device between log intervals: per step, genos's only host reads
    are the per-expert loop's bounds (one per MoE layer and micro-batch, made for the fp32
    loop that runs here; none on a CUDA bf16 run, whose grouped GEMM needs no bounds), and a
    log interval adds exactly one read."""
    trainer = _trainer(tmp_path / "run", ecoli_data)
    layers, accum = trainer.cfg.model.num_layers, trainer.grad_accum
    assert accum == 2
    batches = [trainer.batches.batches(s) for s in range(4)]
    trainer.train_step(batches[0])  # warm-up: first-call allocations, DeepSpeed's setup
    trainer.step += 1
    per_step = []
    for s in (1, 2):
        with counting_syncs(monkeypatch) as syncs:
            trainer.train_step(batches[s])
        trainer.step += 1
        per_step.append(syncs)
    for syncs in per_step:
        assert syncs.calls["genos"] == layers * accum, syncs.where
        assert all("moe.py" in w for w in syncs.where), syncs.where
        # DeepSpeed's ZeRO-1 step reads its overflow flag and gradient norm itself; that is
        # its budget, not genos's (a few reads per optimizer step, none per micro-batch).
        assert syncs.calls["deepspeed"] <= 4, syncs.calls
    from genos_cli.train.trainer import LogWindow

    window = LogWindow()
    window.add(trainer.train_step(batches[3]), 4)
    trainer.step += 1
    with counting_syncs(monkeypatch) as syncs:
        trainer.read_window(window)
    assert syncs.calls["genos"] == 1, syncs.where  # one transfer for the whole window


# -- data loading ------------------------------------------------------------------------------


def test_the_loader_builds_the_next_batches_during_the_current_step(
    tmp_path: Path, ecoli_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(tmp_path / "run", ecoli_data, log_interval=100)
    built: dict[int, float] = {}
    steps: list[tuple[int, float, float]] = []
    batches_of = trainer.batches.batches

    def recording_batches(step: int):  # type: ignore[no-untyped-def]
        out = batches_of(step)
        built.setdefault(step, time.perf_counter())
        return out

    forward_backward = trainer.forward_backward

    def slow_compute(micro_batches):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        time.sleep(0.3)  # a GPU step: the host is free meanwhile
        out = forward_backward(micro_batches)
        steps.append((trainer.step, start, time.perf_counter()))
        return out

    monkeypatch.setattr(trainer.batches, "batches", recording_batches)
    monkeypatch.setattr(trainer, "forward_backward", slow_compute)
    trainer.train()
    assert [s for s, _, _ in steps] == list(range(6))
    # While step s computes, the batches of step s + 1 are built (up to 2 steps ahead).
    for step, start, end in steps[:-1]:
        assert built[step + 1] < end, (step, built[step + 1] - start)
    assert all(built[s + 1] < start for s, start, _ in steps[1:-1])  # ready before needed
