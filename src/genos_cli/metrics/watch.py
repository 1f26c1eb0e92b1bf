"""The `genos metrics watch` loop: sample, tail the log, render a frame, repeat."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from genos_cli.metrics import dashboard
from genos_cli.metrics.logs import LogTail, RunHistory, log_path, plan_flops_per_token
from genos_cli.telemetry.system import CpuSampler, GpuSampler

# Records kept in memory: enough for the sparkline and the latest figures of a long run.
HISTORY = 256


class Watcher:
    """State between frames: the GPU/CPU samplers and the incremental log reader."""

    def __init__(
        self,
        run_dir: Path | None,
        gpu: GpuSampler | None,
        *,
        peak_flops: float | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.gpu = gpu
        self.log = None if run_dir is None else log_path(run_dir)
        # CPU readings only without GPUs; the process search needs to know the log.
        self.cpu = CpuSampler(self.log) if gpu is None else None
        self.tail = None if self.log is None else LogTail(self.log)
        self.history = RunHistory(maxlen=HISTORY)
        self.peak_flops = peak_flops
        self.flops_per_token: float | None = None
        self._plan_read = False

    def frame(self) -> dashboard.Group:
        gpus = self.gpu.sample() if self.gpu is not None else None
        cpu = self.cpu.sample() if self.cpu is not None else None
        return dashboard.frame(gpus, cpu, self._run_view())

    def _run_view(self) -> dashboard.RunView | None:
        if self.run_dir is None or self.tail is None or self.log is None:
            return None
        self.history.extend(self.tail.poll())
        last = self.history.last
        # A log written before records carried FLOPs per token: take them from the run's
        # plan, once (without one, MFU shows "-").
        needs_plan = self.peak_flops is not None and not self._plan_read
        if needs_plan and last is not None and not last.flops_per_token:
            self._plan_read = True
            self.flops_per_token = plan_flops_per_token(self.run_dir)
        return dashboard.RunView(
            run_dir=self.run_dir,
            log=self.log,
            log_exists=self.log.is_file(),
            history=self.history,
            peak_flops=self.peak_flops,
            flops_per_token=self.flops_per_token,
            bad_lines=self.tail.bad_lines,
            now=time.time(),
        )


def _wait(seconds: float) -> None:
    time.sleep(seconds)  # a seam: tests replace the wait between frames


def watch(console: Console, watcher: Watcher, *, interval: float, once: bool) -> None:
    """Print one frame (`once`), or redraw a live frame every `interval` s until Ctrl-C."""
    if once:
        console.print(watcher.frame())
        return
    try:
        with Live(watcher.frame(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                _wait(interval)
                live.update(watcher.frame(), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: not an error
