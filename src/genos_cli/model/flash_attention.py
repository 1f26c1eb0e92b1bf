"""Whether to run attention on flash-attn (Dao 2023, FlashAttention-2), decided once.

flash-attn is an optional extra (`pip install 'genos[gpu]'`) built against one torch and one
CUDA. genos uses it only where it can work, and otherwise PyTorch's SDPA, which has its own
flash and memory-efficient kernels:

- the package loads (a build for another torch fails at import with an undefined symbol:
  that is a warning, once, and SDPA — never a crash on the first forward);
- the tensors are CUDA bf16/fp16 on compute capability 8.0+ (FlashAttention-2 kernels exist
  for Ampere and later only);
- under `torch.compile`, flash-attn 2.7+: earlier releases are not registered as torch
  custom ops and break the compiled graph at every attention call.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

MIN_CAPABILITY = (8, 0)
MIN_VERSION_UNDER_COMPILE = (2, 7)


@dataclass(frozen=True)
class FlashAttn:
    """flash-attn as this process sees it."""

    func: Callable[..., torch.Tensor] | None  # flash_attn_func, when it loads
    version: tuple[int, ...] | None
    problem: str | None  # why it is not usable at all (not installed, does not load)

    @property
    def installed(self) -> bool:
        return self.version is not None or (self.problem or "").startswith("installed")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@cache
def flash_attn() -> FlashAttn:
    """Load flash-attn once; a build that cannot load is reported, not raised."""
    if importlib.util.find_spec("flash_attn") is None:
        return FlashAttn(None, None, "not installed (pip install 'genos[gpu]')")
    try:
        module: Any = importlib.import_module("flash_attn")
        func = module.flash_attn_func
        version = _version(str(getattr(module, "__version__", "0")))
    except Exception as exc:  # ImportError, OSError (undefined symbol), RuntimeError, ...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        return FlashAttn(None, None, f"installed but does not load ({reason})")
    return FlashAttn(func, version, None)


@cache
def _capability(device_index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device_index)


@cache
def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def flash_attn_usable(device: torch.device, dtype: torch.dtype, *, compiling: bool) -> str | None:
    """None if flash-attn will run attention for tensors of this device and dtype, else why
    not (for `genos env` and the warning)."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return "flash-attn runs CUDA bf16/fp16 only"
    fa = flash_attn()
    if fa.func is None:
        return f"flash-attn is {fa.problem}"
    index = device.index if device.index is not None else torch.cuda.current_device()
    if _capability(index) < MIN_CAPABILITY:
        return "flash-attn needs compute capability 8.0 or later (Ampere+)"
    if compiling and (fa.version or (0,)) < MIN_VERSION_UNDER_COMPILE:
        version = ".".join(map(str, fa.version or ()))
        return f"flash-attn {version} breaks torch.compile graphs (2.7+ does not)"
    return None


def use_flash_attn(q: torch.Tensor) -> bool:
    """Whether `causal_attention` runs flash-attn for `q`. A flash-attn that is installed
    but cannot be used here is reported once, as a warning."""
    if not q.is_cuda or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    why_not = flash_attn_usable(q.device, q.dtype, compiling=torch.compiler.is_compiling())
    if why_not is not None and flash_attn().installed:
        _warn(f"{why_not}: attention uses PyTorch SDPA instead")
    return why_not is None
