"""Per-rank micro-batches (`genos_cli.train.batches`): ranks split each global batch
exactly, one rank with more accumulation sees what several ranks see, and a resumed run
continues with the exact next batches, across an epoch boundary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genos_cli.data.packed import PackedTokenDataset
from genos_cli.errors import GenosError
from genos_cli.train.batches import ShardedBatches, step_sample_indices
from tests.helpers import train_prefix

T = 256  # sequence length of the samples (the data's documents are 512 bp + eod)
SEED = 1234


@pytest.mark.parametrize(("micro", "accum", "world"), [(1, 1, 1), (2, 3, 2), (4, 1, 8), (3, 2, 4)])
def test_ranks_split_each_global_batch_exactly(micro: int, accum: int, world: int) -> None:
    g = micro * accum * world
    for step in (0, 1, 17):
        shares = [step_sample_indices(step, micro, accum, r, world) for r in range(world)]
        assert all(s.shape == (accum, micro) for s in shares)
        together = np.sort(np.concatenate([s.ravel() for s in shares]))
        assert np.array_equal(together, np.arange(step * g, (step + 1) * g))


def _rows(batches: list) -> list[np.ndarray]:
    return [row for mb in batches for row in mb.input_ids.numpy()]


def test_one_rank_with_double_accumulation_sees_what_two_ranks_see(
    ecoli_nucleotide_data: Path,
) -> None:
    ds = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    single = ShardedBatches(ds, micro_batch_size=2, grad_accum=4)
    ranks = [ShardedBatches(ds, 2, grad_accum=2, dp_rank=r, dp_world_size=2) for r in (0, 1)]
    assert single.global_batch_size == ranks[0].global_batch_size == 8
    for _ in range(3):
        one = next(single)
        two = [next(r) for r in ranks]
        # micro-batch k of the single rank is micro-step k // 2 of rank k % 2
        for k, mb in enumerate(one):
            other = two[k % 2][k // 2]
            assert torch.equal(mb.input_ids, other.input_ids)
            assert torch.equal(mb.labels, other.labels)
        assert mb.input_ids.dtype == torch.int64 and mb.input_ids.shape == (2, T)
    # and the ranks' rows are disjoint
    rows0, rows1 = (_rows(ranks[r].batches(0)) for r in (0, 1))
    assert not any(np.array_equal(a, b) for a in rows0 for b in rows1)


def test_resume_continues_with_the_exact_next_batches(ecoli_nucleotide_data: Path) -> None:
    ds = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    steps_per_epoch = len(ds) // 12
    start = steps_per_epoch - 2  # the batches to come cross into epoch 2
    run = ShardedBatches(ds, 3, grad_accum=2, dp_rank=1, dp_world_size=2, start_step=start)
    next(run)
    state = json.loads(json.dumps(run.state_dict()))  # checkpoints store it as plain data
    assert state["step"] == start + 1
    expected = [next(run) for _ in range(3)]

    fresh = PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, SEED)
    resumed = ShardedBatches(fresh, 3, grad_accum=2, dp_rank=1, dp_world_size=2)
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(got, want, strict=True))
        assert all(torch.equal(a.labels, b.labels) for a, b in zip(got, want, strict=True))
    assert resumed.epoch > 1.0

    # same global batch on one rank: the same samples, all of them
    solo = ShardedBatches(fresh, 3, grad_accum=4)
    solo.load_state_dict(state)
    both = [ShardedBatches(ds, 3, 2, r, 2, start_step=start + 1) for r in (0, 1)]
    want_rows = sorted(r.tobytes() for b in both for r in _rows(next(b)))
    assert sorted(r.tobytes() for r in _rows(next(solo))) == want_rows

    with pytest.raises(GenosError, match="global batch size 12, but this run has 6"):
        ShardedBatches(fresh, 3, grad_accum=2).load_state_dict(state)
    with pytest.raises(GenosError, match="data seed"):
        ShardedBatches(
            PackedTokenDataset([train_prefix(ecoli_nucleotide_data)], T, 9), 3, 4
        ).load_state_dict(state)
