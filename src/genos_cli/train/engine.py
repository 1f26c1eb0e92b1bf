"""The training engine's DeepSpeed side: the only genos module that imports `deepspeed`.

It holds the training engine (process group, DeepSpeed config, `deepspeed.initialize`,
checkpoint save/load, collectives) and expert parallelism.

`apply_expert_parallel(model, ep_size)` swaps each genos `MoELayer` for a
`DeepSpeedMoELayer`: DeepSpeed's `deepspeed.moe.layer.MoE` (its dispatch, all-to-all between
the ranks of an expert-parallel group, and combine) wrapping genos's SwiGLU expert, with
`ep_size` ranks each holding E / ep_size experts.

Routing: DeepSpeed's own top-2 gate (`deepspeed.moe.sharded_moe.top2gating`) is not genos's
router. With drop_tokens=False (dropless), use_rts=False and
top2_2nd_expert_sampling=False it picks the same two experts with the same renormalised
weights, but it differs in two places:

1. The second expert is sampled with Gumbel noise unless top2_2nd_expert_sampling=False
   (its default is True); genos always takes the top 2. Random token selection (use_rts)
   only affects top-1 gating and capacity dropping, both unused here.
2. Its auxiliary loss is GShard's (Lepikhin et al. 2020): E * sum_e P_e * f1_e with f1_e
   the fraction of tokens whose *first* choice is e (top-k gating with k > 2 uses
   E / K * sum_e P_e * f_e instead). Genos's and Mixtral's is E * sum_e P_e * f_e with f_e
   counting all K routes (`genos_cli.model.losses.load_balancing_loss`).

So by default the adapter replaces DeepSpeed's gate with `GenosTopKGate`, which computes
genos's routing and losses and hands DeepSpeed the per-route (expert, slot, weight)
triples its dispatch expects; `gate="deepspeed"` keeps DeepSpeed's gate (configured as
above) and ignores its aux loss, recomputing genos's from the same router weights.
tests/parity/test_deepspeed_moe.py checks both against the native layer.

Weights: the native layer stacks experts (`w_gate_up` (E, D, 2F), `w_down` (E, F, D));
DeepSpeed keeps one `SwiGLU` module per local expert. Rank r of an expert-parallel group
holds global experts r * E/ep_size ... (r + 1) * E/ep_size - 1 (DeepSpeed's all-to-all
sends the r-th chunk of the expert dimension to rank r). `to_deepspeed_state_dict` and
`from_deepspeed_state_dicts` convert whole-model state dicts both ways.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import pickle
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import deepspeed
import deepspeed.comm as ds_dist
import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.moe.layer import MoE
from deepspeed.moe.sharded_moe import TopKGate
from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer
from torch import nn

from genos_cli.errors import GenosError
from genos_cli.model.layers import SwiGLU
from genos_cli.model.losses import load_balancing_loss
from genos_cli.model.moe import MoELayer, MoERouting, expert_counts, route, router_logits

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig
    from genos_cli.model.transformer import GenosForCausalLM
    from genos_cli.train.plan import TrainPlan

GateKind = Literal["genos", "deepspeed"]

# genos reports progress itself; DeepSpeed's INFO lines would interleave with it.
deepspeed.utils.logger.setLevel("WARNING")

__all__ = [
    "DeepSpeedMoELayer",
    "GenosTopKGate",
    "apply_expert_parallel",
    "from_deepspeed_state_dicts",
    "route_slots",
    "to_deepspeed_state_dict",
]


def route_slots(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Slot of each route in its expert's buffer, routes taken choice-major: (N, K) -> (K, N).

    All first choices in token order, then all second choices, ... (the order of
    DeepSpeed's `top2gating`, where a second choice's slot starts after every first choice
    sent to the same expert).
    """
    by_choice = experts.t().reshape(-1)  # (K*N,) choice-major
    one_hot = F.one_hot(by_choice, num_experts)  # (K*N, E)
    slots = (one_hot.cumsum(dim=0) - 1).gather(1, by_choice.unsqueeze(1))  # (K*N, 1)
    return slots.view(experts.shape[1], experts.shape[0])


