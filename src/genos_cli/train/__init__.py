"""Training: DeepSpeed engine (only `engine` imports deepspeed), data, loop, checkpoints."""

from __future__ import annotations

import os

if "DS_ACCELERATOR" not in os.environ:
    # Tell DeepSpeed up front that a machine without CUDA trains on its CPU, instead of it
    # probing (and warning) on import.
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
