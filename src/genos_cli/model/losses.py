"""The losses as pure functions: language-model loss, the two router losses, and the
negative log-likelihood accounting behind bits per base."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genos_cli.data.score_windows import IGNORE_INDEX


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats over labels that are not `IGNORE_INDEX`.

    logits: (B, T, V); labels: (B, T), already aligned with the logits, i.e. `labels[:, t]`
    is the token that should follow position t (Megatron/nanoGPT convention, no shift here).
    Computed in fp32 whatever the logits' dtype.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def nll_sums(
    logits: torch.Tensor, labels: torch.Tensor, bases_per_token: torch.Tensor
) -> torch.Tensor:
    """(total NLL in nats, labels scored, bases they spell, NLL of the labels that spell
    bases) as a (4,) float64 tensor on the logits' device, without a host sync: what loss
    and bits per base are summed from.

    logits: (B, T, V); labels: (B, T) aligned with the logits, `IGNORE_INDEX` = not scored;
    bases_per_token: (V,) the bases each id spells (`genos_cli.data.bases.bases_per_token`).
    The loss counts every scored label; bits per base only those that spell bases (see
    `genos_cli.data.bases.bits_per_base`). Training-time validation and `genos eval` both
    count with this, so they agree.
    """
    flat = labels.reshape(-1)
    scored = flat != IGNORE_INDEX
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=IGNORE_INDEX,
        reduction="none",
    ).double()  # fmt: skip
    table = bases_per_token.to(device=flat.device, dtype=torch.float64)
    spelled = torch.where(scored, table[flat.clamp(min=0)], 0.0)
    base_nll = torch.where(spelled > 0, nll, 0.0).sum()
    return torch.stack([nll.sum(), scored.sum().double(), spelled.sum(), base_nll])


def load_balancing_loss(
    router_probs: torch.Tensor, expert_index: torch.Tensor, num_experts: int
) -> torch.Tensor:
    """Auxiliary load-balancing loss of one MoE layer: E * sum_e f_e * P_e.

    Switch Transformer (Fedus et al. 2021, eqs. 4-6), with the top-k extension of Mixtral
    (Hugging Face `load_balancing_loss_func`): f_e is the number of (token, slot) routes to
    expert e divided by the number of tokens N, so sum_e f_e = K; P_e is the mean router
    probability of expert e. Its minimum K is reached by uniform routing; gradients flow
    through P only (f is a count).

    router_probs: (N, E) softmax of the router logits (fp32); expert_index: (N, K) chosen
    experts. Returns a scalar.
    """
    num_tokens = router_probs.shape[0]
    counts = torch.zeros(num_experts, dtype=router_probs.dtype, device=router_probs.device)
    counts = counts.scatter_add(
        0, expert_index.reshape(-1), torch.ones_like(expert_index, dtype=counts.dtype).reshape(-1)
    )
    tokens_per_expert = counts / num_tokens  # (E,) f_e, sums to K
    prob_per_expert = router_probs.mean(dim=0)  # (E,) P_e, sums to 1
    return num_experts * torch.sum(tokens_per_expert * prob_per_expert)


def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """Router z-loss of one MoE layer: mean over tokens of logsumexp(logits)^2.

    ST-MoE (Zoph et al. 2022, eq. 5): penalises large router logits, which keeps the
    router's softmax out of the range where bf16 round-off changes the routing.
    router_logits: (N, E). Returns a scalar (fp32).
    """
    return torch.logsumexp(router_logits.float(), dim=-1).pow(2).mean()
