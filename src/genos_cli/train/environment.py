"""`genos env`: what a bug report needs, and what genos would choose on this machine.

Versions (genos, Python, torch with its CUDA / cuDNN / NCCL, DeepSpeed and which of its ops
can be built here, flash-attn), the GPUs (name, compute capability, memory, native bf16,
the NVML index that matches each), the NVIDIA driver, and the decisions `genos train` makes
from them: precision, TF32, the attention kernel, the experts' grouped GEMM, torch.compile.
Like `accelerate env` and `ds_report`, in one place.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

import torch

from genos_cli import __version__
from genos_cli.device import bf16_native, resolve_precision, tf32_available
from genos_cli.model.flash_attention import flash_attn, flash_attn_usable
from genos_cli.model.moe import native_grouped_mm_available
from genos_cli.model.transformer import compile_available


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch() -> dict[str, Any]:
    nccl = None
    if torch.cuda.is_available() and hasattr(torch.cuda, "nccl"):
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # a build without NCCL
            nccl = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "nccl": nccl,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
    }


def _deepspeed() -> dict[str, Any]:
    """DeepSpeed's version, accelerator, and which of its ops are compatible (ds_report's
    op table), or why it cannot be imported."""
    try:
        from genos_cli.train.ds import op_report
    except Exception as exc:  # not installed, or broken against this torch
        return {"version": _version("deepspeed"), "error": " ".join(str(exc).split())[:200]}
    return op_report()


def _flash_attn() -> dict[str, Any]:
    fa = flash_attn()
    return {
        "installed": fa.installed,
        "importable": fa.func is not None,
        "version": None if fa.version is None else ".".join(map(str, fa.version)),
        "problem": fa.problem,
    }


def _gpus() -> list[dict[str, Any]]:
    from genos_cli.telemetry.system import nvml_index

    gpus = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        device = torch.device("cuda", i)
        gpus.append(
            {
                "index": i,
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "bf16_native": bf16_native(device),
                "tf32": tf32_available(device),
                "nvml_index": nvml_index(i),
            }
        )
    return gpus


def _driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # no library, no driver
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def _choices() -> dict[str, Any]:
    """What `genos train` (and eval / inference) would pick on the first device here."""
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    precision = resolve_precision("auto", device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    compiles = compile_available(device)
    why_not = flash_attn_usable(device, dtype, compiling=compiles)
    return {
        "device": str(device),
        "precision": precision,
        "tf32": precision == "fp32" and tf32_available(device),
        "attention": "flash-attn" if why_not is None else f"PyTorch SDPA ({why_not})",
        "experts": (
            "grouped GEMM (torch._grouped_mm)"
            if native_grouped_mm_available(device, dtype)
            else "one matmul per expert"
        ),
        "compile": compiles,
    }


def collect() -> dict[str, Any]:
    """Everything `genos env` reports, as plain JSON-able values."""
    return {
        "genos": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": _torch(),
        "deepspeed": _deepspeed(),
        "flash_attn": _flash_attn(),
        "transformers": _version("transformers"),
        "nvidia_driver": _driver(),
        "gpus": _gpus(),
        "genos_would_use": _choices(),
    }
