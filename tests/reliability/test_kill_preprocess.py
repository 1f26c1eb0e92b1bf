"""`kill -9` a `genos preprocess` run: it leaves nothing that looks done, its leftovers do
not block a rerun, and the rerun writes exactly what an uninterrupted run writes."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest

from tests.reliability.conftest import files_under, kill, run_genos, start, wait_until

pytestmark = pytest.mark.slow  # kills a `genos preprocess` child process


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_preprocess_leaves_nothing_done_and_rerun_is_identical(
    tmp_path: Path, ecoli_fasta: Path
) -> None:
    def args(out: Path) -> list[str | Path]:
        return ["preprocess", ecoli_fasta, "-o", out / "ecoli", "--write-text", out / "text",
                "--workers", "1"]  # fmt: skip

    reference, out = tmp_path / "reference", tmp_path / "out"
    run_genos(*args(reference))

    proc = start(*args(out))
    # Killed while writing: the training split's temporary .bin already holds tokens.
    wait_until(
        lambda: any(p.name.endswith(".tmp") and ".bin." in p.name and p.stat().st_size > 0
                    for p in out.glob(".ecoli_train_text_document.*")),
        proc, "tokens were written",
    )  # fmt: skip
    kill(proc)
    assert proc.returncode == -signal.SIGKILL
    left = files_under(out)
    assert left, "the kill came too late to test anything"
    # Only hidden temporary files: no final .bin/.idx/.json/.txt name exists.
    assert all(Path(name).name.startswith(".") and name.endswith(".tmp") for name in left), left

    run_genos(*args(out))  # no --overwrite needed: temporary files are not output
    assert files_under(out) == files_under(reference)  # the killed run's temp files are gone
    for name in files_under(reference):
        if name.endswith(".json"):  # the manifest records when and how long: compare the rest
            a, b = (json.loads((d / name).read_text().replace(str(d), "OUT"))
                    for d in (out, reference))  # fmt: skip
            for manifest in (a, b):
                del manifest["created"], manifest["stats"]["seconds"]
            assert a == b
        else:
            assert sha256(out / name) == sha256(reference / name), name
