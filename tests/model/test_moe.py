"""Router, top-k, losses and dropless expert dispatch against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genos_cli.model.losses import IGNORE_INDEX, lm_loss, load_balancing_loss, router_z_loss
from genos_cli.model.moe import (
    MoELayer,
    _grouped_mm,
    _native_grouped_mm_ok,
    expert_counts,
    grouped_mm,
    route,
    router_logits,
    sort_routes,
)


def test_route_softmax_topk_renormalise() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.5, 0.1, 0.1, 0.3]]))
    probs, weights, experts = route(logits, top_k=2)
    torch.testing.assert_close(probs, torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.5, 0.1, 0.1, 0.3]]))
    assert experts.tolist() == [[1, 3], [0, 3]]
    torch.testing.assert_close(weights, torch.tensor([[4 / 7, 3 / 7], [5 / 8, 3 / 8]]))


def test_router_logits_stay_fp32_under_autocast() -> None:
    x, w = torch.randn(5, 8), torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = router_logits(x, w)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, x @ w.t())


def test_load_balancing_loss_hand_computed() -> None:
    # 2 tokens, 4 experts, top-2. Routes: token 0 -> {1, 3}, token 1 -> {0, 3}.
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.5, 0.1, 0.1, 0.3]])
    experts = torch.tensor([[1, 3], [0, 3]])
    f = [1 / 2, 1 / 2, 0.0, 2 / 2]  # routes per expert / tokens
    p = [0.3, 0.25, 0.15, 0.3]  # mean probability per expert
    expected = 4 * sum(fi * pi for fi, pi in zip(f, p, strict=True))
    assert load_balancing_loss(probs, experts, 4).item() == pytest.approx(expected)


def test_load_balancing_loss_is_k_for_uniform_routing() -> None:
    probs = torch.full((8, 4), 0.25)
    experts = torch.tensor([[0, 1], [2, 3]] * 4)
    assert load_balancing_loss(probs, experts, 4).item() == pytest.approx(2.0)


def test_router_z_loss_hand_computed() -> None:
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    lse = [math.log(2.0), math.log(math.e + math.e**2)]
    expected = (lse[0] ** 2 + lse[1] ** 2) / 2
    assert router_z_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_lm_loss_ignores_masked_labels() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    labels = torch.tensor([[0, 1, IGNORE_INDEX]])
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    assert lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_expert_counts_and_sort_routes() -> None:
    experts = torch.tensor([[2, 0], [0, 1], [2, 1]])
    assert expert_counts(experts, 4).tolist() == [2, 2, 2, 0]
    order, inverse = sort_routes(experts)
    # routes r = 2n + k: [2, 0, 0, 1, 2, 1] -> sorted by expert, token order within one
    assert order.tolist() == [1, 2, 3, 5, 0, 4]
    assert torch.equal(order[inverse], torch.arange(6))


@pytest.mark.parametrize("path", ["torch_grouped_mm", "loop"])
def test_grouped_mm_forward_and_backward(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both implementations run here whatever `_native_grouped_mm_ok` picks on this device.
    if path == "torch_grouped_mm" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no torch._grouped_mm")
    use_native = path == "torch_grouped_mm"
    monkeypatch.setattr("genos_cli.model.moe._native_grouped_mm_ok", lambda *t: use_native)
    torch.manual_seed(0)
    x = torch.randn(10, 8, requires_grad=True)
    w = torch.randn(3, 8, 4, requires_grad=True)
    offsets = torch.tensor([4, 4, 10], dtype=torch.int32)  # expert 1 gets no rows
    out = grouped_mm(x, w, offsets)
    expected = torch.cat([x[:4] @ w[0], x[4:] @ w[2]])
    torch.testing.assert_close(out, expected)
    grad = torch.randn(10, 4)
    gx, gw = torch.autograd.grad(out, (x, w), grad)
    ex, ew = torch.autograd.grad(expected, (x, w), grad)
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gw, ew)
    assert torch.equal(gw[1], torch.zeros(8, 4))
    torch.library.opcheck(_grouped_mm, (x.detach(), w.detach(), offsets))


def test_torch_grouped_mm_is_used_only_where_it_wins() -> None:
    x, w = torch.zeros(8, 8), torch.zeros(2, 8, 8)
    assert not _native_grouped_mm_ok(x, w)  # CPU: the per-expert loop is faster


def _naive_moe(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Every token through its top-k experts one at a time: the definition, no sorting."""
    probs = torch.softmax(x @ layer.router.weight.t(), dim=-1)
    out = torch.zeros_like(x)
    ffn = layer.w_down.shape[1]
    for n in range(x.shape[0]):
        top = probs[n].topk(layer.top_k)
        weights = top.values / top.values.sum()
        for weight, e in zip(weights, top.indices.tolist(), strict=True):
            h = x[n] @ layer.w_gate_up[e]
            out[n] += weight * ((F.silu(h[:ffn]) * h[ffn:]) @ layer.w_down[e])
    return out


def _layer(seed: int = 0, top_k: int = 2) -> MoELayer:
    torch.manual_seed(seed)
    layer = MoELayer(hidden_size=8, ffn_hidden_size=6, num_experts=4, top_k=top_k)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return layer


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_moe_layer_matches_per_token_definition(top_k: int) -> None:
    layer = _layer(top_k=top_k)
    x = torch.randn(2, 9, 8, requires_grad=True)
    out, routing = layer(x)
    expected = _naive_moe(layer, x.reshape(-1, 8)).view(2, 9, 8)
    torch.testing.assert_close(out, expected)
    assert routing.counts.sum().item() == 18 * top_k
    grad = torch.randn_like(out)
    params = (x, layer.router.weight, layer.w_gate_up, layer.w_down)
    got = torch.autograd.grad(out, params, grad)
    want = torch.autograd.grad(expected, params, grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_moe_is_dropless_when_every_token_picks_the_same_experts() -> None:
    layer = _layer()
    with torch.no_grad():  # a router that sends every (positive) token to experts 0 and 1
        layer.router.weight.zero_()
        layer.router.weight[0] = 2.0
        layer.router.weight[1] = 1.0
    x = torch.rand(64, 8) + 0.1
    out, routing = layer(x)
    assert routing.counts.tolist() == [64, 64, 0, 0]
    torch.testing.assert_close(out, _naive_moe(layer, x))
    assert (out.abs().sum(dim=-1) > 0).all()  # no token was dropped
