"""Readings of the machine a run trains on: NVIDIA GPUs through NVML, else CPU and memory.

GPU sampling sits behind the `GpuSampler` protocol so the dashboard can be rendered (and
tested) from recorded readings on a machine without a driver: `NvmlSampler` reads real
devices (all of them for `genos metrics watch`, the rank's own for the training log),
`RecordedGpuSampler` replays fixed ones. `CpuSampler` (psutil) is the fallback, and
`memory_mb` is what the training log records as memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. A reading the device does not support is None."""

    index: int
    name: str
    util_percent: float | None = None
    mem_used_mb: float | None = None
    mem_total_mb: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: float | None = None


class GpuSampler(Protocol):
    def sample(self) -> list[GpuSample]: ...


class NoGpu(Exception):
    """NVML is unusable here (no library, no driver, no device); the message says why."""


class NvmlSampler:
    """NVIDIA GPUs read through NVML (pynvml, from nvidia-ml-py): those with the given NVML
    indices, or all of this machine's."""

    def __init__(self, indices: Sequence[int] | None = None) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...
            raise NoGpu(str(exc) or type(exc).__name__) from None
        if count == 0:
            raise NoGpu("NVML found no devices")
        self._nvml = pynvml
        self._indices = list(range(count)) if indices is None else list(indices)
        try:
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in self._indices]
        except Exception as exc:  # an index past the devices NVML sees
            raise NoGpu(str(exc) or type(exc).__name__) from None
        self._names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]

    def sample(self) -> list[GpuSample]:
        return [self._read(k, h) for k, h in enumerate(self._handles)]

    def utilisation(self) -> float | None:
        """Utilisation (%) of the first device sampled; None if it cannot be read."""
        return _float(_try(lambda: self._nvml.nvmlDeviceGetUtilizationRates(self._handles[0]).gpu))

    def _read(self, k: int, handle: Any) -> GpuSample:
        index = self._indices[k]
        nv = self._nvml
        util = _try(lambda: nv.nvmlDeviceGetUtilizationRates(handle).gpu)
        mem = _try(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        power_mw = _try(lambda: nv.nvmlDeviceGetPowerUsage(handle))
        limit_mw = _try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle))
        return GpuSample(
            index=index,
            name=self._names[k],
            util_percent=_float(util),
            mem_used_mb=None if mem is None else mem.used / 2**20,
            mem_total_mb=None if mem is None else mem.total / 2**20,
            temperature_c=_float(
                _try(lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
            ),
            power_w=None if power_mw is None else power_mw / 1000,  # NVML reports milliwatts
            power_limit_w=None if limit_mw is None else limit_mw / 1000,
            sm_clock_mhz=_float(_try(lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM))),
        )


class RecordedGpuSampler:
    """Replays recorded readings, one frame per `sample()` (the last one repeats)."""

    def __init__(self, frames: Sequence[Sequence[GpuSample]]) -> None:
        if not frames:
            raise ValueError("RecordedGpuSampler needs at least one frame")
        self._frames = [list(f) for f in frames]
        self._next = 0

    def sample(self) -> list[GpuSample]:
        frame = self._frames[min(self._next, len(self._frames) - 1)]
        self._next += 1
        return frame


def open_gpu_sampler() -> tuple[GpuSampler | None, str | None]:
    """NVML's sampler, or (None, why not) on a machine without a usable NVIDIA GPU."""
    try:
        return NvmlSampler(), None
    except NoGpu as exc:
        return None, str(exc)


def _try(read: Any) -> Any:
    # A device may not support a reading (NVMLError_NotSupported): show "-" for it only.
    try:
        return read()
    except Exception:
        return None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older pynvml gives bytes


# -- CPU fallback ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    name: str
    rss_mb: float
    cpu_percent: float  # of one core: 200 = two cores busy
    threads: int


@dataclass(frozen=True)
class CpuSample:
    cores: int
    cpu_percent: float  # whole machine, 0-100
    per_cpu_percent: tuple[float, ...]
    load_avg: tuple[float, float, float]  # 1, 5, 15 minutes
    mem_used_mb: float
    mem_total_mb: float
    mem_available_mb: float
    process: ProcessSample | None = None  # the training process, when one is known


