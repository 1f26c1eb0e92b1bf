"""Window cutting against a direct per-run reference, on real sequence, across block sizes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from genos_cli.data.windows import Windower, WindowSpec, split_uniform
from tests.conftest import GENOMES


def reference_windows(runs: list[str], spec: WindowSpec) -> list[str]:
    out = []
    for run in runs:
        n = len(run)
        k = (n - spec.length) // spec.stride + 1 if n >= spec.length else 0
        out += [run[i * spec.stride : i * spec.stride + spec.length] for i in range(k)]
        tail_start = (k - 1) * spec.stride + max(spec.length, spec.stride) if k else 0
        if n - tail_start >= spec.min_length:
            out.append(run[tail_start:])
    return out


@pytest.fixture(scope="module")
def real_stream() -> tuple[bytes, list[str]]:
    """Real D. discoideum sequence with its N runs, as a normalised block stream, and its
    ACGT runs."""
    with gzip.open(GENOMES / "ddiscoideum_ax4.fasta.gz", "rt") as fh:
        fh.readline()
        seq = "".join(line.strip() for _, line in zip(range(3000), fh, strict=False)).upper()
    # Four records of real sequence (two short), as the reader would emit them.
    parts = [seq[:30000], seq[30000:30300], seq[30300:30700], seq[30700:]]
    stream = ("|" + "|".join(parts) + "|").encode()
    runs = [r for p in parts for r in p.replace("N", " ").split()]
    assert sum(1 for r in runs if len(r) < 512) >= 3  # short runs exist in this stretch
    return stream, runs


def cut(stream: bytes, spec: WindowSpec, block: int, batch_bp: int = 1 << 20):  # type: ignore[no-untyped-def]
    w = Windower(spec, val_ratio=0.1, seed=7, batch_bp=batch_bp)
    blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
    batches = list(w.windows(blocks)) + list(w.flush())
    seqs = [s.decode() for b in batches for s in b.sequences()]
    is_val = np.concatenate([b.is_val for b in batches])
    return seqs, is_val, w.stats


SPECS = [
    WindowSpec(512, 512, 512),
    WindowSpec(512, 256, 512),
    WindowSpec(512, 700, 512),
    WindowSpec(512, 512, 100),
    WindowSpec(300, 128, 50),
    WindowSpec(64, 1000, 10),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("block", [97, 4096, 1 << 22])
def test_windows_equal_reference(real_stream, spec: WindowSpec, block: int) -> None:  # type: ignore[no-untyped-def]
    stream, runs = real_stream
    seqs, _, stats = cut(stream, spec, block)
    assert seqs == reference_windows(runs, spec)
    assert stats.sequences == len(seqs)
    assert stats.acgt_bp == sum(map(len, runs))
    assert stats.short_bp == sum(len(r) for r in runs if len(r) < spec.min_length)
    assert stats.uncovered_bp >= 0
    if spec.stride == spec.length:  # no overlap: covered bases are exactly the written ones
        assert stats.covered_bp == sum(map(len, seqs))


def test_split_is_deterministic_and_batch_independent(real_stream) -> None:  # type: ignore[no-untyped-def]
    stream, _ = real_stream
    spec = WindowSpec()
    _, val_a, _ = cut(stream, spec, 4096, batch_bp=10_000)
    _, val_b, _ = cut(stream, spec, 1 << 22, batch_bp=1 << 30)
    assert np.array_equal(val_a, val_b)
    assert 0.05 < val_a.mean() < 0.15  # val_ratio 0.1


def test_split_uniform_is_uniform() -> None:
    u = split_uniform(np.arange(200_000), seed=1234)
    assert u.min() >= 0 and u.max() < 1
    counts, _ = np.histogram(u, bins=10, range=(0, 1))
    assert np.all(np.abs(counts - 20_000) < 600)
    assert not np.array_equal(u[:100], split_uniform(np.arange(100), seed=1235))
