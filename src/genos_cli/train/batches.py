"""Which samples each rank reads at each optimizer step, as micro-batches.

Step `s` uses the global samples `[s*G, (s+1)*G)`, G = micro * grad_accum * dp_world, laid
out like Megatron-LM's `MegatronPretrainingSampler`: micro-step `m` of rank `r` takes
`s*G + (m*W + r)*B + [0, B)`. The layout depends only on the step, so a resumed run (even
with another data-parallel size but the same global batch) continues with the exact next
batch. The samples themselves come from `genos_cli.data.packed`.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genos_cli.data.packed import PackedTokenDataset
from genos_cli.data.prefetch import prefetch
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    import torch


# -- batches per step and rank --------------------------------------------------------------


def step_sample_indices(
    step: int, micro_batch_size: int, grad_accum: int, dp_rank: int, dp_world_size: int
) -> np.ndarray:
    """Global sample indices of rank `dp_rank` at optimizer step `step`: (grad_accum, B).

    Micro-step m of rank r takes `step*G + (m*W + r)*B + [0, B)` (Megatron-LM's
    `MegatronPretrainingSampler` layout): the ranks' shares are disjoint and together are
    exactly `[step*G, (step+1)*G)`, and a 1-rank run with `grad_accum * W` reads, micro-step
    by micro-step, the same batches as the W ranks read together.
    """
    b, w = micro_batch_size, dp_world_size
    g = b * grad_accum * w
    micro = np.arange(grad_accum, dtype=np.int64)[:, None]  # (A, 1)
    row = np.arange(b, dtype=np.int64)[None, :]  # (1, B)
    return step * g + (micro * w + dp_rank) * b + row  # (A, B)


@dataclass(frozen=True)
class MicroBatch:
    input_ids: torch.Tensor  # (B, T) int64
    labels: torch.Tensor  # (B, T) int64: input_ids shifted left by one

    def pinned(self) -> MicroBatch:
        """In page-locked memory, so `.to(cuda, non_blocking=True)` really is asynchronous."""
        return MicroBatch(self.input_ids.pin_memory(), self.labels.pin_memory())


def to_micro_batch(windows: np.ndarray) -> MicroBatch:
    """(B, T+1) token windows → inputs and next-token labels as LongTensors."""
    import torch  # lazily: `genos --help` must not pay for torch

    return MicroBatch(
        input_ids=torch.from_numpy(np.ascontiguousarray(windows[:, :-1])),
        labels=torch.from_numpy(np.ascontiguousarray(windows[:, 1:])),
    )


class ShardedBatches:
    """This rank's micro-batches, one list of `grad_accum` per optimizer step.

    Iterating yields the batches of `self.step` and advances it, without end (epochs follow
    one another). `state_dict()` after consuming step s records s + 1, the next step, so a
    run restored with `load_state_dict` continues with exactly the batch it would have seen.
    """

    def __init__(
        self,
        dataset: PackedTokenDataset,
        micro_batch_size: int,
        grad_accum: int = 1,
        dp_rank: int = 0,
        dp_world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        for name, value in (
            ("micro_batch_size", micro_batch_size),
            ("grad_accum", grad_accum),
            ("dp_world_size", dp_world_size),
        ):
            if value < 1:
                raise GenosError(f"{name} must be at least 1, got {value}")
        if not 0 <= dp_rank < dp_world_size:
            raise GenosError(f"dp_rank must be in [0, {dp_world_size}), got {dp_rank}")
        if start_step < 0:
            raise GenosError(f"start_step must be at least 0, got {start_step}")
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.step = start_step

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step, all ranks together."""
        return self.micro_batch_size * self.grad_accum * self.dp_world_size

    @property
    def epoch(self) -> float:
        """Epochs consumed before `self.step` (fractional)."""
        return self.step * self.global_batch_size / self.dataset.samples_per_epoch

    def indices(self, step: int) -> np.ndarray:
        """This rank's global sample indices at `step`: (grad_accum, micro_batch_size)."""
        return step_sample_indices(
            step, self.micro_batch_size, self.grad_accum, self.dp_rank, self.dp_world_size
        )

    def batches(self, step: int) -> list[MicroBatch]:
        """This rank's micro-batches at `step` (does not move the position)."""
        return [to_micro_batch(self.dataset.samples(row)) for row in self.indices(step)]

    def prefetched(
        self, start_step: int, *, depth: int = 2, pin_memory: bool = False
    ) -> Generator[tuple[int, list[MicroBatch]], None, None]:
        """(step, this rank's micro-batches) from `start_step` on, built by a background
        thread up to `depth` steps ahead of the consumer (the gathers from the memory-mapped
        tokens overlap the model's compute), pinned for asynchronous copies to a GPU. Close
        the iterator to stop the thread."""

        def produce() -> Iterator[tuple[int, list[MicroBatch]]]:
            step = start_step
            while True:
                batches = self.batches(step)
                yield step, [b.pinned() for b in batches] if pin_memory else batches
                step += 1

        return prefetch(produce(), depth)

    def __iter__(self) -> Iterator[list[MicroBatch]]:
        return self

    def __next__(self) -> list[MicroBatch]:
        out = self.batches(self.step)
        self.step += 1
        return out

    def state_dict(self) -> dict[str, int]:
        """The position (the next step) and what makes it mean the same samples again."""
        return {
            "step": self.step,
            "global_batch_size": self.global_batch_size,
            "seq_length": self.dataset.seq_length,
            "seed": self.dataset.seed,
            "samples_per_epoch": self.dataset.samples_per_epoch,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at `state["step"]`; refuse a state whose steps meant other samples.

        The data-parallel size may differ (the layout is defined per global batch), the
        global batch size, sequence length, seed and data may not.
        """
        mine = self.state_dict()
        what = {
            "global_batch_size": "global batch size",
            "seq_length": "sequence length",
            "seed": "data seed",
            "samples_per_epoch": "number of samples per epoch (the data changed)",
        }
        for key, label in what.items():
            if key in state and int(state[key]) != mine[key]:
                raise GenosError(
                    f"the checkpoint's data position was saved with {label} {state[key]}, but "
                    f"this run has {mine[key]}; resume with the same data and batch settings"
                )
        step = int(state["step"])
        if step < 0:
            raise GenosError(f"the checkpoint's data position is a negative step ({step})")
        self.step = step
