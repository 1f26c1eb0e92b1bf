"""Reading `training_log.jsonl` while a run writes it, and as a finished whole.

The trainer appends one record per line and flushes after each (`telemetry/records.py`, which
also parses them), so a reader can meet a last line that is still being written. `LogTail`
keeps its byte offset and consumes only complete lines (ending in a newline); the rest is read
again on the next poll. `RunHistory` folds the records into what the dashboard, the summary and
the plots need.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from genos_cli.errors import GenosError
from genos_cli.telemetry.records import (
    LOG_NAME,
    PLAN_NAME,
    EvalRecord,
    Record,
    TrainRecord,
    parse_line,
)

if TYPE_CHECKING:
    from genos_cli.config.schema import GenosConfig


def log_path(run: Path) -> Path:
    """The log of a run directory; a path to the log file itself is accepted as is."""
    return run if run.is_file() else run / LOG_NAME


class LogTail:
    """Incremental reader of one JSON-lines log: each `poll()` returns the records completed
    since the last one. A missing file is not an error (the run has not started yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.bad_lines = 0  # complete lines that were not records (skipped)
        self._identity: tuple[int, int] | None = None

    def poll(self) -> list[Record]:
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with fh:
            st = os.fstat(fh.fileno())
            identity = (st.st_dev, st.st_ino)
            # A new file under the same name, or one that shrank, is a new log: start over.
            if identity != self._identity or st.st_size < self.offset:
                self._identity, self.offset = identity, 0
            fh.seek(self.offset)
            data = fh.read(st.st_size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # nothing new, or only the start of a line still being written
        self.offset += end + 1
        return self._parse(data[: end + 1])

    def _parse(self, chunk: bytes) -> list[Record]:
        records = []
        for line in chunk.splitlines():
            if not line.strip():
                continue
            rec = parse_line(line)
            if rec is None:
                self.bad_lines += 1
            else:
                records.append(rec)
        return records


@dataclass
class RunHistory:
    """Train and eval records of one run, in step order.

    A resumed run starts again from its last checkpoint, so its log can hold steps that a
    later invocation redid; the later records replace the earlier ones (from the rewound step
    on), and the history reads as one run. `maxlen` bounds the memory of a long `watch`.
    """

    maxlen: int | None = None
    train: deque[TrainRecord] = field(init=False)
    evals: deque[EvalRecord] = field(init=False)
    # Per train record: whether it is the first of an invocation of `genos train`. That
    # window holds one-off costs (allocation, compilation), so steady-state means skip it.
    first_of_invocation: deque[bool] = field(init=False)
    invocations: int = 0  # training processes that wrote this log (1 + resumes)
    seconds: float = 0.0  # training time over all invocations
    _segment_elapsed: float = 0.0

    def __post_init__(self) -> None:
        self.train = deque(maxlen=self.maxlen)
        self.evals = deque(maxlen=self.maxlen)
        self.first_of_invocation = deque(maxlen=self.maxlen)

    def extend(self, records: Iterable[Record]) -> None:
        for rec in records:  # warnings are not part of the history
            if isinstance(rec, TrainRecord):
                self._add_train(rec)
            elif isinstance(rec, EvalRecord):
                while self.evals and self.evals[-1].step >= rec.step:
                    self.evals.pop()
                self.evals.append(rec)

    def _add_train(self, rec: TrainRecord) -> None:
        elapsed = None if rec.elapsed_s is None or math.isnan(rec.elapsed_s) else rec.elapsed_s
        # `elapsed_s` restarts at zero with each invocation of `genos train`.
        first = self.invocations == 0 or (elapsed is not None and elapsed < self._segment_elapsed)
        if first:
            self.invocations += 1
            self._segment_elapsed = 0.0
        if elapsed is not None:
            self.seconds += elapsed - self._segment_elapsed
            self._segment_elapsed = elapsed
        while self.train and self.train[-1].step >= rec.step:
            self.train.pop()
            self.first_of_invocation.pop()
        self.train.append(rec)
        self.first_of_invocation.append(first)

    def steady(self) -> list[TrainRecord]:
        """Train records without each invocation's first window (all, if that leaves none)."""
        flags = zip(self.train, self.first_of_invocation, strict=True)
        rest = [r for r, first in flags if not first]
        return rest or list(self.train)

    @property
    def last(self) -> TrainRecord | None:
        return self.train[-1] if self.train else None

    @property
    def last_eval(self) -> EvalRecord | None:
        return self.evals[-1] if self.evals else None


def resolve_run(run: Path) -> Path:
    """The log of an existing run directory (or log file), or a `GenosError` saying why not."""
    if not run.exists():
        raise GenosError(f"{run}: no such run directory")
    path = log_path(run)
    if not path.is_file():
        raise GenosError(f"{run} holds no {LOG_NAME}; give the --output-dir of a `genos train` run")
    return path


def load_run(run: Path) -> RunHistory:
    """The whole history of a finished or running run; errors if it has no train records."""
    path = resolve_run(run)
    tail = LogTail(path)
    history = RunHistory()
    try:
        history.extend(tail.poll())
    except OSError as exc:
        raise GenosError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not history.train:
        raise GenosError(f"{path} holds no training records yet")
    return history


@dataclass(frozen=True)
class LoadedRun:
    """A run's whole history, and what recomputing its MFU against another peak needs."""

    path: Path  # as the user named it: a run directory or its log
    history: RunHistory
    flops_per_token: float | None  # from run_plan.json for logs without it (`flops_per_token_for`)


def load_runs(runs: Iterable[Path], peak_flops: float | None) -> list[LoadedRun]:
    """`load_run` of each run, in order, with the FLOPs per token to recompute MFU against
    `peak_flops` (per device) with; the first run that cannot be read raises `GenosError`."""
    loaded = []
    for run in runs:
        history = load_run(run)
        loaded.append(LoadedRun(run, history, flops_per_token_for(run, history, peak_flops)))
    return loaded


def run_plan_config(run: Path) -> GenosConfig | None:
    """The model config a run was trained with (from its run_plan.json), or None."""
    plan_file = (run.parent if run.is_file() else run) / PLAN_NAME
    if not plan_file.is_file():
        return None
    from genos_cli.config.schema import GenosConfig

    try:
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
        return GenosConfig.model_validate(plan["config"])
    except (OSError, ValueError, KeyError, TypeError):  # pydantic's error is a ValueError
        return None


def plan_flops_per_token(run: Path) -> float | None:
    """Training FLOPs per token of the model in a run's run_plan.json, or None without one."""
    cfg = run_plan_config(run)
    if cfg is None:
        return None
    from genos_cli.model.flops import model_flops_per_token

    return float(model_flops_per_token(cfg.model, cfg.model.max_seq_length))


def flops_per_token_for(run: Path, history: RunHistory, peak_flops: float | None) -> float | None:
    """FLOPs per token to recompute MFU against `peak_flops` with, for logs whose records do
    not carry `flops_per_token` (written before genos logged it); None when not needed."""
    last = history.last
    if peak_flops is None or (last is not None and last.flops_per_token):
        return None
    per_token = plan_flops_per_token(run)
    if per_token is None:
        raise GenosError(
            f"cannot recompute MFU for {run}: its log does not record FLOPs per token and "
            f"it has no {PLAN_NAME}; leave out --peak-tflops to see the log's own MFU"
        )
    return per_token
