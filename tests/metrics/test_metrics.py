"""Pure pieces of `genos metrics`: FLOPs and MFU, log tailing, run histories, the dashboard
rendered from recorded GPU readings, NVML's units, and real CPU readings (psutil)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from genos_cli.config import load_config
from genos_cli.metrics import dashboard
from genos_cli.metrics.logs import LogTail, RunHistory
from genos_cli.metrics.summary import summarize
from genos_cli.model.flops import model_flops_per_token
from genos_cli.telemetry import format as fmt
from genos_cli.telemetry import system
from genos_cli.telemetry.peak import mfu, record_mfu
from genos_cli.telemetry.records import EvalRecord, TrainRecord, WarningRecord, parse_line
from tests.conftest import REPO_ROOT


def render(renderable: object, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# -- FLOPs and MFU --------------------------------------------------------------------------


def test_model_flops_per_token_hand_count_small_preset() -> None:
    """The small preset, one token, matmul by matmul: 2 FLOPs per multiply-add of each
    (in, out) weight the token passes through, then the attention products, then x3."""
    cfg = load_config(size="small").model
    # The shapes below are written out for this preset: fail loudly if it changes.
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_query_groups,
            cfg.num_experts, cfg.moe_router_topk, cfg.expert_ffn_hidden_size,
            cfg.vocab_size) == (4, 256, 4, 2, 4, 2, 512, 128)  # fmt: skip
    layer_matmuls = [
        (256, 256),  # q: 4 heads x 64
        (256, 128),  # k: 2 query groups x 64
        (256, 128),  # v
        (256, 256),  # o
        (256, 4),  # router logits over 4 experts
    ] + 2 * [  # the token's top-2 experts, SwiGLU each
        (256, 512),  # gate
        (256, 512),  # up
        (512, 256),  # down
    ]
    per_layer = sum(2 * n_in * n_out for n_in, n_out in layer_matmuls)
    assert per_layer == 1_968_128
    # Attention at T = 512, PaLM's convention (no causal discount): a token scores all 512
    # keys (q.k, 64 wide, 4 heads) and sums as many values: 2 * 2 * 256 FLOPs per key.
    attention = 2 * 2 * 256 * 512
    assert attention == 524_288
    head = 2 * 256 * 128  # output projection to the 128-token vocabulary; the embedding is a lookup
    forward = 4 * (per_layer + attention) + head
    assert forward == 10_035_200
    assert model_flops_per_token(cfg, 512, training=False) == forward
    # Backward = 2 x forward (gradients for inputs and for weights).
    assert model_flops_per_token(cfg, 512) == 3 * forward == 30_105_600


def test_mfu_is_achieved_over_peak() -> None:
    # 1,000 tokens/s x 30,105,600 FLOPs/token = 30.1 GFLOP/s; of a 100 GFLOP/s peak: 30.1%.
    assert mfu(1000.0, 30_105_600, 100e9) == pytest.approx(0.301056)
    assert mfu(1000.0, 30_105_600, None) is None
    assert mfu(1000.0, 30_105_600, 0.0) is None


def test_record_mfu_is_the_logs_own_unless_a_peak_is_given() -> None:
    rec = TrainRecord(step=1, mfu=0.123, tokens_per_s=2000.0, flops_per_token=1e6, world_size=2)
    assert record_mfu(rec) == 0.123  # the run's own figure, untouched
    # Recomputed over both processes' devices: 2e9 FLOP/s over 2 x 1e10.
    assert record_mfu(rec, 1e10) == pytest.approx(0.1)
    old = TrainRecord(step=1, mfu=0.5, tokens_per_s=2000.0)  # a log without flops_per_token
    assert record_mfu(old, 1e10) is None
    assert record_mfu(old, 1e10, flops_per_token=5e6) == pytest.approx(1.0)


# -- reading logs ---------------------------------------------------------------------------


def test_log_tail_consumes_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "training_log.jsonl"
    tail = LogTail(path)
    assert tail.poll() == []  # no file yet: waiting, not an error
    with open(path, "w") as fh:
        fh.write('{"type": "train", "step": 1, "loss": 4.5}\n{"type": "train", "st')
        fh.flush()
        assert tail.poll() == [TrainRecord(step=1, loss=4.5)]
        assert tail.poll() == []  # the half-written line is left for later
        fh.write('ep": 2}\nnot json\n[1, 2]\n{"type": "train", "step": "two"}\n\n')
        fh.write('{"type": ["train"], "step": 2}\n{"type": "train", "step": 2, "loss": "low"}\n')
        fh.write('{"type": "eval", "step": 2, "val_loss": 4.0, "new_field": 1}\n')
        fh.write('{"type": "warning", "step": 3, "loss": "nan"}\n')
        fh.flush()
        assert tail.poll() == [
            TrainRecord(step=2),
            EvalRecord(step=2, val_loss=4.0),  # fields it does not know are ignored
            WarningRecord(step=3, loss="nan"),
        ]
        assert tail.bad_lines == 5  # not JSON, not an object, not records; blank is no line
    # A new log under the same name (a new run in the directory) is read from its start.
    path.unlink()
    path.write_text('{"type": "train", "step": 7}\n')
    assert tail.poll() == [TrainRecord(step=7)]


def test_records_round_trip_through_the_log_format() -> None:
    """What the trainer writes (`to_json`) is what the readers parse back, NaN included."""
    rec = TrainRecord(step=5, loss=float("nan"), expert_load=[[0.75, 0.25]], time=1.0)
    line = rec.to_json()
    assert line.startswith('{"type":"train","step":5,') and line.endswith(',"time":1.0}')
    back = parse_line(line.encode())
    assert isinstance(back, TrainRecord) and back.expert_load == [[0.75, 0.25]]
    assert back.loss is not None and math.isnan(back.loss)
    assert parse_line(EvalRecord(step=5, val_bits_per_base=1.9).to_json()) == EvalRecord(
        step=5, val_bits_per_base=1.9
    )


def _train(step: int, loss: float, elapsed: float, **extra: Any) -> TrainRecord:
    return TrainRecord(step=step, loss=loss, elapsed_s=elapsed, **extra)


def test_history_of_a_resumed_run_reads_as_one_run() -> None:
    """Steps 1-4, a crash, a resume from the step-2 checkpoint that redoes 3-4 and goes on:
    the redone steps replace the first ones; training time is both invocations' time."""
    history = RunHistory()
    history.extend([_train(s, 5.0 - s, 10.0 * s) for s in (1, 2, 3, 4)])
    history.extend([EvalRecord(step=4, val_bits_per_base=1.9), WarningRecord(step=4)])
    history.extend([_train(s, 4.5 - s, 10.0 * (s - 2)) for s in (3, 4, 5)])
    history.extend([EvalRecord(step=4, val_bits_per_base=1.8)])
    assert [r.step for r in history.train] == [1, 2, 3, 4, 5]
    assert [r.loss for r in history.train] == [4.0, 3.0, 1.5, 0.5, -0.5]
    assert [e.val_bits_per_base for e in history.evals] == [1.8]
    assert history.invocations == 2
    assert history.seconds == pytest.approx(40.0 + 30.0)
    # The first window of each invocation is left out of steady-state means.
    assert [r.step for r in history.steady()] == [2, 4, 5]


