"""`genos train --wandb-project`: the offline Weights & Biases run holds the records of
training_log.jsonl (every train and eval key, same values, at the same step)."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import genos
from tests.tiny import TINY_TRAIN_ARGS

pytest.importorskip("wandb")


def wandb_records(path: Path) -> Iterator[object]:
    """The protobuf records of a `.wandb` file. It is a LevelDB log (32 KiB blocks of records
    with a 7-byte header: crc32c, length, type FULL/FIRST/MIDDLE/LAST) after a 7-byte
    ':W&B' header; wandb >= 0.19 has no Python reader for it (its writer is in Go)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def history(run_dir: Path, timeout: float = 60.0) -> dict[int, dict[str, object]]:
    """step -> the logged row, from the run's offline `.wandb` file. wandb's writer is a
    separate process that may still be flushing the run's last records when `finish()`
    returns (seen on a loaded machine), so wait for the exit record a while."""
    (file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        rows: dict[int, dict[str, object]] = {}
        kinds = set()
        for record in wandb_records(file):
            kinds.add(record.WhichOneof("record_type"))
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                rows[int(row["_step"])] = row
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "exit" in kinds  # the run was finished, not cut off
    return rows


def test_wandb_offline_run_logs_the_training_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ecoli_data: Path
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    result = genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--max-steps", "4",
                   "--eval-interval", "2", "--output-dir", run,
                   "--wandb-project", "genos-test")  # fmt: skip
    assert result.exit_code == 0, result.output

    logged = [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in logged] == ["train", "train", "eval", "train", "train", "eval"]
    rows = history(run)
    assert sorted(rows) == [1, 2, 3, 4]
    last_time = {r["step"]: r["time"] for r in logged}  # wandb keeps a step's last value
    for record in logged:
        row = rows[record["step"]]
        for key, value in record.items():
            if key == "type":
                continue
            expected = last_time[record["step"]] if key == "time" else value
            assert row[key] == expected, (record["type"], key)  # JSON both ways: exact
