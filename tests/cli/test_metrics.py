"""`genos metrics` through the CLI: on the log of a real (tiny) `genos train` run, on logs
being written (no log yet, a half-written line), on runs resumed and compared side by side,
and the errors a user gets."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from genos_cli.telemetry import system
from tests.helpers import assert_user_error, genos
from tests.tiny import TINY_TRAIN_ARGS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # The same cache test_cli_train uses: the embedded genome is prepared once per session.
    cache = tmp_path_factory.getbasetemp() / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """12 steps of a tiny model on the embedded E. coli genome, evaluated at 6 and 12, with
    MFU against a given peak (so it is an exact function of the logged tokens/s)."""
    run = tmp_path_factory.mktemp("metrics") / "run"
    result = genos("train", *TINY_TRAIN_ARGS, "--max-steps", "12", "--eval-interval", "6",
                   "--save-interval", "12", "--peak-tflops", "0.05",
                   "--output-dir", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same output on machines with and without an NVIDIA GPU: the CPU fallback, with
    # real psutil readings. (Tests that want GPUs install a recorded sampler instead.)
    monkeypatch.setattr(system, "open_gpu_sampler", lambda: (None, "no driver in this test"))


# -- a real run -----------------------------------------------------------------------------


def test_train_logs_mfu_against_the_given_peak(real_run: Path) -> None:
    train = [r for r in log_records(real_run) if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    for r in train:
        assert r["peak_flops"] == 0.05e12
        assert r["flops_per_token"] > 0
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"] / 0.05e12)


def test_watch_once_on_a_real_run(real_run: Path) -> None:
    result = genos("metrics", "watch", real_run, "--once")
    assert result.exit_code == 0, result.output
    out = result.stdout
    records = log_records(real_run)
    last = [r for r in records if r["type"] == "train"][-1]
    last_eval = [r for r in records if r["type"] == "eval"][-1]
    assert out.count("no NVIDIA GPU (no driver in this test)") == 1
    assert "% of " in out and " cores" in out and "load" in out  # the CPU fallback
    assert "12 / 12  (100.0%)   12,288 tokens" in out and "finished" in out
    assert f"{last['loss']:.4f}" in out
    assert f"{last['tokens_per_s']:,.0f} tokens/s" in out
    assert f"MFU {100 * last['mfu']:.2f}%" in out  # the log's own figure
    assert f"{last_eval['val_bits_per_base']:.4f} bits/base (step 12)" in out
    spark = next(line for line in out.splitlines() if line.strip().startswith("loss"))
    assert sum(ch in "▁▂▃▄▅▆▇█" for ch in spark) == 12  # one block per logged step

    # --peak-tflops recomputes MFU with the same function: 10x the peak, a tenth of the MFU.
    result = genos("metrics", "watch", real_run, "--once", "--peak-tflops", "0.5")
    assert f"MFU {10 * last['mfu']:.2f}% (of 0.5 TFLOP/s/device)" in result.stdout


def test_watch_once_waits_for_a_run_that_has_not_started(tmp_path: Path) -> None:
    result = genos("metrics", "watch", tmp_path, "--once")
    assert result.exit_code == 0, result.output
    assert "waiting for training_log.jsonl (the run has not started yet)" in result.stdout


def test_watch_once_shows_the_complete_records_of_a_log_being_written(
    real_run: Path, tmp_path: Path
) -> None:
    lines = (real_run / "training_log.jsonl").read_text().splitlines(keepends=True)
    train_lines = [line for line in lines if '"type":"train"' in line]
    run = tmp_path / "run"
    run.mkdir()
    # Five complete records, then the sixth cut in the middle, as a reader can meet it.
    (run / "training_log.jsonl").write_text("".join(train_lines[:5]) + train_lines[5][:40])
    result = genos("metrics", "watch", run, "--once")
    assert result.exit_code == 0, result.output
    assert "5 / 12  (41.7%)" in result.stdout
    assert f"{json.loads(train_lines[4])['loss']:.4f}" in result.stdout
    assert "unreadable" not in result.stdout


def test_watch_once_renders_recorded_gpu_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readings = [system.GpuSample(0, "NVIDIA H200", 93.0, 120_000.0, 143_771.0, 71.0, 655.0,
                                 700.0, 1_830.0)]  # fmt: skip
    recorded = system.RecordedGpuSampler([readings])
    monkeypatch.setattr(system, "open_gpu_sampler", lambda: (recorded, None))
    result = genos("metrics", "watch", "--once")
    assert result.exit_code == 0, result.output
    row = next(line.split() for line in result.stdout.splitlines() if "H200" in line)
    assert row == ["0", "NVIDIA", "H200", "93%", "120,000", "/", "143,771", "71°C", "655", "/",
                   "700", "1,830"]  # fmt: skip
    assert "no NVIDIA GPU" not in result.stdout and "load" not in result.stdout


def test_watch_follows_a_growing_log_until_ctrl_c(
    real_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live loop: a log that appears and grows between frames, then Ctrl-C (exit 0)."""
    from genos_cli.metrics import watch as watch_module

    lines = (real_run / "training_log.jsonl").read_text().splitlines(keepends=True)
    run = tmp_path / "run"
    run.mkdir()
    log = run / "training_log.jsonl"
    frames: list[str] = []
    steps = iter([lines[:3], lines[3:8], None])

    def fake_sleep(seconds: float) -> None:
        assert seconds == 0.25
        more = next(steps)
        if more is None:
            raise KeyboardInterrupt
        with open(log, "a") as fh:
            fh.writelines(more)

    original_frame = watch_module.Watcher.frame

    def recording_frame(self: watch_module.Watcher):  # type: ignore[no-untyped-def]
        group = original_frame(self)
        frames.append(str(self.history.last.step if self.history.last else "waiting"))
        return group

    monkeypatch.setattr(watch_module, "_wait", fake_sleep)
    monkeypatch.setattr(watch_module.Watcher, "frame", recording_frame)
    result = genos("metrics", "watch", run, "--interval", "0.25")
    assert result.exit_code == 0, result.output
    assert "interrupted" not in result.output
    assert frames[0] == "waiting" and frames[-1] != "waiting"
    last_step = max(json.loads(line)["step"] for line in lines[:8])
    assert frames[-1] == str(last_step)


