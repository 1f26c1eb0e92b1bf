"""Expert parallelism: genos's MoE layer on DeepSpeed's (`deepspeed.moe.layer.MoE`).

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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genos_cli.errors import GenosError
from genos_cli.model.layers import SwiGLU, swiglu
from genos_cli.model.losses import load_balancing_loss
from genos_cli.model.moe import MoELayer, MoERouting, expert_counts, route, router_logits
from genos_cli.train.ds import Experts, MoE, TopKGate, comm

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig
    from genos_cli.model.transformer import GenosForCausalLM

GateKind = Literal["genos", "deepspeed"]

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
        if self.ep_group is not None and comm.get_world_size(group=self.ep_group) > 1:
            comm.all_reduce(capacity, op=comm.ReduceOp.MAX, group=self.ep_group)
        return capacity

    def forward(
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


class BatchedExperts(Experts):
    """DeepSpeed's local experts, run as two batched matmuls instead of its Python loop.

    After the all-to-all every local expert holds the same number of rows (DeepSpeed pads
    each to the busiest expert's load, `capacity`), so the E_local experts are one `bmm`
    over stacked weights: 2 kernels per layer instead of 2 x E_local, on CPU and GPU alike.
    Parameters stay DeepSpeed's one-module-per-expert (`deepspeed_experts.{j}.gate_up`), so
    its expert checkpoint files, groups and gradient reduction are unchanged.
    """

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        ep, local, capacity, width = inputs.shape  # (ep, E_local, C, D), DeepSpeed's "gecm"
        x = inputs.transpose(0, 1).reshape(local, ep * capacity, width)  # (E_local, ep*C, D)
        gate_up = torch.stack([e.gate_up for e in self.deepspeed_experts])  # (E_local, D, 2F)
        down = torch.stack([e.down for e in self.deepspeed_experts])  # (E_local, F, D)
        y = torch.bmm(swiglu(torch.bmm(x, gate_up)), down)  # (E_local, ep*C, D)
        return y.reshape(local, ep, capacity, width).transpose(0, 1)


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
        moe = self.ds.deepspeed_moe
        moe.experts = BatchedExperts(
            SwiGLU(hidden_size, ffn_hidden_size), moe.num_local_experts, self.ds.expert_group_name
        )
        if gate == "genos":
            moe.gate = GenosTopKGate(hidden_size, num_experts, top_k)
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


def is_expert_key(key: str) -> bool:
    """Whether a state-dict key of an expert-parallel model names an expert's weight (held
    by one expert-parallel rank), not a replicated one."""
    return ".moe.ds.deepspeed_moe.experts." in key


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
        ep_rank = comm.get_rank() % ep_size if comm.is_initialized() else 0
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
