"""The one module that imports DeepSpeed: the rest of genos takes DeepSpeed from here.

On a machine without CUDA, DeepSpeed is told up front that it runs on the CPU (instead of
probing, and warning, on import), and its INFO lines are silenced: genos reports progress
itself.
"""

from __future__ import annotations

import os

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

__all__ = [
    "Experts",
    "MoE",
    "TopKGate",
    "comm",
    "deepspeed",
    "safe_get_full_fp32_param",
    "split_params_into_different_moe_groups_for_optimizer",
]
