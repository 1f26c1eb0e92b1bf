"""How run figures read in a terminal: durations, percentages, expert balance.

Shared by the training live view and `genos metrics`, so both say the same thing the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpertBalance:
    """How evenly a window's tokens were spread over each layer's experts.

    `max_over_mean`: the busiest expert's share over the mean share (1 = even, E = all tokens
    to one of E experts). `entropy`: entropy of the shares over log(E) (1 = even, 0 = one).
    """

    max_over_mean: tuple[float, ...]
    entropy: tuple[float, ...]

    @property
    def worst_layer(self) -> int:
        return max(range(len(self.max_over_mean)), key=self.max_over_mean.__getitem__)


def expert_balance(load: Sequence[Sequence[float]] | None) -> ExpertBalance | None:
    """Balance of a record's `expert_load` (per layer, per-expert shares of the routes)."""
    ratios, entropies = [], []
    for layer in load or []:
        total = sum(layer)
        if total <= 0 or len(layer) < 2:
            continue
        shares = [x / total for x in layer]
        ratios.append(max(shares) * len(shares))
        h = -sum(p * math.log(p) for p in shares if p > 0)
        entropies.append(h / math.log(len(shares)))
    if not ratios:
        return None
    return ExpertBalance(tuple(ratios), tuple(entropies))


def format_balance(balance: ExpertBalance | None) -> str:
    if balance is None:
        return "-"
    worst = balance.worst_layer
    mean_entropy = sum(balance.entropy) / len(balance.entropy)
    return (
        f"max/mean {' '.join(f'{r:.2f}' for r in balance.max_over_mean)} "
        f"(worst layer {worst}: {balance.max_over_mean[worst]:.2f})   "
        f"entropy {mean_entropy:.3f}"
    )


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"
