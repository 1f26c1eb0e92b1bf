"""The GPU path's decisions, proven on this CPU machine with fake device information:
precision (native bf16 only, TF32 for fp32 on Ampere+), the flash-attn fallback, the NVML
index of a CUDA device, and the DeepSpeed config of a bf16 run."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genos_cli import device as device_module
from genos_cli.config import load_config
from genos_cli.errors import GenosError
from genos_cli.model import flash_attention
from genos_cli.telemetry.system import DeviceIdentity, match_nvml_index, nvml_index
from genos_cli.train.plan import TrainPlan, check_precision
from genos_cli.train.runtime import deepspeed_config

CUDA0 = torch.device("cuda", 0)


def _fake_cuda(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], *, emulated_bf16: bool = True
) -> None:
    """A CUDA device of the given compute capability. Like torch, `is_bf16_supported` says
    yes on pre-Ampere GPUs unless `including_emulation=False` is passed."""

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return capability >= (8, 0) or (including_emulation and emulated_bf16)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)


@pytest.mark.parametrize(
    ("gpu", "capability", "precision"),
    [("V100", (7, 0), "fp32"), ("T4", (7, 5), "fp32"), ("A100", (8, 0), "bf16"),
     ("H100", (9, 0), "bf16")],
)  # fmt: skip
def test_auto_precision_is_bf16_only_where_native(
    monkeypatch: pytest.MonkeyPatch, gpu: str, capability: tuple[int, int], precision: str
) -> None:
    _fake_cuda(monkeypatch, capability)
    assert device_module.resolve_precision("auto", CUDA0) == precision, gpu
    assert device_module.resolve_precision("auto", torch.device("cpu")) == "fp32"
    # Inference casts the weights to the same precision.
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    assert device_module.inference_dtype(CUDA0) == dtype, gpu
    assert device_module.inference_dtype(torch.device("cpu")) == torch.float32


@pytest.fixture
def tf32_off() -> Iterator[None]:
    """TF32 off for the test, then as it was (torch's flags are properties: no monkeypatch)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_tf32_on_for_fp32_on_ampere_only(monkeypatch: pytest.MonkeyPatch, tf32_off: None) -> None:
    _fake_cuda(monkeypatch, (7, 0))
    assert not device_module.enable_tf32(CUDA0, "fp32")
    assert not torch.backends.cuda.matmul.allow_tf32
    _fake_cuda(monkeypatch, (8, 0))
    assert not device_module.enable_tf32(CUDA0, "bf16")  # bf16 runs need no TF32
    assert not device_module.enable_tf32(torch.device("cpu"), "fp32")
    assert device_module.enable_tf32(CUDA0, "fp32")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_bf16_needs_zero_1_or_2() -> None:
    check_precision("bf16", 1)
    check_precision("bf16", 2)
    check_precision("fp32", 0)
    with pytest.raises(GenosError, match="--zero-stage 1 or 2"):
        check_precision("bf16", 0)


def test_bf16_accumulates_and_reduces_gradients_in_fp32(tmp_path: Path) -> None:
    cfg = load_config("small")
    plan = TrainPlan(config=cfg, output_dir=tmp_path, checkpoint_dir=tmp_path / "c",
                     train_prefixes=[tmp_path / "d"], tokenizer_kind="bpe",
                     total_steps=1)  # fmt: skip
    bf16 = deepspeed_config(plan, grad_accum=8, precision="bf16")
    assert bf16["data_types"] == {"grad_accum_dtype": "fp32"}
    assert bf16["communication_data_type"] == "fp32" and bf16["bf16"] == {"enabled": True}
    fp32 = deepspeed_config(plan, grad_accum=8, precision="fp32")
    assert "data_types" not in fp32 and "communication_data_type" not in fp32


# -- flash-attn --------------------------------------------------------------------------------


def _use_fake_flash_attn(
    monkeypatch: pytest.MonkeyPatch, module: types.ModuleType | None, *, broken: bool = False
) -> None:
    flash_attention.flash_attn.cache_clear()
    flash_attention._capability.cache_clear()
    flash_attention._warn.cache_clear()
    if module is None:
        monkeypatch.setitem(sys.modules, "flash_attn", None)
        monkeypatch.setattr(flash_attention.importlib.util, "find_spec", lambda name: None)
        return
    monkeypatch.setattr(flash_attention.importlib.util, "find_spec", lambda name: object())
    if broken:  # a build for another torch: the import fails with an undefined symbol

        def fail(name: str) -> types.ModuleType:
            raise ImportError("flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDevice")

        monkeypatch.setattr(flash_attention.importlib, "import_module", fail)
    else:
        monkeypatch.setattr(flash_attention.importlib, "import_module", lambda name: module)


@pytest.fixture(autouse=True)
def _fresh_flash_state() -> Iterator[None]:
    yield
    flash_attention.flash_attn.cache_clear()
    flash_attention._capability.cache_clear()
    flash_attention._warn.cache_clear()


def _flash_module(version: str) -> types.ModuleType:
    module = types.ModuleType("flash_attn")
    module.__version__ = version  # type: ignore[attr-defined]
    module.flash_attn_func = lambda q, k, v, causal: q  # type: ignore[attr-defined]
    return module


def test_flash_attn_used_on_ampere_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_fake_flash_attn(monkeypatch, _flash_module("2.7.4"))
    monkeypatch.setattr(flash_attention, "_capability", lambda index: (9, 0))
    assert flash_attention.flash_attn_usable(CUDA0, torch.bfloat16, compiling=True) is None
    assert flash_attention.flash_attn().version == (2, 7, 4)


@pytest.mark.parametrize(
    ("version", "capability", "dtype", "compiling", "reason"),
    [
        ("2.7.4", (7, 5), torch.float16, False, "compute capability 8.0"),
        ("2.6.3", (8, 0), torch.bfloat16, True, "breaks torch.compile graphs"),
        ("2.7.4", (8, 0), torch.float32, False, "CUDA bf16/fp16 only"),
    ],
)
def test_flash_attn_falls_back_to_sdpa_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, version: str, capability: tuple[int, int],
    dtype: torch.dtype, compiling: bool, reason: str,
) -> None:  # fmt: skip
    _use_fake_flash_attn(monkeypatch, _flash_module(version))
    monkeypatch.setattr(flash_attention, "_capability", lambda index: capability)
    why_not = flash_attention.flash_attn_usable(CUDA0, dtype, compiling=compiling)
    assert why_not is not None and reason in why_not
    if version == "2.6.3":  # the same old build is fine without compile
        assert flash_attention.flash_attn_usable(CUDA0, dtype, compiling=False) is None


