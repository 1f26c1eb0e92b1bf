"""A checkpoint loaded for inference: on the chosen device, in eval mode, its weights in the
dtype `genos_cli.device.inference_dtype` picks (bf16 on GPUs that compute it natively, fp32
elsewhere)."""

from __future__ import annotations

from pathlib import Path

from genos_cli import checkpoint
from genos_cli.device import inference_dtype, pick_device


def load_for_inference(
    path: Path | str, device_name: str | None = None
) -> checkpoint.LoadedCheckpoint:
    """The checkpoint `path` names on `device_name` (None: a GPU when present). The weights
    are cast once; the router and RMSNorm still compute in fp32 (see `genos_cli.model`)."""
    device = pick_device(device_name)
    ckpt = checkpoint.load(Path(path), device)
    ckpt.model.to(inference_dtype(device))
    return ckpt
