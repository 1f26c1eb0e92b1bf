"""Peak FLOP/s of the device a run uses, for MFU.

GPUs: the vendor's dense (not 2:4-sparse) tensor-core figure for the run's dtype, matched
from the device name. CPUs: there is no datasheet number that means anything for PyTorch, so
genos measures the fp32 matmul rate of this machine once and caches it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

# Dense peak TFLOP/s by (name fragment, dtype); first match wins, so specific names first.
GPU_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6}),
    ("A10G", {"bf16": 70.0, "fp16": 70.0, "fp32": 31.2}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
]


def gpu_peak_flops(device_name: str, dtype: str) -> float | None:
    """Peak FLOP/s for a GPU name as NVML/torch reports it, or None if unknown."""
    for fragment, peaks in GPU_PEAK_TFLOPS:
        if fragment.lower() in device_name.lower() and dtype in peaks:
            return peaks[dtype] * 1e12
    return None


def _cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "genos" / "cpu_peak.json"


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
    """This machine's measured fp32 matmul peak for `threads` threads, cached per CPU."""
    key = f"{platform.processor() or platform.machine()}|{os.cpu_count()}|{threads}"
    cache = _cache_file()
    table: dict[str, float] = {}
    if cache.is_file():
        try:
            table = json.loads(cache.read_text())
        except (OSError, ValueError):
            table = {}
    if not refresh and key in table:
        return float(table[key])
    peak = measure_cpu_matmul_peak(threads)
    table[key] = peak
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(table, indent=2))
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return peak


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over peak (PaLM, Chowdhery et al. 2022)."""
    if not peak_flops:
        return None
    return tokens_per_second * flops_per_token / peak_flops
