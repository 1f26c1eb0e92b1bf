"""What a training run reports: `training_log.jsonl` records and the system readings in them.

One JSON object per line, appended and flushed as it is produced, so a crash loses at most
the line being written and `genos metrics` can tail the file while the run goes on. Records
have `"type": "train"` (every log interval) or `"type": "eval"` (every evaluation).
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import IO, Any

LOG_NAME = "training_log.jsonl"


class JsonlLog:
    """Append-only JSON-lines file; only rank 0 should open one."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[str] = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """All complete records of a log (a half-written last line is skipped)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def memory_mb(device_type: str) -> tuple[float, float]:
    """(current, peak) memory in MB: GPU memory allocated by torch on CUDA, else the process's
    resident set size."""
    if device_type == "cuda":
        import torch

        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    import psutil

    current = psutil.Process(os.getpid()).memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return current, max(peak, current)


class GpuUtilisation:
    """GPU utilisation (%) of the local device through NVML, or None without NVIDIA driver."""

    def __init__(self, device_index: int) -> None:
        self._handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self._nvml = pynvml
        except Exception:  # no driver, no GPU, no library: utilisation is simply absent
            self._handle = None

    def read(self) -> float | None:
        if self._handle is None:
            return None
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except Exception:
            return None