class GenosTopKGate(TopKGate):
    """DeepSpeed gate computing genos's router: fp32 softmax, top-k, renormalise, dropless.

    Returns DeepSpeed's sparse-route tuple (l_aux, capacity, E, expert (K, N), slot (K, N),
    weight (K, N), counts (E,)) or, when called with sparse_routes=False, the dense
    (l_aux, combine_weights, dispatch_mask, counts) of older DeepSpeed releases. l_aux is
    genos's load-balancing loss. The last routing is kept in `self.routing` for genos's
    losses and monitoring.
    """

    def __init__(self, hidden_size: int, num_experts: int, top_k: int) -> None:
        super().__init__(
            hidden_size,
            num_experts,
            k=top_k,
            min_capacity=0,
            noisy_gate_policy=None,
            drop_tokens=False,
            use_rts=False,
            top2_2nd_expert_sampling=False,
        )
        self.num_experts = num_experts
        self.routing: MoERouting | None = None

    def _capacity(self, counts: torch.Tensor) -> torch.Tensor:
        # Dropless: the buffer holds the busiest expert's routes. Every rank of the expert-
        # parallel group must agree on it, because the all-to-all exchanges equal chunks.
        capacity = counts.max()
        if self.ep_group is not None and ds_dist.get_world_size(group=self.ep_group) > 1:
            ds_dist.all_reduce(capacity, op=ds_dist.ReduceOp.MAX, group=self.ep_group)
        return capacity

    def forward(  # type: ignore[override]
        self,
        input: torch.Tensor,
        used_token: torch.Tensor | None = None,
        sparse_routes: bool = False,
        use_tutel: bool = False,
    ) -> tuple[Any, ...]:
        if used_token is not None or use_tutel:
            raise GenosError("the genos MoE gate supports neither used_token masks nor Tutel")
        logits = router_logits(input, self.wg.weight)  # (N, E)
        probs, weights, experts = route(logits, self.k)  # (N, E), (N, K), (N, K)
        counts = expert_counts(experts, self.num_experts)  # (E,)
        self.routing = MoERouting(logits, probs, experts, counts)
        l_aux = load_balancing_loss(probs, experts, self.num_experts)
        capacity = self._capacity(counts)
        slots = route_slots(experts, self.num_experts)  # (K, N)
        if sparse_routes:
            return (
                l_aux,
                capacity,
                self.num_experts,
                experts.t().to(torch.int32),
                slots.to(torch.int32),
                weights.t(),
                counts,
            )
        num_tokens = input.shape[0]
        combine = weights.new_zeros(num_tokens, self.num_experts, int(capacity))
        tokens = torch.arange(num_tokens, device=input.device).expand(self.k, -1)
        combine[tokens, experts.t(), slots] = weights.t()
        return l_aux, combine, combine.bool(), counts


class DeepSpeedMoELayer(nn.Module):
    """Drop-in replacement for genos's `MoELayer` running on `deepspeed.moe.layer.MoE`.

    Same call: x (..., D) -> (out (..., D), MoERouting). `ep_size` ranks share the experts;
    call `deepspeed.initialize` (or `self.ds.set_deepspeed_parallelism()`) after
    `torch.distributed` is up to create the expert-parallel groups.
    """

    def __init__(
        self,
        hidden_size: int,
        ffn_hidden_size: int,
        num_experts: int,
        top_k: int,
        *,
        ep_size: int = 1,
        gate: GateKind = "genos",
    ) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.ds = MoE(
            hidden_size,
            SwiGLU(hidden_size, ffn_hidden_size),
            num_experts=num_experts,
            ep_size=ep_size,
            k=top_k,
            min_capacity=0,
            noisy_gate_policy=None,
            drop_tokens=False,  # dropless: capacity = the busiest expert's load
            use_rts=False,
            top2_2nd_expert_sampling=False,  # the true top 2, not a Gumbel-sampled second
        )
        if gate == "genos":
            self.ds.deepspeed_moe.gate = GenosTopKGate(hidden_size, num_experts, top_k)
        elif gate != "deepspeed":
            raise GenosError(f"unknown MoE gate {gate!r}; expected 'genos' or 'deepspeed'")

    @property
    def gate(self) -> TopKGate:
        return self.ds.deepspeed_moe.gate

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoERouting]:
        out, _, counts = self.ds(x)  # DeepSpeed's l_aux is superseded by genos's losses
        gate = self.gate
        if isinstance(gate, GenosTopKGate) and gate.routing is not None:
            return out, gate.routing
        # DeepSpeed's own gate does not expose its probabilities: recompute them (one small
        # fp32 matmul) so the transformer's losses are genos's, not GShard's.
        logits = router_logits(x.reshape(-1, x.shape[-1]), gate.wg.weight)
        probs, _, experts = route(logits, self.top_k)
        return out, MoERouting(logits, probs, experts, counts)