def test_a_broken_flash_attn_build_is_a_warning_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _use_fake_flash_attn(monkeypatch, _flash_module("2.7.4"), broken=True)
    fa = flash_attention.flash_attn()
    assert fa.func is None and fa.installed and "undefined symbol" in (fa.problem or "")
    monkeypatch.setattr(flash_attention, "_capability", lambda index: (9, 0))
    q = torch.empty(1, 4, 2, 8, dtype=torch.bfloat16)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: CUDA0))
    with pytest.warns(RuntimeWarning, match="does not load .* PyTorch SDPA instead"):
        assert not flash_attention.use_flash_attn(q)


def test_no_flash_attn_is_silent_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_fake_flash_attn(monkeypatch, None)
    fa = flash_attention.flash_attn()
    assert not fa.installed and "pip install 'genos[gpu]'" in (fa.problem or "")


# -- NVML ---------------------------------------------------------------------------------------

NVML_GPUS = [  # what NVML sees: every GPU of the machine, in its own order
    DeviceIdentity("8f1a0c2e-0000-0000-0000-000000000000", (0, 0x1B, 0)),
    DeviceIdentity("3c77d4aa-0000-0000-0000-000000000000", (0, 0x3B, 0)),
    DeviceIdentity("b2e91f05-0000-0000-0000-000000000000", (0, 0x86, 0)),
]


def test_nvml_index_follows_the_device_not_the_local_rank() -> None:
    # CUDA_VISIBLE_DEVICES=2,1: CUDA's device 0 is the machine's third GPU.
    cuda0 = DeviceIdentity("b2e91f05-0000-0000-0000-000000000000", (0, 0x86, 0))
    assert match_nvml_index(cuda0, NVML_GPUS) == 2
    by_pci_only = DeviceIdentity(None, (0, 0x3B, 0))
    assert match_nvml_index(by_pci_only, NVML_GPUS) == 1
    assert match_nvml_index(DeviceIdentity("ffffffff", None), NVML_GPUS) is None


def test_nvml_index_through_fake_nvml_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    uuids = ["GPU-8f1a0c2e", "GPU-3c77d4aa", "GPU-b2e91f05"]
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 3,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: uuids[h].encode(),  # older pynvml gives bytes
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(busId=f"00000000:{h:02X}:00.0"),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    props = types.SimpleNamespace(uuid="3c77d4aa", pci_domain_id=0, pci_bus_id=9, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    assert nvml_index(0) == 1  # by UUID, whatever the local rank