# -- summary and plot -----------------------------------------------------------------------


def test_summary_of_a_real_run(real_run: Path) -> None:
    records = log_records(real_run)
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    result = genos("metrics", "summary", real_run, "--json")
    assert result.exit_code == 0, result.output
    (s,) = json.loads(result.stdout)
    assert s["steps"] == 12 and s["tokens"] == 12 * 8 * 128
    assert s["final_loss"] == train[-1]["loss"]
    assert s["best_loss"] == min(r["loss"] for r in train)
    assert s["final_val_bits_per_base"] == evals[-1]["val_bits_per_base"]
    assert s["best_val_bits_per_base"] == min(e["val_bits_per_base"] for e in evals)
    steady = train[1:]  # the first window holds the warm-up
    assert s["mean_tokens_per_s"] == pytest.approx(sum(r["tokens_per_s"] for r in steady) / 11)
    assert s["mean_mfu"] == pytest.approx(sum(r["mfu"] for r in steady) / 11)
    assert s["mfu_peak_tflops"] == 0.05
    assert s["peak_memory_mb"] == max(r["mem_peak_mb"] for r in train)
    assert s["train_seconds"] == pytest.approx(train[-1]["elapsed_s"])

    # The table, and MFU recomputed for another peak by the same function.
    table = genos("metrics", "summary", real_run, "--peak-tflops", "0.5").stdout
    assert f"{s['final_loss']:.4f}" in table
    assert f"{100 * s['mean_mfu'] / 10:.2f}% of 500.0 GFLOP/s" in table