def test_summary_figures() -> None:
    history = RunHistory()
    history.extend(
        [
            _train(1, 4.0, 1.0, tokens_per_s=100.0, mfu=0.01, mem_peak_mb=10.0, tokens=8,
                   total_steps=3, expert_load=[[0.5, 0.5], [0.75, 0.25]]),
            _train(2, 3.0, 2.0, tokens_per_s=300.0, mfu=0.03, mem_peak_mb=30.0, tokens=16,
                   total_steps=3, expert_load=[[0.5, 0.5], [0.75, 0.25]]),
            EvalRecord(step=2, val_loss=2.5, val_bits_per_base=1.95),
            _train(3, 3.5, 3.0, tokens_per_s=500.0, mfu=0.05, mem_peak_mb=20.0, tokens=24,
                   total_steps=3, expert_load=[[0.5, 0.5], [0.75, 0.25]], peak_flops=1e11),
        ]
    )  # fmt: skip
    s = summarize(Path("r"), history)
    assert (s.steps, s.total_steps, s.tokens, s.train_seconds) == (3, 3, 24, 3.0)
    assert (s.final_loss, s.best_loss, s.best_loss_step) == (3.5, 3.0, 2)
    assert (s.final_val_bits_per_base, s.best_val_step) == (1.95, 2)
    assert s.mean_tokens_per_s == 400.0  # steps 2 and 3: step 1 is the warm-up window
    assert s.mean_mfu == pytest.approx(0.04)
    assert s.mfu_peak_tflops == 0.1
    assert s.peak_memory_mb == 30.0
    assert s.final_expert_max_over_mean == 1.5
    assert json.loads(json.dumps(s.to_json()))["best_loss"] == 3.0


# -- the dashboard --------------------------------------------------------------------------


