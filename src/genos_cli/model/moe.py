"""Dropless top-k Mixture-of-Experts feed-forward layer with SwiGLU experts.

Routing (Mixtral; Jiang et al. 2024, eq. 1-2): router logits in fp32, softmax over the E
experts, keep the top K, renormalise the kept probabilities to sum to 1. Dispatch is
"dropless" (MegaBlocks, Gale et al. 2022): every (token, slot) route is computed, there is
no expert capacity. Routes are sorted by expert so each expert's tokens are one contiguous
slice, and the experts run as one grouped matmul over those slices (`grouped_mm`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genos_cli.model.layers import swiglu

# --------------------------------------------------------------------------------------------
# Router maths (pure functions)


def router_logits(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Router logits x W_r^T in fp32, also under autocast: x (N, D), weight (E, D) -> (N, E).

    fp32 routing keeps bf16 round-off from flipping near-tied top-k choices (Megatron-LM's
    `--moe-router-dtype fp32`; DeepSpeed's TopKGate does the same).
    """
    if not torch.is_autocast_enabled(x.device.type):  # entering the context costs a decode step
        return F.linear(x.float(), weight.float())
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.linear(x.float(), weight.float())


def route(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax -> top-k -> renormalise (Mixtral eq. 2; Hugging Face `MixtralTopKRouter`).

    logits: (N, E). Returns `probs` (N, E) fp32 softmax over all experts (for the
    load-balancing loss), `weights` (N, K) the kept probabilities renormalised to sum to 1,
    and `experts` (N, K) int64 their indices, highest probability first.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return probs, weights, experts


def expert_counts(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Routes per expert: (N, K) expert indices -> (E,) int64 counts (sum = N*K).

    A scatter into a fixed-size buffer rather than `bincount`, whose output size depends
    on the data and so breaks `torch.compile` graphs.
    """
    flat = experts.reshape(-1)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=experts.device)
    return counts.scatter_add(0, flat, torch.ones_like(flat))


def sort_routes(experts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order of the N*K routes grouped by expert, and its inverse.

    experts: (N, K). Route r = n*K + k is token n's k-th choice. Returns `order` (N*K,), the
    routes sorted by expert (stable, so token order within an expert), and `inverse`
    (N*K,) with `order[inverse[r]] == r`, i.e. where route r sits in the sorted order.
    """
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    positions = torch.arange(flat.numel(), device=flat.device)
    inverse = torch.empty_like(order).scatter_(0, order, positions)
    return order, inverse


# --------------------------------------------------------------------------------------------
# Grouped matmul: one matmul per expert over contiguous row slices


def native_grouped_mm_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `torch._grouped_mm` can run experts on `device` in `dtype`: CUDA, bf16,
    compute capability 8.0+, torch >= 2.9 (the rules of Hugging Face's `_can_use_grouped_mm`).
    On CPU torch 2.13's kernel runs the forward product ~1.5x slower than one `torch.mm` per
    expert (measured at the small preset's shapes), so the CPU always takes the loop."""
    if not hasattr(torch, "_grouped_mm") or device.type != "cuda" or dtype != torch.bfloat16:
        return False
    return _TORCH_VERSION >= (2, 9) and torch.cuda.get_device_capability(device) >= (8, 0)


def _native_grouped_mm_ok(*operands: torch.Tensor) -> bool:
    """`native_grouped_mm_available` for these operands, every non-unit stride a multiple
    of 16 bytes (one kernel, no host sync)."""
    first = operands[0]
    if not native_grouped_mm_available(first.device, first.dtype):
        return False
    return all(
        t.dtype == torch.bfloat16
        and all(s * t.element_size() % 16 == 0 for s in t.stride() if s != 1)
        for t in operands
    )


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


_TORCH_VERSION = _torch_version()


def _group_bounds(host_offsets: torch.Tensor) -> list[int]:
    # `host_offsets` is a CPU copy of the offsets, made once per MoE layer (see MoELayer):
    # reading it here costs no device sync, however many matmuls the layer runs.
    return [0, *host_offsets.tolist()]


def _grouped_mm_loop(x: torch.Tensor, w: torch.Tensor, host_offsets: torch.Tensor) -> torch.Tensor:
    """The per-expert loop: out[slice_e] = x[slice_e] @ w[e], experts without rows skipped."""
    out = x.new_empty(x.shape[0], w.shape[2])
    bounds = _group_bounds(host_offsets)
    for e in range(w.shape[0]):
        start, end = bounds[e], bounds[e + 1]
        if end > start:
            torch.mm(x[start:end], w[e], out=out[start:end])
    return out


@torch.library.custom_op("genos::grouped_mm", mutates_args=())
def _grouped_mm(x: torch.Tensor, w: torch.Tensor, host_offsets: torch.Tensor) -> torch.Tensor:
    """`_grouped_mm_loop` as one opaque op with a backward (to compile and to train)."""
    return _grouped_mm_loop(x, w, host_offsets)


@_grouped_mm.register_fake
def _(x: torch.Tensor, w: torch.Tensor, host_offsets: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], w.shape[2])


@torch.library.custom_op("genos::grouped_mm_weight_grad", mutates_args=())
def _grouped_mm_weight_grad(
    x: torch.Tensor, grad: torch.Tensor, host_offsets: torch.Tensor
) -> torch.Tensor:
    """dW[e] = x[slice_e]^T @ grad[slice_e]: (S, K), (S, N) -> (E, K, N)."""
    out = x.new_empty(host_offsets.shape[0], x.shape[1], grad.shape[1])
    bounds = _group_bounds(host_offsets)
    for e in range(host_offsets.shape[0]):
        start, end = bounds[e], bounds[e + 1]
        torch.mm(x[start:end].t(), grad[start:end], out=out[e])
    return out


@_grouped_mm_weight_grad.register_fake
def _(x: torch.Tensor, grad: torch.Tensor, host_offsets: torch.Tensor) -> torch.Tensor:
    return x.new_empty(host_offsets.shape[0], x.shape[1], grad.shape[1])


def _grouped_mm_setup(
    ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor
) -> None:
    x, w, host_offsets = inputs
    ctx.save_for_backward(x, w, host_offsets)


def _grouped_mm_backward(
    ctx: Any,  # a FunctionCtx; torch's stub lacks its saved_tensors and needs_input_grad
    grad: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
    x, w, host = ctx.saved_tensors
    grad = grad.contiguous()
    grad_x = _grouped_mm(grad, w.transpose(1, 2), host) if ctx.needs_input_grad[0] else None
    grad_w = _grouped_mm_weight_grad(x, grad, host) if ctx.needs_input_grad[1] else None
    return grad_x, grad_w, None


_grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


def grouped_mm(
    x: torch.Tensor,
    w: torch.Tensor,
    offsets: torch.Tensor,
    host_offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows [offsets[e-1], offsets[e]) of x times w[e], for every expert e.

    x: (S, K) rows sorted by group; w: (E, K, N); offsets: (E,) int32 cumulative row counts
    (offsets[-1] == S); host_offsets: the same on the CPU, if the caller has it. Returns
    (S, N). `torch._grouped_mm` (with torch's own backward) where `_native_grouped_mm_ok`,
    else the per-expert loop `_grouped_mm`, which needs the bounds on the host. Under
    autocast both operands are cast to the autocast dtype first: neither op is autocast-aware.
    """
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w = x.to(dtype), w.to(dtype)
    if _native_grouped_mm_ok(x, w):
        return torch._grouped_mm(x, w, offs=offsets)
    host = offsets.cpu() if host_offsets is None else host_offsets
    if _eager_inference():  # the custom op's dispatch costs more than a decode step's mms
        return _grouped_mm_loop(x, w, host)
    return _grouped_mm(x, w, host)


def _eager_inference() -> bool:
    """No gradients to record and no graph being compiled: the autograd Functions and the
    custom op can be skipped for the plain tensor ops they wrap (same ops, same results)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


# --------------------------------------------------------------------------------------------
# Permutation into and out of expert order, by gathers only (no scatter-add in either pass)


class _PermuteToExperts(torch.autograd.Function):
    """x (N, D) -> x[order // K] (N*K, D); the gradient sums each token's K routes back."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, top_k: int
    ) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        ctx.top_k = top_k
        return x.index_select(0, order // top_k)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (inverse,) = ctx.saved_tensors
        grad_routes = grad.index_select(0, inverse)  # (N*K, D) back in route order
        return grad_routes.view(-1, ctx.top_k, grad.shape[-1]).sum(dim=1), None, None, None


def _combine(
    y: torch.Tensor, weights: torch.Tensor, inverse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y in route order (N, K, D), sum_k weights[n, k] * y[route n*K+k] (N, D))."""
    num_tokens, top_k = weights.shape
    y_routes = y.index_select(0, inverse).view(num_tokens, top_k, y.shape[-1])  # (N, K, D)
    out = (y_routes.to(weights.dtype) * weights.unsqueeze(-1)).sum(dim=1)
    return y_routes, out.to(y.dtype)


class _CombineFromExperts(torch.autograd.Function):
    """Expert outputs in expert order (N*K, D) -> sum_k weights[n, k] * y[route n*K+k], (N, D).

    The product and sum run in the weights' dtype (fp32), as Hugging Face's Mixtral and
    DeepSpeed's `_sparse_decode` do, so bf16 expert outputs are combined without round-off.
    """

    @staticmethod
    def forward(
        ctx: Any, y: torch.Tensor, weights: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor
    ) -> torch.Tensor:
        y_routes, out = _combine(y, weights, inverse)
        ctx.save_for_backward(y_routes, weights, order)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        y_routes, weights, order = ctx.saved_tensors
        grad32 = grad.to(weights.dtype)
        grad_weights = (y_routes.to(weights.dtype) * grad32.unsqueeze(1)).sum(dim=-1)  # (N, K)
        grad_routes = (weights.unsqueeze(-1) * grad32.unsqueeze(1)).to(y_routes.dtype)
        grad_y = grad_routes.view(-1, grad.shape[-1]).index_select(0, order)  # expert order
        return grad_y, grad_weights, None, None


# --------------------------------------------------------------------------------------------
# The layer


class MoERouting(NamedTuple):
    """What one MoE layer's router decided, for the losses and for monitoring."""

    logits: torch.Tensor  # (N, E) fp32 router logits (z-loss)
    probs: torch.Tensor  # (N, E) fp32 softmax (load-balancing loss)
    experts: torch.Tensor  # (N, K) chosen experts
    counts: torch.Tensor  # (E,) int64 routes per expert


class MoELayer(nn.Module):
    """Router + E SwiGLU experts, top-k, dropless.

    Expert weights are stacked, input-major: `w_gate_up` (E, D, 2F) = [W_gate | W_up] per
    expert and `w_down` (E, F, D), so the grouped matmul needs no transposes and one fused
    gate/up product replaces two.
    """

    def __init__(
        self, hidden_size: int, ffn_hidden_size: int, num_experts: int, top_k: int
    ) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.router = nn.Linear(hidden_size, num_experts, bias=False)  # weight (E, D)
        self.w_gate_up = nn.Parameter(torch.empty(num_experts, hidden_size, 2 * ffn_hidden_size))
        self.w_down = nn.Parameter(torch.empty(num_experts, ffn_hidden_size, hidden_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoERouting]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, D)
        logits = router_logits(x, self.router.weight)  # (N, E)
        probs, weights, experts = route(logits, self.top_k)  # (N, E), (N, K), (N, K)
        counts = expert_counts(experts, self.num_experts)  # (E,)
        offsets = counts.cumsum(0).to(torch.int32)  # (E,) end row of each expert's slice
        # The per-expert loop needs the bounds on the host: one copy for the layer's four
        # matmuls and their gradients (on CPU a no-op; on CUDA one sync, and none at all where
        # the native grouped GEMM runs).
        device_type = x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else x.dtype
        host = None if native_grouped_mm_available(x.device, dtype) else offsets.cpu()
        order, inverse = sort_routes(experts)  # (N*K,) each

        eager = _eager_inference()
        if eager:  # the same gathers, without the autograd Functions' dispatch
            routed = x.index_select(0, order // self.top_k)  # (N*K, D)
        else:
            routed = _PermuteToExperts.apply(x, order, inverse, self.top_k)  # (N*K, D)
        hidden = swiglu(grouped_mm(routed, self.w_gate_up, offsets, host))  # (N*K, F)
        y = grouped_mm(hidden, self.w_down, offsets, host)  # (N*K, D)
        if eager:
            out = _combine(y, weights, inverse)[1]  # (N, D)
        else:
            out = _CombineFromExperts.apply(y, weights, order, inverse)  # (N, D)
        return out.view(shape), MoERouting(logits, probs, experts, counts)

    def extra_repr(self) -> str:
        e, d, f2 = self.w_gate_up.shape
        return f"experts={e}, hidden={d}, ffn={f2 // 2}, top_k={self.top_k}"