def _window_lines(steps: range, start_step: int, total_steps: int) -> list[str]:
    """Log lines of the records the real `Trainer.train_record` makes (on a stand-in trainer,
    no model), as the run's log writes them."""
    import torch

    from genos_cli.train.trainer import LogWindow, StepMetrics, Trainer, WindowNumbers

    out: list[str] = []
    trainer = SimpleNamespace(
        step=start_step,
        tokens_seen=start_step * 1024,
        plan=SimpleNamespace(total_steps=total_steps),
        cfg=SimpleNamespace(model=SimpleNamespace(max_seq_length=128)),
        runtime=SimpleNamespace(dist=SimpleNamespace(world_size=1)),
        device=torch.device("cpu"),
        flops_per_token=600_000,
        peak_flops=1e11,
        gpu=None,
    )
    start = time.perf_counter()
    for step in steps:
        trainer.step, trainer.tokens_seen = step, step * 1024
        loss = 5.0 - 0.1 * step
        counts = torch.tensor([[60.0, 20.0, 10.0, 10.0], [25.0, 25.0, 25.0, 25.0]])
        losses = torch.tensor([loss, loss, 1.0, 0.1], dtype=torch.float64)
        window = LogWindow()
        window.add(StepMetrics(losses=losses, grad_norm=1.0, lr=1e-3, skipped=False,
                               tokens=1024, expert_counts=counts), step)  # fmt: skip
        numbers = WindowNumbers(losses.tolist(), counts.numpy(), 1.0)
        record = Trainer.train_record(trainer, window, numbers, 0.5, start_step, start)  # type: ignore[arg-type]
        out.append(record.to_json() + "\n")
    return out


def test_summary_compares_runs_side_by_side_including_a_resumed_one(
    real_run: Path, tmp_path: Path
) -> None:
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    # Steps 1-6, then an invocation resumed from step 4 that redoes 5-6 and ends at 10.
    lines = _window_lines(range(1, 7), 0, 10) + _window_lines(range(5, 11), 4, 10)
    (resumed / "training_log.jsonl").write_text("".join(lines))

    result = genos("metrics", "summary", real_run, resumed, "--json")
    assert result.exit_code == 0, result.output
    real, res = json.loads(result.stdout)
    assert real["steps"] == 12
    assert res["steps"] == 10 and res["invocations"] == 2 and res["tokens"] == 10 * 1024
    assert res["final_loss"] == pytest.approx(4.0) and res["best_loss_step"] == 10
    assert res["mean_tokens_per_s"] == pytest.approx(2048.0)  # 1024 tokens per 0.5 s
    assert res["mean_mfu"] == pytest.approx(2048.0 * 600_000 / 1e11)
    assert res["final_expert_max_over_mean"] == pytest.approx(2.4)  # 60% of 4 experts' routes

    table = genos("metrics", "summary", real_run, resumed).stdout
    header = next(line for line in table.splitlines() if "resumed" in line)
    assert header.index(str(real_run.name)) < header.index("resumed")  # side by side
    assert "(2 invocations)" in table