# --------------------------------------------------------------------------------------------
# Weights: native stacked experts <-> DeepSpeed per-expert modules

_DS_GATE = "ds.deepspeed_moe.gate.wg.weight"
_DS_EXPERT = "ds.deepspeed_moe.experts.deepspeed_experts.{}.{}"


def _local_experts(num_experts: int, ep_rank: int, ep_size: int) -> range:
    if num_experts % ep_size:
        raise GenosError(f"expert_parallel_size {ep_size} must divide num_experts {num_experts}")
    if not 0 <= ep_rank < ep_size:
        raise GenosError(f"expert-parallel rank {ep_rank} is outside 0..{ep_size - 1}")
    per_rank = num_experts // ep_size
    return range(ep_rank * per_rank, (ep_rank + 1) * per_rank)


def to_deepspeed_state_dict(
    sd: Mapping[str, torch.Tensor], cfg: ModelConfig, *, ep_rank: int = 0, ep_size: int = 1
) -> dict[str, torch.Tensor]:
    """A native genos state dict as the state dict of expert-parallel rank `ep_rank` of a
    model after `apply_expert_parallel(model, ep_size)`: non-MoE weights unchanged, the
    router renamed, and only this rank's experts, one module each."""
    local = _local_experts(cfg.num_experts, ep_rank, ep_size)
    out = {}
    for key, value in sd.items():
        prefix, sep, name = key.partition("moe.")
        if not sep or not prefix.startswith("blocks.") or prefix.count(".") != 2:
            out[key] = value
        elif name == "router.weight":
            out[prefix + "moe." + _DS_GATE] = value
        elif name in ("w_gate_up", "w_down"):
            param = "gate_up" if name == "w_gate_up" else "down"
            for i, e in enumerate(local):
                out[prefix + "moe." + _DS_EXPERT.format(i, param)] = value[e]
        else:
            raise GenosError(f"unexpected MoE parameter {key!r} in genos state dict")
    return out


def from_deepspeed_state_dicts(
    rank_sds: Sequence[Mapping[str, torch.Tensor]], cfg: ModelConfig
) -> dict[str, torch.Tensor]:
    """The native genos state dict from the state dicts of all ranks of one expert-parallel
    group, in rank order (one state dict when ep_size is 1). Non-expert weights are taken
    from rank 0 (they are replicated)."""
    ep_size = len(rank_sds)
    per_rank = cfg.num_experts // ep_size
    if per_rank * ep_size != cfg.num_experts:
        raise GenosError(f"{ep_size} ranks cannot hold {cfg.num_experts} experts equally")
    out = {}
    for key, value in rank_sds[0].items():
        if ".moe.ds." not in key:
            out[key] = value
    for i in range(cfg.num_layers):
        prefix = f"blocks.{i}.moe."
        out[prefix + "router.weight"] = rank_sds[0][prefix + _DS_GATE]
        for name, param in (("w_gate_up", "gate_up"), ("w_down", "down")):
            out[prefix + name] = torch.stack(
                [
                    sd[prefix + _DS_EXPERT.format(j, param)]
                    for sd in rank_sds
                    for j in range(per_rank)
                ]
            )
    return out


