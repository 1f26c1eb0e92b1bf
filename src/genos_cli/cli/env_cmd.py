"""`genos env`: versions, GPUs and what genos would choose here, for bug reports."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from genos_cli.cli._common import console, reports_errors


@reports_errors
def env(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show genos, Python, torch (CUDA, cuDNN, NCCL), DeepSpeed (and which of its ops build
    here), flash-attn, the GPUs and driver, and the precision and kernels genos would use."""
    from genos_cli.train.environment import collect

    report = collect()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _render(report)


def _rows(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, "-" if value is None else escape(str(value)))
    console.print(table)


def _render(r: dict[str, Any]) -> None:
    t, ds, fa = r["torch"], r["deepspeed"], r["flash_attn"]
    _rows("genos env", [
        ("genos", r["genos"]),
        ("python", r["python"]),
        ("platform", r["platform"]),
        ("torch", t["version"]),
        ("  CUDA / cuDNN / NCCL", f"{t['cuda'] or '-'} / {t['cudnn'] or '-'} / {t['nccl'] or '-'}"),
        ("deepspeed", ds.get("version") or ds.get("error")),
        ("  accelerator", ds.get("accelerator")),
        ("flash-attn", fa["version"] if fa["importable"] else fa["problem"]),
        ("transformers", r["transformers"]),
        ("NVIDIA driver", r["nvidia_driver"]),
    ])  # fmt: skip
    ops = ds.get("ops_compatible") or {}
    if ops:
        ok = [name for name, good in ops.items() if good]
        not_ok = [name for name, good in ops.items() if not good]
        _rows("deepspeed ops", [("compatible", ", ".join(ok) or "-"),
                                ("not compatible", ", ".join(not_ok) or "-")])  # fmt: skip
    for gpu in r["gpus"]:
        _rows(f"GPU {gpu['index']}", [
            ("name", gpu["name"]),
            ("compute capability", gpu["compute_capability"]),
            ("memory", f"{gpu['memory_gib']} GiB"),
            ("bf16 native", gpu["bf16_native"]),
            ("NVML index", gpu["nvml_index"]),
        ])  # fmt: skip
    if not r["gpus"]:
        console.print("no CUDA GPU: genos trains on the CPU (fp32)")
    c = r["genos_would_use"]
    _rows("genos would use", [
        ("device", c["device"]),
        ("precision", c["precision"] + (" (TF32 matmuls)" if c["tf32"] else "")),
        ("attention", c["attention"]),
        ("experts", c["experts"]),
        ("torch.compile", c["compile"]),
    ])  # fmt: skip