def test_plot_overlays_runs_into_a_png(real_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    other = tmp_path / "other"
    shutil.copytree(real_run, other, ignore=shutil.ignore_patterns("checkpoints"))
    out = tmp_path / "plots" / "curves.png"
    out.parent.mkdir()
    result = genos("metrics", "plot", real_run, other, "--out", out)
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (12 * 120, 11 * 120)
    assert sorted(p.name for p in out.parent.iterdir()) == ["curves.png"]  # no temp files left


def test_plot_without_matplotlib_says_how_to_get_it(
    real_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    assert_user_error(
        genos("metrics", "plot", real_run, "--out", tmp_path / "x.png"),
        "needs the matplotlib package: pip install 'genos[plot]'",
    )
    assert not (tmp_path / "x.png").exists()


# -- peak -----------------------------------------------------------------------------------


def test_peak_measures_once_then_uses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "genos" / "cpu_peak.json"
    first = genos("metrics", "peak", "--threads", "1")
    assert first.exit_code == 0, first.output
    assert "measured now" in first.stdout and "threads: 1 of" in first.stdout
    assert f"cache: {cache}" in first.stdout.replace("\n", "")
    assert "GPU: none (no driver in this test)" in first.stdout
    (measured,) = json.loads(cache.read_text()).values()
    assert f"{measured / 1e9:,.1f} GFLOP/s" in first.stdout
    again = genos("metrics", "peak", "--threads", "1")
    assert "cached" in again.stdout and f"{measured / 1e9:,.1f} GFLOP/s" in again.stdout
    assert "measured now" in genos("metrics", "peak", "--threads", "1", "--refresh").stdout


def test_peak_keeps_the_best_figure_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A peak measured while the CPU was busy understates it; measuring again never lowers it.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from genos_cli.telemetry import peak

    cache = tmp_path / "genos" / "cpu_peak.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({peak._cpu_key(1): 1e15}))  # above anything a CPU measures
    assert peak.cpu_peak_flops(1, refresh=True) == 1e15
    cache.write_text(json.dumps({peak._cpu_key(1): 1.0}))  # a figure from a saturated CPU
    better = peak.cpu_peak_flops(1, refresh=True)
    assert better > 1.0 and json.loads(cache.read_text()) == {peak._cpu_key(1): better}


def test_peak_shows_the_table_entry_of_each_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "genos" / "cpu_peak.json"
    cache.parent.mkdir()
    from genos_cli.telemetry.peak import _cpu_key

    cache.write_text(json.dumps({_cpu_key(1): 5e10}))  # no measuring in this test
    readings = [system.GpuSample(0, "NVIDIA H200"), system.GpuSample(1, "NVIDIA A100-SXM4-80GB"),
                system.GpuSample(2, "Some Future GPU")]  # fmt: skip
    monkeypatch.setattr(
        system, "open_gpu_sampler", lambda: (system.RecordedGpuSampler([readings]), None)
    )
    out = genos("metrics", "peak", "--threads", "1").stdout
    assert "CPU fp32 matmul peak: 50.0 GFLOP/s (cached)" in out
    assert "GPU 0: NVIDIA H200: bf16 989, fp16 989, fp32 67 TFLOP/s dense" in out
    assert "GPU 1: NVIDIA A100-SXM4-80GB: bf16 312, fp16 312, fp32 19.5 TFLOP/s" in out
    assert "GPU 2: Some Future GPU: not in genos's table: pass --peak-tflops" in out


# -- errors ---------------------------------------------------------------------------------


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for command in (["watch", "--once"], ["summary"], ["plot", "--out", tmp_path / "p.png"]):
        assert_user_error(genos("metrics", *command, missing), "nowhere: no such run directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["summary"], ["plot", "--out", tmp_path / "p.png"]):
        assert_user_error(genos("metrics", *command, empty), "holds no training_log.jsonl")
    evals_only = tmp_path / "evals_only"
    evals_only.mkdir()
    (evals_only / "training_log.jsonl").write_text(
        '{"type":"eval","step":1,"val_loss":4.0,"val_bits_per_base":2.0}\n{"type":"tr'
    )
    assert_user_error(genos("metrics", "summary", evals_only), "holds no training records yet")
    assert_user_error(genos("metrics", "watch", "--interval", "0", "--once"), "--interval")
    assert_user_error(genos("metrics", "summary", evals_only, "--peak-tflops", "-1"), "positive")
    # A log written before records carried FLOPs per token, and no run plan: cannot recompute.
    old = tmp_path / "old"
    old.mkdir()
    (old / "training_log.jsonl").write_text(
        '{"type":"train","step":1,"loss":4.0,"tokens_per_s":10.0,"mfu":0.1}\n'
    )
    assert genos("metrics", "summary", old).exit_code == 0
    assert_user_error(
        genos("metrics", "summary", old, "--peak-tflops", "1"), "cannot recompute MFU"
    )
    assert not (tmp_path / "p.png").exists()


def test_train_rejects_a_non_positive_peak(tmp_path: Path) -> None:
    assert_user_error(
        genos("train", "--size", "small", "--dry-run", "--peak-tflops", "0",
              "--output-dir", tmp_path / "run"),
        "--peak-tflops must be positive",
    )  # fmt: skip