class CpuSampler:
    """CPU utilisation, load, system memory, and the process that writes `log` (if any).

    psutil's CPU percentages are since the previous call; the constructor takes the first
    reading, and `sample()` waits `min_interval` seconds if called sooner than that (so
    `--once` still reports a real figure, not 0).
    """

    def __init__(self, log: Path | None = None, min_interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self._log = log
        self._min_interval = min_interval
        self._proc: Any | None = None
        self._next_search = 0.0
        psutil.cpu_percent(percpu=True)
        self._primed = time.monotonic()

    def sample(self) -> CpuSample:
        psutil = self._psutil
        wait = self._min_interval - (time.monotonic() - self._primed)
        if wait > 0:
            time.sleep(wait)
        per_cpu = tuple(psutil.cpu_percent(percpu=True))
        self._primed = time.monotonic()
        mem = psutil.virtual_memory()
        return CpuSample(
            cores=len(per_cpu),
            cpu_percent=sum(per_cpu) / max(len(per_cpu), 1),
            per_cpu_percent=per_cpu,
            load_avg=os.getloadavg(),
            mem_used_mb=(mem.total - mem.available) / 2**20,
            mem_total_mb=mem.total / 2**20,
            mem_available_mb=mem.available / 2**20,
            process=self._process(),
        )

    def _process(self) -> ProcessSample | None:
        psutil = self._psutil
        if self._proc is None and self._log is not None and time.monotonic() >= self._next_search:
            self._next_search = time.monotonic() + 10  # a scan of all processes is not free
            pid = find_log_writer(self._log)
            if pid is not None:
                self._proc = psutil.Process(pid)
                self._proc.cpu_percent()  # first call primes it
        if self._proc is None:
            return None
        try:
            with self._proc.oneshot():
                return ProcessSample(
                    pid=self._proc.pid,
                    name=self._proc.name(),
                    rss_mb=self._proc.memory_info().rss / 2**20,
                    cpu_percent=self._proc.cpu_percent(),
                    threads=self._proc.num_threads(),
                )
        except psutil.Error:  # the run ended
            self._proc = None
            return None


def find_log_writer(log: Path) -> int | None:
    """Pid of a process that has `log` open (rank 0 of `genos train` keeps its log open)."""
    import psutil

    if not log.is_file():
        return None
    target = str(log.resolve())  # open_files() gives resolved paths (from /proc/PID/fd)
    for proc in psutil.process_iter(["pid"]):
        try:
            if any(f.path == target for f in proc.open_files()):
                return proc.pid
        except (psutil.Error, OSError):
            continue  # gone, or not ours to inspect
    return None


def memory_mb(device_type: str) -> tuple[float, float]:
    """(current, peak) memory in MB: GPU memory allocated by torch on CUDA, else the process's
    resident set size."""
    if device_type == "cuda":
        import torch

        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    import resource

    import psutil

    current = psutil.Process(os.getpid()).memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return current, max(peak, current)


@dataclass(frozen=True)
class DeviceIdentity:
    """What identifies one GPU to both CUDA and NVML."""

    uuid: str | None  # without the "GPU-" prefix, lower case
    pci: tuple[int, int, int] | None  # (domain, bus, device)


def _normal_uuid(value: object) -> str | None:
    text = str(value or "").strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text or None


def _pci_of_bus_id(bus_id: str | bytes) -> tuple[int, int, int] | None:
    """ "00000000:3B:00.0" -> (0, 0x3B, 0)."""
    text = _text(bus_id).strip()
    try:
        domain, bus, rest = text.split(":")
        return int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)
    except ValueError:
        return None


def match_nvml_index(torch_device: DeviceIdentity, nvml: Sequence[DeviceIdentity]) -> int | None:
    """The NVML index of the GPU that CUDA calls `torch_device`: by UUID, else by PCI
    address; None if neither matches. CUDA numbers only the GPUs CUDA_VISIBLE_DEVICES shows
    (and may order them differently), while NVML numbers every GPU of the machine, so the
    local rank is the wrong NVML index whenever the variable is set."""
    for key in ("uuid", "pci"):
        wanted = getattr(torch_device, key)
        if wanted is None:
            continue
        hits = [i for i, d in enumerate(nvml) if getattr(d, key) == wanted]
        if len(hits) == 1:
            return hits[0]
    return None


def _torch_identity(cuda_index: int) -> DeviceIdentity:
    import torch

    props = torch.cuda.get_device_properties(cuda_index)
    # PCI fields exist on torch builds with CUDA device info (not in every release's stub).
    address = [getattr(props, a, -1) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    domain, bus, device = (int(v) for v in address)
    pci = None if min(domain, bus, device) < 0 else (domain, bus, device)
    return DeviceIdentity(_normal_uuid(getattr(props, "uuid", None)), pci)


def nvml_index(cuda_index: int) -> int | None:
    """The NVML index of CUDA device `cuda_index` (see `match_nvml_index`), or None without
    a usable NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        nvml = [
            DeviceIdentity(
                _normal_uuid(_text(pynvml.nvmlDeviceGetUUID(h))),
                _pci_of_bus_id(pynvml.nvmlDeviceGetPciInfo(h).busId),
            )
            for h in handles
        ]
    except Exception:  # no library, no driver
        return None
    return match_nvml_index(_torch_identity(cuda_index), nvml)


def gpu_utilisation_sampler(cuda_index: int) -> NvmlSampler | None:
    """NVML's sampler of the GPU CUDA calls `cuda_index`, or None without a usable driver
    or when the GPU cannot be identified (utilisation is then simply absent from the log)."""
    index = nvml_index(cuda_index)
    if index is None:
        return None
    try:
        return NvmlSampler([index])
    except NoGpu:
        return None
