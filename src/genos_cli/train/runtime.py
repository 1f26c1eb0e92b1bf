"""One rank's training runtime on DeepSpeed: process group, precision, the engine, its
collectives and its checkpoint files.

`Runtime` is everything the trainer does through DeepSpeed, as methods: wrap the model
(`deepspeed.initialize` with expert parallelism, MoE-aware AdamW groups, ZeRO 0/1/2), run a
micro-batch forward/backward and step, set the learning rate, reduce metrics over ranks,
save and load DeepSpeed's checkpoint shards (safely), and gather the consolidated model. It
implements `genos_cli.checkpoint.training.ShardWriter`.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import pickle
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from genos_cli.device import autocast, enable_tf32, resolve_precision
from genos_cli.errors import GenosError
from genos_cli.train.ds import (
    checkpoint_safe_globals,
    deepspeed,
    safe_get_full_fp32_param,
    split_params_into_different_moe_groups_for_optimizer,
)
from genos_cli.train.expert_parallel import (
    apply_expert_parallel,
    from_deepspeed_state_dicts,
    is_expert_key,
)
from genos_cli.train.plan import check_precision

if TYPE_CHECKING:
    from genos_cli.config import TrainingConfig
    from genos_cli.model import GenosForCausalLM, GenosOutput
    from genos_cli.train.plan import TrainPlan


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed() -> DistInfo:
    """Join the process group DeepSpeed's launcher set up (RANK/WORLD_SIZE/... in the
    environment), or make a one-process group for a run in this process: DeepSpeed's
    engine always needs `torch.distributed`. NCCL on GPUs, gloo on CPUs.

    The rank's GPU is selected before the process group starts: NCCL binds its
    communicator to the current device, and without `set_device` every rank of a node
    would first create a context on GPU 0.
    """
    if "RANK" not in os.environ and not dist.is_initialized():
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            LOCAL_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
        if device.type == "cpu":
            atexit.register(remove_shm_buffer, shm_buffer_path(dist.get_rank()))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shm_buffer_path(rank: int) -> Path:
    """The shared-memory file DeepSpeed's CPU all-reduce (its `shm_comm` op) creates for this
    rank, named as its shm.cpp names it: prefix, uid, MASTER_ADDR, MASTER_PORT, rank."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return Path("/dev/shm") / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def remove_shm_buffer(path: Path) -> None:
    """DeepSpeed never unlinks that file: every CPU run would leave 66 MB of RAM in
    /dev/shm behind it. Removed at exit, when every rank has long since mapped its peers'
    (unlinking keeps existing mappings valid)."""
    path.unlink(missing_ok=True)


