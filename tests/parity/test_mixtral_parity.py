"""Genos vs Hugging Face `MixtralForCausalLM`: the same function from the same weights.

Weights are made in genos, converted with `genos_cli.interop.to_hf_state_dict`, and loaded
strictly into the HF model, so a missing, extra or misshapen tensor fails the test.
"""

from __future__ import annotations

import pytest
import torch

from genos_cli.config.presets import load_config
from genos_cli.config.schema import ModelConfig
from genos_cli.interop import (
    from_hf_state_dict,
    from_mixtral_config,
    to_hf_state_dict,
    to_mixtral_config,
)
from genos_cli.model import GenosForCausalLM, build_model
from genos_cli.model.losses import IGNORE_INDEX
from tests.tiny import tiny_model_config

transformers = pytest.importorskip("transformers")
from transformers.models.mixtral.modeling_mixtral import (  # noqa: E402
    MixtralForCausalLM,
    load_balancing_loss_func,
)

# One layer: HF pools the router statistics of all layers into one aux loss, genos averages
# per layer; with one layer the two totals agree and can be compared directly. rope_base and
# norm_eps away from their defaults, so a converter that dropped them would show.
TINY = tiny_model_config(num_layers=1, vocab_size=32, rope_base=500.0, norm_eps=1e-6)
CONFIGS = {"tiny": TINY, "small": load_config(size="small").model}


def _randomise(model: GenosForCausalLM, seed: int) -> None:
    """Weights far from the init (std 0.02 makes every layer nearly the identity and every
    router nearly uniform), and norm gains far from 1, so a mapping error cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-2] ** 0.5))


def _pair(cfg: ModelConfig, seed: int = 0) -> tuple[GenosForCausalLM, MixtralForCausalLM]:
    torch.manual_seed(seed)
    genos = build_model(cfg, compile=False)
    _randomise(genos, seed)
    hf = MixtralForCausalLM(to_mixtral_config(cfg, attn_implementation="sdpa"))
    hf.load_state_dict(to_hf_state_dict(genos.state_dict(), cfg), strict=True)
    return genos.eval(), hf.eval()


def _batch(cfg: ModelConfig, batch: int, seq: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)


def _shifted(ids: torch.Tensor) -> torch.Tensor:
    # genos labels are aligned with the logits; HF shifts `labels=input_ids` itself.
    return torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], IGNORE_INDEX)], dim=1)


@pytest.mark.parametrize(("name", "batch", "seq"), [("tiny", 3, 64), ("small", 2, 512)])
def test_logits_and_losses_match_mixtral(name: str, batch: int, seq: int) -> None:
    cfg = CONFIGS[name]
    genos, hf = _pair(cfg)
    ids = _batch(cfg, batch, seq)
    with torch.no_grad():
        ours = genos(ids, labels=_shifted(ids))
        theirs = hf(ids, labels=ids, output_router_logits=True)

    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=0)
    hf_lm = theirs.loss - cfg.aux_loss_coeff * theirs.aux_loss
    torch.testing.assert_close(ours.lm_loss, hf_lm, atol=1e-5, rtol=0)
    # genos averages the per-layer Switch loss over layers; HF pools the router statistics
    # of all layers first. Per layer they are the same function: check it layer by layer.
    per_layer = [
        load_balancing_loss_func((logits,), cfg.num_experts, cfg.moe_router_topk)
        for logits in theirs.router_logits
    ]
    torch.testing.assert_close(ours.aux_loss, torch.stack(per_layer).mean(), atol=1e-6, rtol=0)
    if cfg.num_layers == 1:  # one layer: nothing to pool, HF's own loss and total agree
        torch.testing.assert_close(ours.aux_loss, theirs.aux_loss, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)
    # the routers chose the same experts: same per-layer token counts
    for layer, logits in enumerate(theirs.router_logits):
        chosen = logits.topk(cfg.moe_router_topk, dim=-1).indices
        counts = torch.bincount(chosen.reshape(-1), minlength=cfg.num_experts)
        assert torch.equal(ours.expert_counts[layer], counts)


def test_gradients_match_mixtral() -> None:
    genos, hf = _pair(TINY, seed=3)
    genos.train(), hf.train()
    ids = _batch(TINY, 2, 48, seed=4)
    genos(ids, labels=_shifted(ids)).loss.backward()
    hf(ids, labels=ids, output_router_logits=True).loss.backward()
    ours = to_hf_state_dict({n: p.grad for n, p in genos.named_parameters()}, TINY)
    for name, p in hf.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_state_dict_and_config_round_trip() -> None:
    genos, hf = _pair(TINY, seed=5)
    back = from_hf_state_dict(hf.state_dict(), hf.config)
    assert from_mixtral_config(hf.config) == TINY
    assert back.keys() == genos.state_dict().keys()
    for name, value in genos.state_dict().items():
        assert torch.equal(back[name], value), name


def test_per_expert_checkpoint_layout_loads() -> None:
    # Mixtral checkpoint files (and transformers 4) keep experts as w1/w3/w2 modules.
    genos, _ = _pair(TINY, seed=6)
    per_expert = to_hf_state_dict(genos.state_dict(), TINY, layout="per_expert")
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in per_expert
    back = from_hf_state_dict(per_expert, to_mixtral_config(TINY))
    reloaded = GenosForCausalLM(TINY)
    reloaded.load_state_dict(back, strict=True)
    ids = _batch(TINY, 1, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(ids).logits, genos(ids).logits, atol=0, rtol=0)


def test_unsupported_mixtral_features_are_refused() -> None:
    from genos_cli.errors import GenosError

    config = to_mixtral_config(TINY, sliding_window=16, tie_word_embeddings=True)
    with pytest.raises(GenosError, match=r"tied input/output embeddings.*sliding-window"):
        from_mixtral_config(config)


def test_export_config_carries_vocabulary_and_aux_loss_weight() -> None:
    """What changes the exported model: the vocabulary the run resolved from its tokenizer
    (16 rows for the nucleotide tokenizer) and the load-balancing weight HF adds to its loss."""
    nucleotide = load_config(
        "small",
        overrides={"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16,
                   "model.aux_loss_coeff": 1e-3},
    ).model  # fmt: skip
    hf = to_mixtral_config(nucleotide)
    assert hf.vocab_size == 16
    assert hf.router_aux_loss_coef == 1e-3
    assert from_mixtral_config(hf).aux_loss_coeff == 1e-3
