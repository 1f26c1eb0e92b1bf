"""The one module that imports DeepSpeed: the rest of genos takes DeepSpeed from here.

On a machine without CUDA, DeepSpeed is told up front that it runs on the CPU (instead of
probing, and warning, on import), and its INFO lines are silenced: genos reports progress
itself.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import Any

import torch

if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
    os.environ["DS_ACCELERATOR"] = "cpu"

import deepspeed
import deepspeed.comm as comm
from deepspeed.moe.experts import Experts
from deepspeed.moe.layer import MoE
from deepspeed.moe.sharded_moe import TopKGate
from deepspeed.moe.utils import (
    split_params_into_different_moe_groups_for_optimizer,
)
from deepspeed.utils import safe_get_full_fp32_param

deepspeed.utils.logger.setLevel("WARNING")


def op_report() -> dict[str, Any]:
    """DeepSpeed's version, its accelerator, and which of its ops can be built or loaded
    here (the op table of `ds_report`), for `genos env`."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.ops.op_builder.all_ops import ALL_OPS

    ops = {}
    for name, builder in sorted(ALL_OPS.items()):
        try:
            ops[name] = bool(builder.is_compatible(verbose=False))
        except Exception:  # a builder that cannot even check
            ops[name] = False
    return {
        "version": deepspeed.__version__,
        "accelerator": get_accelerator()._name,
        "ops_compatible": ops,
    }


def checkpoint_safe_globals() -> list[Any]:
    """The few non-tensor objects DeepSpeed pickles into its checkpoint files (ZeRO's loss
    scaler, its stage enum, parameter-slice records): plain data classes, allow-listed for
    `torch.load(weights_only=True)`. Looked up by name: they move between releases."""
    found: list[Any] = []
    for module, name in (
        ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
        ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
        ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
        ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(importlib.import_module(module), name))
    return found


__all__ = [
    "Experts",
    "MoE",
    "TopKGate",
    "checkpoint_safe_globals",
    "comm",
    "deepspeed",
    "op_report",
    "safe_get_full_fp32_param",
    "split_params_into_different_moe_groups_for_optimizer",
]