def deepspeed_config(plan: TrainPlan, grad_accum: int, precision: str) -> dict[str, Any]:
    """The DeepSpeed config for a plan (https://www.deepspeed.ai/docs/config-json/). The
    learning rate schedule stays genos's (set on the optimizer each step), so it is exactly
    restored from the step number on resume.

    In bf16/fp16 the gradients are accumulated over micro-batches and reduced over ranks in
    fp32 (`data_types.grad_accum_dtype`, `communication_data_type`): the small preset on one
    GPU sums 8 micro-batches, and bf16's 8-bit mantissa would round each addition. DeepSpeed
    does that under ZeRO 1 (its BF16_Optimizer) and 2 only, hence `check_precision`.
    """
    t = plan.config.training
    low_precision = precision in ("bf16", "fp16")
    return {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {
            "stage": t.zero_stage,
            "contiguous_gradients": True,
            "overlap_comm": torch.cuda.is_available(),
            "reduce_bucket_size": 50_000_000,
            "allgather_bucket_size": 50_000_000,
        },
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        **(
            {"data_types": {"grad_accum_dtype": "fp32"}, "communication_data_type": "fp32"}
            if low_precision
            else {}
        ),
        "zero_allow_untested_optimizer": True,  # torch's AdamW, with ZeRO 1/2
        "steps_per_print": 2**31 - 1,  # genos reports progress itself
        "wall_clock_breakdown": False,
    }


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (linear and expert weights, embeddings), none on norms."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(
    groups: list[dict[str, Any]], training: TrainingConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The AdamW genos trains with: torch's fused kernel (one launch for all parameters, on
    GPUs and, since torch 2.4, on CPUs), else the multi-tensor `foreach` one. Fused is the
    fastest here on CPU too (measured on the small preset); the benchmarks use this same
    optimizer, so they measure what `genos train` runs."""
    kwargs: dict[str, Any] = {
        "lr": training.lr,
        "betas": (training.adam_beta1, training.adam_beta2),
        "eps": training.adam_eps,
    }
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
        return torch.optim.AdamW(groups, foreach=device.type != "meta", **kwargs)


class Runtime:
    """This rank's process group, precision and DeepSpeed engine (see the module doc)."""

    def __init__(self, plan: TrainPlan) -> None:
        self.plan = plan
        self.dist = init_distributed()
        self.is_main = self.dist.rank == 0
        self.device = self.dist.device
        self.precision = resolve_precision(plan.config.training.precision, self.device)
        check_precision(self.precision, plan.config.training.zero_stage)
        enable_tf32(self.device, self.precision)
        self.grad_accum = plan.grad_accum(self.dist.world_size)
        self.ep_size = plan.config.training.expert_parallel_size
        self._engine: Any = None

    # -- the model ----------------------------------------------------------------------------

    def wrap(self, model: GenosForCausalLM) -> None:
        """`deepspeed.initialize` for a genos model: expert parallelism when configured,
        MoE-aware AdamW parameter groups, ZeRO 0/1/2."""
        t = self.plan.config.training
        if self.ep_size > 1:
            if self.dist.world_size % self.ep_size:
                raise GenosError(
                    f"--expert-parallel-size {self.ep_size} must divide the number of "
                    f"processes ({self.dist.world_size})"
                )
            apply_expert_parallel(model, self.ep_size)
        model.to(self.device)
        groups = param_groups(model, t.weight_decay)
        if self.ep_size > 1:
            # Expert weights are reduced over the expert-data-parallel group, not the world.
            groups = split_params_into_different_moe_groups_for_optimizer(groups)
        optimizer = make_optimizer(groups, t, self.device)
        self._engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            config=deepspeed_config(self.plan, self.grad_accum, self.precision),
            dist_init_required=False,
        )

    @property
    def module(self) -> GenosForCausalLM:
        """The model itself (DeepSpeed casts it to bf16/fp16 when that is the precision)."""
        return self._engine.module

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer DeepSpeed steps (ZeRO's wrapper around AdamW when ZeRO is on)."""
        return self._engine.optimizer

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> GenosOutput:
        return self._engine(input_ids, labels=labels)

    def backward(self, loss: torch.Tensor) -> None:
        self._engine.backward(loss)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the run's precision, for forward passes outside the engine."""
        return autocast(self.device, self.precision)

    # -- the optimizer step -------------------------------------------------------------------

    def set_lr(self, lr: float) -> None:
        for group in self._engine.optimizer.param_groups:
            group["lr"] = lr

    def grad_norm(self) -> torch.Tensor | float | None:
        """The last step's global gradient norm as DeepSpeed keeps it: a device tensor (not
        read, so no host sync) or a float."""
        norm = self._engine.get_global_grad_norm()
        return norm.detach() if isinstance(norm, torch.Tensor) else norm

    def skipped_steps(self) -> int:
        """Optimizer steps DeepSpeed skipped so far (its ZeRO optimizer skips a step whose
        gradient norm is not finite; fp16's loss scaler skips on overflow)."""
        return int(getattr(self._engine, "skipped_steps", 0))

    def step(self) -> tuple[float | None, bool]:
        """`engine.step()` after a micro-batch's backward; at the optimizer-step boundary
        without ZeRO in fp32, with genos's gradient check. Returns (gradient norm, skipped
        by genos).

        Without ZeRO, in fp32, DeepSpeed hands the gradients to torch's optimizer unchecked
        (and reports no norm), so a NaN would reach the weights. There genos computes the
        global gradient norm and, when it is not finite, zeroes the gradients (so DeepSpeed's
        clipping sees numbers) and turns this one optimizer step into a no-op: no update, no
        weight decay, no change of Adam's moments. Elsewhere it returns (None, False):
        DeepSpeed's ZeRO, bf16 and fp16 optimizers check the norm themselves and skip a
        non-finite step (`skipped_steps` counts them).
        """
        engine = self._engine
        checked_by_deepspeed = (
            engine.zero_optimization() or engine.bfloat16_enabled() or engine.fp16_enabled()
        )
        if checked_by_deepspeed or not engine.is_gradient_accumulation_boundary():
            engine.step()
            return None, False
        params = [p for p in engine.module.parameters() if p.grad is not None]
        norm = self._global_grad_norm(params) if params else None
        if norm is None or math.isfinite(norm):
            engine.step()
            return norm, False
        for p in params:
            p.grad.zero_()
        optimizer = engine.optimizer
        own = vars(optimizer).get("step")
        optimizer.step = lambda *args, **kwargs: None  # for this one call only
        try:
            engine.step()
        finally:
            if own is None:
                del optimizer.step
            else:
                optimizer.step = own
        return norm, True

    def _global_grad_norm(self, params: list[torch.Tensor]) -> float:
        squares = torch.zeros(2, dtype=torch.float64, device=params[0].device)
        for p in params:  # dense weights, then expert weights: they are replicated differently
            is_expert = not getattr(p, "allreduce", True)  # DeepSpeed marks expert parameters
            assert p.grad is not None  # the caller passes parameters with gradients only
            squares[int(is_expert)] += p.grad.detach().double().square().sum()
        if self.ep_size > 1 and dist.is_initialized():
            # Gradients are averaged already; each expert lives on world / ep_size ranks.
            experts = self.all_reduce_sum(squares[1:])
            squares[1] = float(experts[0]) * self.ep_size / dist.get_world_size()
        return float(squares.sum().sqrt())

    # -- collectives --------------------------------------------------------------------------

    @staticmethod
    def _reduce(values: torch.Tensor, op: Any) -> torch.Tensor:
        """All-reduce a copy of `values` where it lives (NCCL: the GPU, gloo: the CPU), so
        metrics do not travel to the host and back."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return values
        buf = values.clone()
        dist.all_reduce(buf, op=op)
        return buf

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return self._reduce(values, dist.ReduceOp.SUM)

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        return self._reduce(values, dist.ReduceOp.SUM) / self.dist.world_size

    def barrier(self) -> None:
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()

    # -- checkpoint shards (checkpoint.training.ShardWriter) ------------------------------------

    def save_shards(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """DeepSpeed's checkpoint (model, optimizer, ZeRO partitions, expert shards) under
        `directory/tag`; genos keeps its own "latest" pointer, written after every rank is
        done."""
        self._engine.save_checkpoint(
            str(directory), tag=tag, client_state=client_state, save_latest=False
        )

    def load_shards(self, directory: Path, tag: str) -> dict[str, Any]:
        # DeepSpeed's TorchCheckpointEngine reads with torch.load(weights_only=False), which
        # can run arbitrary code from a crafted file. Route every read of this engine through
        # weights_only=True (genos's own client state holds tensors and plain values only).
        self._engine.checkpoint_engine.load = weights_only_load
        path, client_state = self._engine.load_checkpoint(
            str(directory), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise GenosError(f"could not load checkpoint {directory / tag}")
        return client_state

    def consolidated_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model in genos's native layout, as the fp32 master weights (in a bf16
        run the module holds bf16 copies; export, eval and fine-tuning get the masters).

        Collective: every rank calls it (reading a ZeRO-partitioned master is an all-reduce
        over its data-parallel group). Only rank 0 gets the result, others an empty dict:
        with experts sharded, ranks 1 .. ep_size-1 (the rest of the first expert-parallel
        group) send rank 0 their experts, and nothing else travels.
        """
        local = self._fp32_state_dict()
        if self.ep_size == 1:
            return local if self.is_main else {}
        rank = self.dist.rank
        if rank == 0:
            shards = [local]
            for src in range(1, self.ep_size):
                box: list[Any] = [None]
                dist.recv_object_list(box, src=src)
                shards.append(box[0])
            return from_deepspeed_state_dicts(shards, self.plan.config.model)
        if rank < self.ep_size:
            experts = {k: v for k, v in local.items() if is_expert_key(k)}
            dist.send_object_list([experts], dst=0)
        return {}

    def _fp32_state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's module state with every parameter replaced by its fp32 master (the
        parameter itself where DeepSpeed keeps none: fp32 without ZeRO), on the CPU."""
        module = self._engine.module
        out: dict[str, torch.Tensor] = {}
        for name, param in module.named_parameters():
            master = safe_get_full_fp32_param(param)  # collective under ZeRO / bf16
            out[name] = (param if master is None else master).detach().float().cpu()
        for name, value in module.state_dict().items():
            out.setdefault(name, value.detach().cpu())  # persistent buffers, if any
        return out


def weights_only_load(path: str | Path, map_location: Any = None) -> Any:
    """`torch.load` that runs no pickled code: tensors, containers, numbers and the
    allow-listed DeepSpeed records only. Anything else is refused with a GenosError."""
    allowed = checkpoint_safe_globals()
    if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5: scoped to this call
        scope: contextlib.AbstractContextManager = torch.serialization.safe_globals(allowed)
    else:
        torch.serialization.add_safe_globals(allowed)
        scope = contextlib.nullcontext()
    try:
        with scope:
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        detail = f"it would run {found[1]}" if found else "it holds objects other than tensors"
        raise GenosError(
            f"{path}: refusing to load it ({detail}); genos loads checkpoints without "
            "running pickled code, and this file is not one genos wrote"
        ) from None
