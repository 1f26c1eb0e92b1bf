"""Native genos MoE vs DeepSpeed's `deepspeed.moe.layer.MoE` (via genos_cli.train.engine).

DeepSpeed's MoE needs torch.distributed: a gloo group of world size 1 here (DeepSpeed's
accelerator is the CPU), and a two-process gloo group for real expert parallelism.
"""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genos_cli.model import GenosForCausalLM
from genos_cli.model.losses import load_balancing_loss
from genos_cli.model.moe import MoELayer, route, router_logits
from tests.tiny import tiny_model_config

deepspeed = pytest.importorskip("deepspeed")
from genos_cli.train import expert_parallel as engine  # noqa: E402  (imports deepspeed)

CFG = tiny_model_config(vocab_size=16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_distributed(rank: int, world_size: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    deepspeed.init_distributed(dist_backend="gloo")


@pytest.fixture(scope="module")
def single_process_group() -> Iterator[None]:
    already = dist.is_initialized()
    if not already:
        _init_distributed(0, 1, _free_port())
    yield
    if not already:
        dist.destroy_process_group()


def _native_layer(seed: int = 0) -> MoELayer:
    torch.manual_seed(seed)
    layer = MoELayer(CFG.hidden_size, CFG.expert_ffn_hidden_size, CFG.num_experts, top_k=2)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return layer


def _deepspeed_layer(native: MoELayer, gate: engine.GateKind) -> engine.DeepSpeedMoELayer:
    model = GenosForCausalLM(CFG)
    model.blocks[0].moe = native
    engine.apply_expert_parallel(model, ep_size=1, gate=gate)
    layer = model.blocks[0].moe
    layer.ds.set_deepspeed_parallelism()
    return layer


@pytest.mark.parametrize("gate", ["genos", "deepspeed"])
def test_deepspeed_layer_computes_the_native_output(single_process_group: None, gate: str) -> None:
    native = _native_layer()
    ds_layer = _deepspeed_layer(copy.deepcopy(native), gate)
    x = torch.randn(3, 20, CFG.hidden_size, requires_grad=True)

    out, routing = native(x)
    ds_out, ds_routing = ds_layer(x)
    torch.testing.assert_close(ds_out, out, atol=1e-6, rtol=1e-6)
    assert torch.equal(ds_routing.counts, routing.counts)
    assert torch.equal(ds_routing.experts, routing.experts)

    grad = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, grad, retain_graph=True)
    (ds_gx,) = torch.autograd.grad(ds_out, x, grad, retain_graph=True)
    torch.testing.assert_close(ds_gx, gx, atol=1e-6, rtol=1e-5)
    native_grads = torch.autograd.grad(out, (native.w_gate_up, native.w_down), grad)
    experts = ds_layer.ds.deepspeed_moe.experts.deepspeed_experts
    ds_grads = torch.autograd.grad(ds_out, [p for e in experts for p in (e.gate_up, e.down)], grad)
    for e in range(CFG.num_experts):
        torch.testing.assert_close(ds_grads[2 * e], native_grads[0][e], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ds_grads[2 * e + 1], native_grads[1][e], atol=1e-5, rtol=1e-4)


def test_aux_losses_genos_gate_vs_deepspeed_gshard_gate(single_process_group: None) -> None:
    native = _native_layer(seed=1)
    x = torch.randn(50, CFG.hidden_size)
    _, routing = native(x)
    genos_aux = load_balancing_loss(routing.probs, routing.experts, CFG.num_experts)

    genos_gate = _deepspeed_layer(copy.deepcopy(native), "genos")
    _, l_aux, _ = genos_gate.ds(x)
    torch.testing.assert_close(l_aux, genos_aux)

    # DeepSpeed's top2gating loss is GShard's: E * sum_e mean_prob_e * top1_fraction_e.
    ds_gate = _deepspeed_layer(copy.deepcopy(native), "deepspeed")
    _, ds_aux, _ = ds_gate.ds(x)
    probs, _, experts = route(router_logits(x, native.router.weight), 2)
    top1 = torch.bincount(experts[:, 0], minlength=CFG.num_experts) / x.shape[0]
    gshard = CFG.num_experts * torch.sum(probs.mean(0) * top1)
    torch.testing.assert_close(ds_aux, gshard)
    assert not torch.allclose(ds_aux, genos_aux)  # the reason genos supplies its own gate


def test_whole_model_and_state_dict_conversion(single_process_group: None) -> None:
    torch.manual_seed(2)
    native = GenosForCausalLM(CFG)
    ds_model = engine.apply_expert_parallel(copy.deepcopy(native), ep_size=1)
    for block in ds_model.blocks:
        block.moe.ds.set_deepspeed_parallelism()
    ids = torch.randint(0, CFG.vocab_size, (2, 32))
    ours, theirs = native(ids, labels=ids), ds_model(ids, labels=ids)
    torch.testing.assert_close(theirs.logits, ours.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(theirs.loss, ours.loss)
    torch.testing.assert_close(theirs.aux_loss, ours.aux_loss)

    ds_sd = engine.to_deepspeed_state_dict(native.state_dict(), CFG)
    assert ds_sd.keys() == ds_model.state_dict().keys()
    for name, value in ds_model.state_dict().items():
        assert torch.equal(ds_sd[name], value), name
    back = engine.from_deepspeed_state_dicts([ds_model.state_dict()], CFG)
    assert back.keys() == native.state_dict().keys()
    for name, value in native.state_dict().items():
        assert torch.equal(back[name], value), name


def test_state_dict_split_across_expert_parallel_ranks() -> None:
    sd = GenosForCausalLM(CFG).state_dict()
    ranks = [engine.to_deepspeed_state_dict(sd, CFG, ep_rank=r, ep_size=2) for r in range(2)]
    key = "blocks.1.moe.ds.deepspeed_moe.experts.deepspeed_experts.{}.down"
    assert torch.equal(ranks[1][key.format(0)], sd["blocks.1.moe.w_down"][2])
    assert key.format(2) not in ranks[0]
    back = engine.from_deepspeed_state_dicts(ranks, CFG)
    assert all(torch.equal(back[name], value) for name, value in sd.items())


def _expert_parallel_worker(rank: int, port: int, results: mp.Queue) -> None:
    torch.set_num_threads(1)
    _init_distributed(rank, 2, port)
    torch.manual_seed(0)
    native = GenosForCausalLM(CFG)
    ids = torch.randint(0, CFG.vocab_size, (2, 32), generator=torch.Generator().manual_seed(rank))
    ours = native(ids, labels=ids)
    ours.loss.backward()
    ds_model = engine.apply_expert_parallel(copy.deepcopy(native), ep_size=2)
    for block in ds_model.blocks:
        block.moe.ds.set_deepspeed_parallelism()
    theirs = ds_model(ids, labels=ids)
    theirs.loss.backward()
    # Rank r holds experts 2r, 2r+1 and receives the tokens of both ranks routed to them, so
    # their gradients are the sum over ranks of the native per-rank gradients.
    worst = 0.0
    for native_block, ds_block in zip(native.blocks, ds_model.blocks, strict=True):
        summed = native_block.moe.w_gate_up.grad.clone()
        dist.all_reduce(summed)
        local = ds_block.moe.ds.deepspeed_moe.experts.deepspeed_experts
        for j, expert in enumerate(local):
            worst = max(worst, (expert.gate_up.grad - summed[2 * rank + j]).abs().max().item())
    results.put(
        (
            rank,
            (theirs.logits - ours.logits).abs().max().item(),
            (theirs.loss - ours.loss).abs().item(),
            worst,
        )
    )
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.multiproc
def test_expert_parallel_across_two_processes() -> None:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_expert_parallel_worker, args=(r, port, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    for _, logits_err, loss_err, grad_err in sorted(results.get(timeout=5) for _ in procs):
        assert logits_err < 1e-5 and loss_err < 1e-5 and grad_err < 1e-6


def test_batched_experts_equal_deepspeeds_loop(single_process_group: None) -> None:
    """The two-bmm expert computation is DeepSpeed's per-expert loop, forward and backward,
    on a padded (ep, E_local, capacity, D) buffer like the one its all-to-all delivers."""
    from genos_cli.train.ds import Experts
    from genos_cli.train.expert_parallel import BatchedExperts

    native = _native_layer(seed=3)
    experts = _deepspeed_layer(native, "genos").ds.deepspeed_moe.experts
    assert isinstance(experts, BatchedExperts) and experts.num_local_experts == CFG.num_experts
    x = torch.randn(2, CFG.num_experts, 5, CFG.hidden_size, requires_grad=True)  # ep=2 chunks
    batched = experts(x)
    looped = Experts.forward(experts, x)  # DeepSpeed's own loop over the same modules
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(batched)
    params = list(experts.parameters())
    got = torch.autograd.grad(batched, [x, *params], grad)
    want = torch.autograd.grad(looped, [x, *params], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
