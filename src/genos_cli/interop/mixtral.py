"""Genos <-> Hugging Face Mixtral: configs and state dicts, both ways.

A genos model is a `MixtralForCausalLM` with a different parameter layout, so conversion is
renaming, splitting and transposing; no maths changes. `transformers` is optional and is
imported only inside the functions that build a `MixtralConfig`.

Layout differences (genos -> Mixtral):

- attention: one fused `qkv` (rows [q | k | v]) -> `q_proj`, `k_proj`, `v_proj`;
- experts: stacked input-major `w_gate_up` (E, D, 2F) and `w_down` (E, F, D) ->
  `experts.gate_up_proj` (E, 2F, D) and `experts.down_proj` (E, D, F) in transformers >= 5
  ("fused" layout), or per-expert `block_sparse_moe.experts.{e}.w1/w3/w2.weight`
  (F, D), (F, D), (D, F), the layout of transformers 4 and of Mixtral checkpoint files
  ("per_expert" layout). `from_hf_state_dict` reads either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch

from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from transformers import MixtralConfig

    from genos_cli.config.schema import ModelConfig

Layout = Literal["auto", "fused", "per_expert"]

# Special ids shared by both genos tokenizers (see genos_cli.data.tokenizers.nucleotide).
GENOS_BOS_ID, GENOS_EOS_ID = 2, 3

# genos ModelConfig field -> MixtralConfig attribute, for the settings that map one to one.
_CONFIG_NAMES = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_attention_heads",
    "num_query_groups": "num_key_value_heads",
    "num_experts": "num_local_experts",
    "moe_router_topk": "num_experts_per_tok",
    "expert_ffn_hidden_size": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_seq_length": "max_position_embeddings",
    "norm_eps": "rms_norm_eps",
    "aux_loss_coeff": "router_aux_loss_coef",
    "init_std": "initializer_range",
}
# genos parameter -> Mixtral parameter, for the weights that are only renamed: the whole
# model's, and each layer's (under `blocks.{i}.` / `model.layers.{i}.`).
_MODEL_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.o.weight": "self_attn.o_proj.weight",
    "moe_norm.weight": "post_attention_layernorm.weight",
}


def _transformers_major() -> int:
    try:
        import transformers
    except ImportError:
        return 5  # no transformers: produce the current layout
    return int(transformers.__version__.split(".")[0])


def _resolve_layout(layout: Layout) -> Literal["fused", "per_expert"]:
    if layout == "auto":
        return "fused" if _transformers_major() >= 5 else "per_expert"
    return layout


def to_mixtral_config(
    model_cfg: ModelConfig, *, attn_implementation: str = "sdpa", **overrides: Any
) -> MixtralConfig:
    """The `MixtralConfig` of the same architecture as `model_cfg`.

    `output_router_logits=True` so Mixtral, like genos, adds `aux_loss_coeff` x the
    load-balancing loss to its loss when labels are given. `overrides` go to MixtralConfig.
    """
    from transformers import MixtralConfig

    kwargs: dict[str, Any] = {hf: getattr(model_cfg, ours) for ours, hf in _CONFIG_NAMES.items()}
    kwargs |= {
        "head_dim": model_cfg.head_dim,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "output_router_logits": True,
        "router_jitter_noise": 0.0,
        "pad_token_id": None,  # a padding_idx would freeze that embedding row in HF training
        "bos_token_id": GENOS_BOS_ID,
        "eos_token_id": GENOS_EOS_ID,
    }
    if _transformers_major() >= 5:
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": model_cfg.rope_base}
    else:
        kwargs["rope_theta"] = model_cfg.rope_base
    kwargs.update(overrides)
    config = MixtralConfig(**kwargs)
    config._attn_implementation = attn_implementation
    return config


def _rope_theta(config: MixtralConfig) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise GenosError(f"Mixtral config uses rope_type {rope_type!r}; genos supports 'default'")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    return float(theta if theta is not None else 1e6)


def from_mixtral_config(config: MixtralConfig, **overrides: Any) -> ModelConfig:
    """The genos `ModelConfig` of a Mixtral config; a GenosError for what genos cannot build
    (tied embeddings, sliding-window attention, activations other than SiLU, other RoPE)."""
    from genos_cli.config.schema import ModelConfig

    problems = []
    if getattr(config, "tie_word_embeddings", False):
        problems.append("tied input/output embeddings (genos's are untied)")
    window = getattr(config, "sliding_window", None)
    if window is not None and window < config.max_position_embeddings:
        problems.append(f"sliding-window attention ({window} tokens)")
    if config.hidden_act != "silu":
        problems.append(f"activation {config.hidden_act!r} (genos experts use SiLU)")
    head_dim = getattr(config, "head_dim", None)
    if head_dim is not None and head_dim * config.num_attention_heads != config.hidden_size:
        problems.append(f"head_dim {head_dim} != hidden_size / num_attention_heads")
    if problems:
        raise GenosError("cannot convert this Mixtral config to genos: " + "; ".join(problems))
    fields: dict[str, Any] = {ours: getattr(config, hf) for ours, hf in _CONFIG_NAMES.items()}
    fields["rope_base"] = _rope_theta(config)
    fields.update(overrides)
    return ModelConfig(**fields)


# --------------------------------------------------------------------------------------------
# State dicts


def to_hf_state_dict(
    sd: Mapping[str, torch.Tensor], cfg: ModelConfig, *, layout: Layout = "auto"
) -> dict[str, torch.Tensor]:
    """A genos state dict as `MixtralForCausalLM` parameter names and shapes.

    `layout` "auto" gives the installed transformers' in-memory layout ("fused" for
    transformers >= 5, else "per_expert"); see the module docstring.
    """
    layout = _resolve_layout(layout)
    q_rows = cfg.num_attention_heads * cfg.head_dim
    kv_rows = cfg.num_query_groups * cfg.head_dim
    ffn = cfg.expert_ffn_hidden_size
    out = {hf: sd[ours] for ours, hf in _MODEL_NAMES.items()}
    for i in range(cfg.num_layers):
        g, h = f"blocks.{i}.", f"model.layers.{i}."
        out |= {h + hf: sd[g + ours] for ours, hf in _LAYER_NAMES.items()}
        q, k, v = sd[g + "attn.qkv.weight"].split([q_rows, kv_rows, kv_rows], dim=0)
        out[h + "self_attn.q_proj.weight"] = q.contiguous()
        out[h + "self_attn.k_proj.weight"] = k.contiguous()
        out[h + "self_attn.v_proj.weight"] = v.contiguous()
        gate_up, down = sd[g + "moe.w_gate_up"], sd[g + "moe.w_down"]  # (E, D, 2F), (E, F, D)
        if layout == "fused":
            out[h + "mlp.gate.weight"] = sd[g + "moe.router.weight"]
            out[h + "mlp.experts.gate_up_proj"] = gate_up.transpose(1, 2).contiguous()
            out[h + "mlp.experts.down_proj"] = down.transpose(1, 2).contiguous()
        else:
            out[h + "block_sparse_moe.gate.weight"] = sd[g + "moe.router.weight"]
            for e in range(gate_up.shape[0]):
                x = f"{h}block_sparse_moe.experts.{e}."
                out[x + "w1.weight"] = gate_up[e, :, :ffn].t().contiguous()
                out[x + "w3.weight"] = gate_up[e, :, ffn:].t().contiguous()
                out[x + "w2.weight"] = down[e].t().contiguous()
    return out


def from_hf_state_dict(
    sd: Mapping[str, torch.Tensor], mixtral_config: MixtralConfig
) -> dict[str, torch.Tensor]:
    """A Mixtral state dict (either layout; see the module docstring) as a genos state dict
    for `GenosForCausalLM(from_mixtral_config(mixtral_config))`."""
    cfg = from_mixtral_config(mixtral_config)
    num_experts = cfg.num_experts
    if "lm_head.weight" not in sd:
        raise GenosError("Mixtral state dict has no lm_head.weight (tied embeddings?)")
    out = {ours: sd[hf] for ours, hf in _MODEL_NAMES.items()}
    for i in range(cfg.num_layers):
        g, h = f"blocks.{i}.", f"model.layers.{i}."
        out |= {g + ours: sd[h + hf] for ours, hf in _LAYER_NAMES.items()}
        out[g + "attn.qkv.weight"] = torch.cat(
            [sd[h + f"self_attn.{p}_proj.weight"] for p in "qkv"], dim=0
        )
        if h + "mlp.experts.gate_up_proj" in sd:
            out[g + "moe.router.weight"] = sd[h + "mlp.gate.weight"]
            out[g + "moe.w_gate_up"] = sd[h + "mlp.experts.gate_up_proj"].transpose(1, 2)
            out[g + "moe.w_down"] = sd[h + "mlp.experts.down_proj"].transpose(1, 2)
        else:
            x = h + "block_sparse_moe."
            out[g + "moe.router.weight"] = sd[x + "gate.weight"]
            out[g + "moe.w_gate_up"] = torch.stack(
                [
                    torch.cat([sd[f"{x}experts.{e}.w1.weight"], sd[f"{x}experts.{e}.w3.weight"]])
                    for e in range(num_experts)
                ]
            ).transpose(1, 2)
            out[g + "moe.w_down"] = torch.stack(
                [sd[f"{x}experts.{e}.w2.weight"] for e in range(num_experts)]
            ).transpose(1, 2)
        out[g + "moe.w_gate_up"] = out[g + "moe.w_gate_up"].contiguous()
        out[g + "moe.w_down"] = out[g + "moe.w_down"].contiguous()
    return out
