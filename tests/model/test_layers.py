"""Unit tests of the model's building blocks against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from genos_cli.config.params import count_parameters
from genos_cli.config.presets import load_config, preset_names
from genos_cli.config.schema import ModelConfig
from genos_cli.model import GenosForCausalLM, build_model
from genos_cli.model.attention import GroupedQueryAttention, causal_attention
from genos_cli.model.flash_attention import use_flash_attn
from genos_cli.model.flops import active_matmul_params, model_flops_per_token
from genos_cli.model.layers import (
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rope,
    rope_cos_sin,
    rope_frequencies,
    rotate_half,
    swiglu,
)


def test_rmsnorm_matches_hand_computation() -> None:
    norm = RMSNorm(4, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    rms = math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-5)
    expected = torch.tensor([[1 / rms, 4 / rms, 1.5 / rms, -4 / rms]])
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_normalises_in_fp32_for_bf16_input() -> None:
    x = torch.randn(3, 64) * 100
    out = RMSNorm(64).bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), RMSNorm(64)(x), atol=2e-2, rtol=2e-2)


def test_rope_frequencies_and_tables() -> None:
    torch.testing.assert_close(rope_frequencies(4, 100.0), torch.tensor([1.0, 0.1]))
    cos, sin = rope_cos_sin(3, 4, 100.0)
    angles = torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2]])
    torch.testing.assert_close(cos, torch.cat([angles.cos(), angles.cos()], dim=1))
    torch.testing.assert_close(sin, torch.cat([angles.sin(), angles.sin()], dim=1))


def test_rope_rotates_pairs_i_and_i_plus_half() -> None:
    # head_dim 4: pairs (0, 2) and (1, 3) rotate by position * theta_i, theta = (1, 0.1).
    cos, sin = rope_cos_sin(3, 4, 100.0)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 3, 1, 4)  # (B, T, heads, Dh)
    out = apply_rope(x, cos, sin)[0, :, 0]  # (T, Dh)
    for t in range(3):
        for i, theta in enumerate((1.0, 0.1)):
            a, b = x[0, t, 0, i], x[0, t, 0, i + 2]
            c, s = math.cos(t * theta), math.sin(t * theta)
            torch.testing.assert_close(out[t, i], a * c - b * s)
            torch.testing.assert_close(out[t, i + 2], a * s + b * c)
    assert torch.equal(
        rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0])
    )


def test_rope_scores_depend_only_on_relative_position() -> None:
    # <R(m) q, R(n) k> = <R(m - n) q, k>: the property RoPE exists for (RoFormer sec. 3.2).
    torch.manual_seed(0)
    cos, sin = rope_cos_sin(32, 8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> torch.Tensor:
        qm = apply_rope(q.expand(1, 32, 1, 8), cos, sin)[0, m, 0]
        kn = apply_rope(k.expand(1, 32, 1, 8), cos, sin)[0, n, 0]
        return qm @ kn

    torch.testing.assert_close(score(7, 3), score(20, 16), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score(5, 5), q @ k, rtol=1e-5, atol=1e-5)


def test_rotary_embedding_extends_past_max_length() -> None:
    rope = RotaryEmbedding(8, max_seq_len=4, base=10000.0)
    cos, sin = rope(6)
    full_cos, full_sin = rope_cos_sin(6, 8, 10000.0)
    assert torch.equal(cos, full_cos) and torch.equal(sin, full_sin)
    assert rope(3)[0].shape == (3, 8)


def test_swiglu_is_silu_gate_times_up() -> None:
    gate_up = torch.tensor([[1.0, -2.0, 3.0, 0.5]])  # F = 2: gate (1, -2), up (3, 0.5)
    silu = lambda v: v / (1 + math.exp(-v))  # noqa: E731
    expected = torch.tensor([[silu(1.0) * 3.0, silu(-2.0) * 0.5]])
    torch.testing.assert_close(swiglu(gate_up), expected)
    expert = SwiGLU(6, 5)
    x = torch.randn(2, 3, 6)
    assert expert(x).shape == (2, 3, 6)
    gate, up = expert.gate_up[:, :5], expert.gate_up[:, 5:]
    torch.testing.assert_close(
        expert(x), (torch.nn.functional.silu(x @ gate) * (x @ up)) @ expert.down
    )


def _naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # q (B, T, H, Dh), k/v (B, T, G, Dh): repeat each kv head for its H/G query heads.
    reps = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(reps, dim=2), v.repeat_interleave(reps, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    t = q.shape[1]
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


def test_causal_gqa_attention_matches_naive() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 7, 6, 8), torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 8)
    torch.testing.assert_close(causal_attention(q, k, v), _naive_attention(q, k, v))
    assert not use_flash_attn(q)  # flash-attn is for CUDA bf16/fp16 only


def test_gqa_module_shapes_and_causality() -> None:
    torch.manual_seed(0)
    attn = GroupedQueryAttention(hidden_size=32, num_heads=4, num_kv_heads=2)
    assert attn.qkv.weight.shape == ((4 + 2 * 2) * 8, 32)  # [q | k | v] rows
    assert attn.o.weight.shape == (32, 32)
    cos, sin = rope_cos_sin(10, 8, 10000.0)
    x = torch.randn(3, 10, 32)
    out = attn(x, cos, sin)
    assert out.shape == (3, 10, 32)
    changed = x.clone()
    changed[:, 6:] = torch.randn(3, 4, 32)  # the future must not leak into positions < 6
    torch.testing.assert_close(attn(changed, cos, sin)[:, :6], out[:, :6])
    assert not torch.allclose(attn(changed, cos, sin)[:, 6:], out[:, 6:])


@pytest.mark.parametrize("size", preset_names())
def test_parameter_counts_match_config(size: str) -> None:
    cfg = load_config(size=size).model
    with torch.device("meta"):  # shapes only: the large preset would need 5 GB
        model = GenosForCausalLM(cfg)
    expected = count_parameters(cfg)
    total = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if ".w_" in n)
    active = total - expert + expert * cfg.moe_router_topk // cfg.num_experts
    assert (total, active) == (expected.total, expected.active)


def test_model_flops_per_token_small_preset() -> None:
    cfg = load_config(size="small").model
    per_layer = 256 * 256 * 2 + 256 * 128 * 2 + 256 * 4 + 2 * 3 * 256 * 512
    assert active_matmul_params(cfg) == 4 * per_layer + 128 * 256
    attention = 4 * 2 * 2 * 256 * 512  # PaLM: all 512 keys, no causal discount
    assert (
        model_flops_per_token(cfg, 512, training=False)
        == 2 * (4 * per_layer + 128 * 256) + attention
    )
    assert model_flops_per_token(cfg, 512) == 3 * model_flops_per_token(cfg, 512, training=False)


def test_forward_outputs_and_loss_composition(tiny_config: ModelConfig) -> None:
    torch.manual_seed(0)
    cfg = tiny_config.model_copy(update={"aux_loss_coeff": 0.02, "z_loss_coeff": 1e-3})
    model = build_model(cfg, compile=False)
    ids = torch.randint(0, cfg.vocab_size, (2, 24))
    out = model(ids)
    assert out.logits.shape == (2, 24, cfg.vocab_size) and out.loss is None and out.lm_loss is None
    assert out.expert_counts.shape == (2, 4)
    assert out.expert_counts.sum(dim=1).tolist() == [2 * 24 * 2] * 2  # N * K routes per layer
    labeled = model(ids, labels=ids)
    expected = labeled.lm_loss + 0.02 * labeled.aux_loss + 1e-3 * labeled.z_loss
    torch.testing.assert_close(labeled.loss, expected)
    labeled.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = load_config(size="small").model
    model = build_model(cfg, compile=False)
    out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(cfg.init_std, rel=0.05)
    assert model.blocks[0].attn.o.weight.std().item() == pytest.approx(out_std, rel=0.05)
    assert model.blocks[0].moe.w_down.std().item() == pytest.approx(out_std, rel=0.05)
    assert torch.equal(model.norm.weight, torch.ones(cfg.hidden_size))


def test_bf16_autocast_forward_backward_tracks_fp32(tiny_config: ModelConfig) -> None:
    # The mixed-precision path the GPU runs (bf16 autocast, fp32 router), exercised on CPU.
    torch.manual_seed(0)
    model = build_model(tiny_config, compile=False)
    ids = torch.randint(0, tiny_config.vocab_size, (2, 24))
    reference = model(ids, labels=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(ids, labels=ids)
    assert mixed.logits.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.lm_loss, reference.lm_loss, atol=2e-2, rtol=0)
    mixed.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
