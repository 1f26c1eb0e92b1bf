"""`genos env`: the report a bug needs, and what genos would use, on this machine."""

from __future__ import annotations

import json

import torch

from tests.helpers import genos


def test_env_reports_versions_devices_and_choices() -> None:
    result = genos("env", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["torch"]["version"] == torch.__version__
    assert report["deepspeed"]["version"]  # importable here, with its op table
    assert report["deepspeed"]["ops_compatible"]
    use = report["genos_would_use"]
    if not torch.cuda.is_available():
        assert report["gpus"] == [] and use["device"] == "cpu" and use["precision"] == "fp32"
        assert use["attention"].startswith("PyTorch SDPA")
    assert "pip install 'genos[gpu]'" in (report["flash_attn"]["problem"] or "genos[gpu]")

    table = genos("env").stdout
    for heading in ("genos env", "deepspeed ops", "genos would use"):
        assert heading in table
    assert "pip install 'genos[gpu]'" in table or report["flash_attn"]["importable"]