def apply_expert_parallel(
    model: GenosForCausalLM,
    ep_size: int,
    *,
    ep_rank: int | None = None,
    gate: GateKind = "genos",
) -> GenosForCausalLM:
    """Swap every `MoELayer` of `model` (in place) for a `DeepSpeedMoELayer` holding this
    rank's E / ep_size experts, with the native layer's weights.

    `ep_rank` defaults to this process's rank modulo ep_size: DeepSpeed's expert-parallel
    groups are runs of ep_size consecutive ranks (`deepspeed.utils.groups.
    _create_expert_and_data_parallel`).
    """
    if ep_rank is None:
        ep_rank = ds_dist.get_rank() % ep_size if ds_dist.is_initialized() else 0
    cfg = model.config
    local = _local_experts(cfg.num_experts, ep_rank, ep_size)
    for block in model.blocks:
        native = block.moe
        if not isinstance(native, MoELayer):
            raise GenosError("apply_expert_parallel expects a model with native MoE layers")
        layer = DeepSpeedMoELayer(
            cfg.hidden_size,
            cfg.expert_ffn_hidden_size,
            cfg.num_experts,
            cfg.moe_router_topk,
            ep_size=ep_size,
            gate=gate,
        ).to(device=native.w_gate_up.device, dtype=native.w_gate_up.dtype)
        with torch.no_grad():
            layer.gate.wg.weight.copy_(native.router.weight)
            for expert, e in zip(
                layer.ds.deepspeed_moe.experts.deepspeed_experts, local, strict=True
            ):
                expert.gate_up.copy_(native.w_gate_up[e])
                expert.down.copy_(native.w_down[e])
        block.moe = layer
    return model


# --------------------------------------------------------------------------------------------
# The training engine: process group, DeepSpeed config and initialisation, checkpoints


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed() -> DistInfo:
    """Join the process group DeepSpeed's launcher set up (RANK/WORLD_SIZE/... in the
    environment), or make a one-process group for a run in this process: DeepSpeed's
    engine always needs `torch.distributed`. NCCL on GPUs, gloo on CPUs."""
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            os.environ.update(
                RANK="0",
                LOCAL_RANK="0",
                WORLD_SIZE="1",
                LOCAL_SIZE="1",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(_free_port()),
            )
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' → bf16 on GPUs that support it, else fp32 (this CPU runs bf16 matmuls ~300x
    slower than fp32). fp16 needs CUDA (DeepSpeed's loss scaler)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise GenosError("--precision fp16 needs a CUDA GPU; use fp32 (or bf16) on CPU")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def deepspeed_config(plan: TrainPlan, grad_accum: int, precision: str) -> dict[str, Any]:
    """The DeepSpeed config for a plan (https://www.deepspeed.ai/docs/config-json/). The
    learning rate schedule stays genos's (set on the optimizer each step), so it is exactly
    restored from the step number on resume."""
    t = plan.config.training
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
        "zero_allow_untested_optimizer": True,  # torch's AdamW, with ZeRO 1/2
        "steps_per_print": 2**31 - 1,  # genos reports progress itself
        "wall_clock_breakdown": False,
    }


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (linear and expert weights, embeddings), none on norms."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def initialize(
    model: GenosForCausalLM, plan: TrainPlan, grad_accum: int, precision: str, info: DistInfo
) -> Any:
    """`deepspeed.initialize` for a genos model: expert parallelism when configured, MoE-aware
    AdamW parameter groups, ZeRO 0/1/2."""
    t = plan.config.training
    if t.expert_parallel_size > 1:
        if info.world_size % t.expert_parallel_size:
            raise GenosError(
                f"--expert-parallel-size {t.expert_parallel_size} must divide the number of "
                f"processes ({info.world_size})"
            )
        apply_expert_parallel(model, t.expert_parallel_size)
    model.to(info.device)
    groups = param_groups(model, t.weight_decay)
    if t.expert_parallel_size > 1:
        # Expert weights are reduced over the expert-data-parallel group, not the world.
        groups = split_params_into_different_moe_groups_for_optimizer(groups)
    optimizer = torch.optim.AdamW(
        groups, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps
    )
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=deepspeed_config(plan, grad_accum, precision),
        dist_init_required=False,
    )
    return engine


def set_lr(engine: Any, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def grad_norm(engine: Any) -> float | None:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm.item() if isinstance(norm, torch.Tensor) else norm)


def skipped_steps(engine: Any) -> int:
    """Optimizer steps DeepSpeed skipped so far (its ZeRO optimizer skips a step whose
    gradient norm is not finite; fp16's loss scaler skips on overflow)."""
    return int(getattr(engine, "skipped_steps", 0))