def test_sparkline_and_expert_balance() -> None:
    assert dashboard.sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == "▁▂▃▄▅▆▇█"
    assert dashboard.sparkline([3.0, 3.0]) == "▅▅"
    assert len(dashboard.sparkline([float(i) for i in range(100)])) == 40  # the last 40
    assert dashboard.sparkline([]) == ""
    even = fmt.expert_balance([[0.25] * 4])
    assert even is not None
    assert even.max_over_mean == (1.0,) and even.entropy[0] == pytest.approx(1.0)
    skewed = fmt.expert_balance([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]])
    assert skewed is not None
    assert skewed.max_over_mean == (1.0, 4.0) and skewed.worst_layer == 1
    assert skewed.entropy[1] == 0.0
    assert fmt.expert_balance(None) is None


RECORDED = [
    system.GpuSample(0, "NVIDIA H100 80GB HBM3", 87.0, 61234.0, 81559.0, 64.0, 512.3, 700.0,
                     1980.0),
    system.GpuSample(1, "NVIDIA H100 80GB HBM3", 3.0, 1024.0, 81559.0, 41.0, 98.0, 700.0, 345.0),
]  # fmt: skip


def test_gpu_table_from_recorded_readings() -> None:
    sampler = system.RecordedGpuSampler([RECORDED])
    text = render(dashboard.frame(sampler.sample(), None, None), width=80)
    lines = [line.split() for line in text.splitlines()]
    assert ["GPU", "name", "util", "memory", "MiB", "temp", "power", "W", "SM", "MHz"] in lines
    assert ["0", "NVIDIA", "H100", "80GB", "HBM3", "87%", "61,234", "/", "81,559", "64°C",
            "512", "/", "700", "1,980"] in lines  # fmt: skip
    assert ["1", "NVIDIA", "H100", "80GB", "HBM3", "3%", "1,024", "/", "81,559", "41°C",
            "98", "/", "700", "345"] in lines  # fmt: skip
    assert "CPU" not in text  # GPUs present: no CPU fallback


def _fake_pynvml(count: int = 2) -> types.SimpleNamespace:
    """NVML's Python API as nvidia-ml-py has it, answering like two H100s do."""

    class NotSupported(Exception):
        pass

    def power(handle: int) -> int:
        if handle == 1:
            raise NotSupported("Not Supported")
        return 512_345  # milliwatts

    return types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        NVML_CLOCK_SM=1,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",  # older versions give bytes
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(
            used=2 * 2**30, total=80 * 2**30, free=78 * 2**30
        ),
        nvmlDeviceGetTemperature=lambda h, sensor: 64 if sensor == 0 else None,
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetClockInfo=lambda h, clock: 1980 if clock == 1 else 0,
    )


def test_nvml_sampler_reads_units_and_unsupported_readings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    sampler, why_not = system.open_gpu_sampler()
    assert why_not is None and isinstance(sampler, system.NvmlSampler)
    first, second = sampler.sample()
    assert first == system.GpuSample(0, "NVIDIA H100 80GB HBM3", 87.0, 2048.0, 81920.0, 64.0,
                                     512.345, 700.0, 1980.0)  # fmt: skip
    assert second.power_w is None and second.power_limit_w == 700.0  # "Not Supported"


def test_no_nvml_means_no_gpu_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver() -> None:
        raise RuntimeError("Driver Not Loaded")

    fake = _fake_pynvml()
    fake.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert system.open_gpu_sampler() == (None, "Driver Not Loaded")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(count=0))
    assert system.open_gpu_sampler() == (None, "NVML found no devices")


def test_cpu_sampler_reads_this_machine(tmp_path: Path) -> None:
    """Real psutil readings; the process is found as the one holding the run's log open."""
    log = tmp_path / "training_log.jsonl"
    with open(log, "a"):
        sample = system.CpuSampler(log).sample()
    assert sample.cores == psutil.cpu_count()
    assert len(sample.per_cpu_percent) == sample.cores
    assert 0 <= sample.cpu_percent <= 100
    assert sample.mem_total_mb == pytest.approx(psutil.virtual_memory().total / 2**20)
    assert 0 < sample.mem_used_mb < sample.mem_total_mb
    assert sample.load_avg == pytest.approx(os.getloadavg(), abs=5)
    assert sample.process is not None and sample.process.pid == os.getpid()
    assert sample.process.rss_mb == pytest.approx(
        psutil.Process().memory_info().rss / 2**20, rel=0.5
    )
    text = render(dashboard.frame(None, sample, None))
    assert f"of {sample.cores} cores" in text and f"pid {os.getpid()}" in text
    assert f"{sample.mem_total_mb:,.0f} MiB used" in text


def test_metrics_commands_do_not_import_heavy_libraries() -> None:
    # `genos --help` and `genos metrics --help` must stay instant.
    code = (
        "import sys\n"
        "from genos_cli.cli.app import app\n"
        "try:\n"
        "    app(['metrics', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({'torch', 'numpy', 'matplotlib'} & set(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
