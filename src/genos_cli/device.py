"""Which device and precision a model runs on: one rule for training, evaluation and inference.

- `--device`: a GPU when present, else the CPU.
- `--precision auto`: bf16 on GPUs that compute it natively, fp32 elsewhere (this project's
  CPU runs bf16 matmuls ~300x slower than fp32, and GPUs before Ampere only emulate bf16).
  Evaluation autocasts to it; inference casts the weights to it (`inference_dtype`).
"""

from __future__ import annotations

import contextlib

import torch

from genos_cli.errors import GenosError


def pick_device(name: str | None) -> torch.device:
    """`name` as a device ("cpu", "cuda", "cuda:N"); None or "auto": a GPU when present."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenosError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GenosError(
            f"--device {name!r} is not a device (expected cpu, cuda or cuda:N)"
        ) from None


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (CUDA compute capability 8.0+)."""
    if device.type != "cuda":
        return False
    try:  # torch >= 2.3: without emulation, a V100 or T4 says no
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' → bf16 where `bf16_native`, else fp32. fp16 needs CUDA (DeepSpeed's loss
    scaler)."""
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise GenosError("--precision fp16 needs a CUDA GPU; use fp32 (or bf16) on CPU")
    return precision


def tf32_available(device: torch.device) -> bool:
    """Whether fp32 matmuls on `device` can run on TF32 tensor cores (Ampere and later)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def enable_tf32(device: torch.device, precision: str) -> bool:
    """fp32 on an Ampere+ GPU: let matmuls and convolutions use TF32 tensor cores (10-bit
    mantissa products, fp32 accumulation), as Megatron-LM and PyTorch Lightning do; without
    it fp32 runs at a fraction of the GPU. Returns whether TF32 is on."""
    if precision != "fp32" or not tf32_available(device):
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None for fp32 (no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def inference_dtype(device: torch.device) -> torch.dtype:
    """The dtype a trained model's weights are cast to for inference on `device`: what
    `--precision auto` picks (bf16 where `bf16_native`, fp32 elsewhere). Casting the weights
    once, as Hugging Face and vLLM run inference, rather than autocasting, which would
    re-cast every weight at every decoding step."""
    return autocast_dtype(resolve_precision("auto", device)) or torch.float32


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to the precision's dtype on `device`, or nothing for fp32."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
