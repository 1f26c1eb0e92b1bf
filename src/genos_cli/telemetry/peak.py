"""Peak FLOP/s of the device a run uses, for MFU.

GPUs: the vendor's dense (not 2:4-sparse) tensor-core figure for the run's dtype, matched
from the device name. CPUs: there is no datasheet number that means anything for PyTorch, so
genos measures the fp32 matmul rate of this machine once and caches it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

from genos_cli.atomic import atomic_write
from genos_cli.telemetry.records import TrainRecord

# Dense (not 2:4-sparse) peak TFLOP/s by (name fragment, dtype), from NVIDIA's datasheets;
# bf16/fp16 with fp32 accumulation, as PyTorch computes. A fragment matches as a whole word
# ("H20" is not "H200"), and the first match wins, so specific names come first. A dtype a
# GPU lacks (bf16 before Ampere), or whose figure is not published (B200 fp32), is absent:
# such runs log no MFU unless --peak-tflops gives one.
GPU_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("B200", {"bf16": 2250.0, "fp16": 2250.0}),
    ("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "fp32": 60.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("H800 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}),
    ("H800", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("H20", {"bf16": 148.0, "fp16": 148.0, "fp32": 44.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6}),
    ("A10G", {"bf16": 70.0, "fp16": 70.0, "fp32": 31.2}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    ("RTX 4090", {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
]


def _matches(fragment: str, device_name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(fragment)}(?![A-Za-z0-9])", device_name,
                     re.IGNORECASE) is not None  # fmt: skip


def gpu_peak_entry(device_name: str) -> tuple[str, dict[str, float]] | None:
    """The table row (name fragment, dense TFLOP/s by dtype) a GPU name matches, or None."""
    for fragment, peaks in GPU_PEAK_TFLOPS:
        if _matches(fragment, device_name):
            return fragment, peaks
    return None


def gpu_peak_flops(device_name: str, dtype: str) -> float | None:
    """Peak FLOP/s for a GPU name as NVML/torch reports it, or None if unknown."""
    entry = gpu_peak_entry(device_name)
    if entry is None or dtype not in entry[1]:
        return None
    return entry[1][dtype] * 1e12


def cpu_peak_cache_file() -> Path:
    """Where measured CPU peaks are kept: GENOS_CACHE_DIR/cpu_peak.json (`genos_cli.paths`)."""
    from genos_cli.paths import cache_dir

    return cache_dir() / "cpu_peak.json"


def _cpu_key(threads: int) -> str:
    # A peak belongs to a CPU model, a core count and a thread count: a cache copied to
    # another machine, or a run with other threads, measures afresh.
    return f"{platform.processor() or platform.machine()}|{os.cpu_count()}|{threads}"


def _read_cpu_cache() -> dict[str, float]:
    cache = cpu_peak_cache_file()
    if not cache.is_file():
        return {}
    try:
        table = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def cached_cpu_peak_flops(threads: int) -> float | None:
    """The cached CPU peak for `threads` threads, or None if it was never measured here."""
    value = _read_cpu_cache().get(_cpu_key(threads))
    return float(value) if isinstance(value, (int, float)) else None


def measure_cpu_matmul_peak(threads: int, seconds: float = 1.0, n: int = 1024) -> float:
    """Best fp32 FLOP/s of repeated n x n matmuls on `threads` threads (best of a few
    timed batches, so a momentary hiccup does not lower it)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n)
        b = torch.randn(n, n)
        for _ in range(3):
            a @ b  # warm-up
        best = 0.0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
        return best
    finally:
        torch.set_num_threads(previous)


def cpu_peak_flops(threads: int, *, refresh: bool = False) -> float:
    """This machine's fp32 matmul peak for `threads` threads: the best ever measured here.

    A peak is a maximum, and a measurement taken while other work shares the CPU can only
    understate it (a cached figure measured on a busy machine once gave MFU above 100%), so
    `refresh` measures again and the cache keeps the larger of the two figures."""
    cached = cached_cpu_peak_flops(threads)
    if not refresh and cached is not None:
        return cached
    peak = max(measure_cpu_matmul_peak(threads), cached or 0.0)
    table = _read_cpu_cache()
    table[_cpu_key(threads)] = peak
    try:
        # Atomic: ranks of a multi-process run may measure and write at the same moment.
        with atomic_write(cpu_peak_cache_file(), "w") as fh:
            fh.write(json.dumps(table, indent=2))
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return peak


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over peak (PaLM, Chowdhery et al. 2022,
    appendix B): `tokens/s x model FLOPs per token / peak FLOP/s`, with FLOPs per token from
    `genos_cli.model.flops.model_flops_per_token` and the peak of all devices the run uses
    (per-device peak x processes). None when the peak is unknown."""
    if not peak_flops or peak_flops <= 0:
        return None
    return tokens_per_second * flops_per_token / peak_flops


def record_mfu(
    record: TrainRecord, peak_flops: float | None = None, flops_per_token: float | None = None
) -> float | None:
    """MFU of one `training_log.jsonl` train record.

    Without `peak_flops` it is the record's own figure, the one the run computed and showed
    (so `genos metrics` and the training view agree). With `peak_flops` (one device's peak,
    e.g. from --peak-tflops) it is recomputed with the same `mfu()` over all the run's
    devices, from the record's `flops_per_token` (or the given one, for logs without it).
    """
    if peak_flops is None:
        return record.mfu
    per_token = record.flops_per_token or flops_per_token
    if not per_token or record.tokens_per_s is None:
        return None
    return mfu(record.tokens_per_s, per_token, peak_flops * (record.world_size or 1))