def micro_step(engine: Any, ep_size: int) -> tuple[float | None, bool]:
    """`engine.step()` after a micro-batch's backward; at the optimizer-step boundary without
    ZeRO in fp32, with genos's gradient check. Returns (gradient norm, skipped by genos).

    Without ZeRO, in fp32, DeepSpeed hands the gradients to torch's optimizer unchecked (and
    reports no norm), so a NaN would reach the weights. There genos computes the global
    gradient norm and, when it is not finite, zeroes the gradients (so DeepSpeed's clipping
    sees numbers) and turns this one optimizer step into a no-op: no update, no weight decay,
    no change of Adam's moments. Elsewhere it returns (None, False): DeepSpeed's ZeRO, bf16
    and fp16 optimizers check the norm themselves and skip a non-finite step
    (`skipped_steps` counts them).
    """
    checked_by_deepspeed = (
        engine.zero_optimization() or engine.bfloat16_enabled() or engine.fp16_enabled()
    )
    if checked_by_deepspeed or not engine.is_gradient_accumulation_boundary():
        engine.step()
        return None, False
    params = [p for p in engine.module.parameters() if p.grad is not None]
    norm = _global_grad_norm(params, ep_size) if params else None
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


def _global_grad_norm(params: list[torch.Tensor], ep_size: int) -> float:
    squares = torch.zeros(2, dtype=torch.float64, device=params[0].device)
    for p in params:  # dense weights, then expert weights: they are replicated differently
        is_expert = not getattr(p, "allreduce", True)  # DeepSpeed marks expert parameters
        squares[int(is_expert)] += p.grad.detach().double().square().sum()
    if ep_size > 1 and dist.is_initialized():
        # Gradients are averaged already; each expert lives on world / ep_size ranks.
        experts = all_reduce_sum(squares[1:].cpu())
        squares[1] = float(experts[0]) * ep_size / dist.get_world_size()
    return float(squares.sum().sqrt())


def _reduce(values: torch.Tensor, op: Any) -> torch.Tensor:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if (dist.get_backend() == "nccl")
        else torch.device("cpu")
    )
    buf = values.to(device)
    dist.all_reduce(buf, op=op)
    return buf.cpu()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    return _reduce(values, dist.ReduceOp.SUM)


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    world = dist.get_world_size() if dist.is_initialized() else 1
    return _reduce(values, dist.ReduceOp.SUM) / world


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(engine: Any, directory: Path, tag: str, client_state: dict) -> None:
    """DeepSpeed's checkpoint (model, optimizer, ZeRO partitions, expert shards) under
    `directory/tag`; genos keeps its own "latest" pointer, written after every rank is done."""
    engine.save_checkpoint(str(directory), tag=tag, client_state=client_state, save_latest=False)


def _deepspeed_safe_globals() -> list[Any]:
    """The few non-tensor objects DeepSpeed pickles into its checkpoint files (ZeRO's loss
    scaler, its stage enum, parameter-slice records): plain data classes, allow-listed for
    `torch.load(weights_only=True)`."""
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


def weights_only_load(path: str | Path, map_location: Any = None) -> Any:
    """`torch.load` that runs no pickled code: tensors, containers, numbers and the
    allow-listed DeepSpeed records only. Anything else is refused with a GenosError."""
    allowed = _deepspeed_safe_globals()
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


def load_checkpoint(engine: Any, directory: Path, tag: str) -> dict:
    # DeepSpeed's TorchCheckpointEngine reads with torch.load(weights_only=False), which can
    # run arbitrary code from a crafted file. Route every read of this engine through
    # weights_only=True (genos's own client state holds tensors and plain values only).
    engine.checkpoint_engine.load = weights_only_load
    path, client_state = engine.load_checkpoint(
        str(directory), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if path is None:
        raise GenosError(f"could not load checkpoint {directory / tag}")
    return client_state


def consolidated_state_dict(engine: Any, cfg: ModelConfig, ep_size: int) -> dict[str, torch.Tensor]:
    """The whole model in genos's native layout (experts gathered from the ranks of the
    first expert-parallel group when they are sharded). Collective: every rank calls it."""
    local = {k: v.detach().cpu() for k, v in engine.module.state_dict().items()}
    if ep_size == 1:
        return local
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return from_deepspeed_state_dicts(gathered[:ep_size], cfg)


def maybe_wandb(plan: TrainPlan, is_main: bool) -> Any:
    """A Weights & Biases run logging the same records as training_log.jsonl, on rank 0."""
    if not plan.wandb_project or not is_main:
        return None
    from genos_cli import extras

    (wandb,) = extras.require("wandb")
    return wandb.init(
        project=plan.wandb_project,
        name=plan.config.name,
        dir=str(plan.output_dir),
        config=plan.config.model_dump(mode="json"),
    )
