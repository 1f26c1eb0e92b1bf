"""The model on a CUDA GPU, in the precision training picks there (bf16 where native), against
the same weights in fp32 on the CPU. Skipped where there is no GPU (`gpu` marker)."""

from __future__ import annotations

import copy

import pytest
import torch

from genos_cli.config.schema import ModelConfig
from genos_cli.device import resolve_precision
from genos_cli.model import build_model

pytestmark = pytest.mark.gpu


def test_cuda_forward_backward_tracks_cpu_fp32(tiny_config: ModelConfig) -> None:
    device = torch.device("cuda")
    precision = resolve_precision("auto", device)
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]
    torch.manual_seed(0)
    model = build_model(tiny_config, compile=False)
    ids = torch.randint(0, tiny_config.vocab_size, (2, tiny_config.max_seq_length))
    reference = model(ids, labels=ids)

    gpu = copy.deepcopy(model).to(device)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        out = gpu(ids.to(device), labels=ids.to(device))
    torch.testing.assert_close(out.lm_loss.float().cpu(), reference.lm_loss, atol=2e-2, rtol=0)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())
