"""benchmarks/gpu_check.py, the GPU acceptance check, runs its own logic on this CPU
(`--device cpu --tiny`): every check executes and the table says pass, so the script is
ready for the first GPU machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
         "--tiny", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert not [r for r in rows if r["ok"] is False]
    checks = {r["check"] for r in rows if r["ok"] is True}
    expected = {
        "environment",
        "small: bf16 training, loss falls",
        "experts: grouped GEMM vs loop",
        "ZeRO-2 + expert parallel vs 1 GPU",
    }
    assert expected <= checks
    assert "| check | result | measured | target |" in result.stdout
