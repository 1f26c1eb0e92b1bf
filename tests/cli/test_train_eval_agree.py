"""Training-time validation and `genos eval` report the same bits per base for the same
checkpoint and data: both score with `genos_cli.data.score_windows`, sum NLL with
`genos_cli.model.losses.nll_sums` and count bases with `genos_cli.data.bases`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from genos_cli.data.indexed import IndexedDataset
from tests.helpers import genos
from tests.tiny import TINY_MODEL, TINY_TRAIN_ARGS, TINY_TRAINING

EVAL_ITERS = 8  # micro-batches a training-time evaluation scores (genos_cli.train.plan)


@pytest.fixture(scope="module")
def small_val(tmp_path_factory: pytest.TempPathFactory, genomes_dir: Path) -> Path:
    """8 kbp of S. aureus (a genome the run never trains on) as a BPE data set of its own:
    15 sequences of 512 bp, small enough for training-time validation to score all of it."""
    with gzip.open(genomes_dir / "saureus_nctc8325.fasta.gz", "rt") as fh:
        seq = "".join(line.strip() for line in fh if not line.startswith(">"))[100_000:108_000]
    root = tmp_path_factory.mktemp("small_val")
    fasta = root / "saureus.fa"
    fasta.write_text(">slice\n" + "\n".join(seq[i : i + 70] for i in range(0, len(seq), 70)))
    result = genos("preprocess", fasta, "-o", root / "sa", "--val-ratio", "0", "--workers", "1",
                   "--seq-length", "512")  # fmt: skip
    assert result.exit_code == 0, result.output
    return root / "sa_text_document"


def _eval_json(*args: str | Path) -> dict:
    result = genos("eval", *args, "--json", "--no-markov")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_last_validation_equals_genos_eval(
    tmp_path: Path, ecoli_data: Path, small_val: Path
) -> None:
    tokens = IndexedDataset(small_val).num_tokens
    context, micro = TINY_MODEL["max_seq_length"], TINY_TRAINING["micro_batch_size"]
    assert tokens - 1 <= EVAL_ITERS * micro * context  # the first 8 micro-batches hold it all

    run = tmp_path / "run"
    result = genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data,
                   "--val-data-path", small_val, "--max-steps", "4", "--eval-interval", "2",
                   "--save-interval", "2", "--output-dir", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = (run / "training_log.jsonl").read_text().splitlines()
    evals = {r["step"]: r for r in map(json.loads, lines) if r["type"] == "eval"}
    assert sorted(evals) == [2, 4]

    latest = _eval_json(run)  # the run's latest checkpoint on its recorded validation data
    earlier = _eval_json(run / "checkpoints" / "step_00000002")
    assert latest["step"] == 4 and earlier["step"] == 2
    assert latest["data"] == [str(small_val.resolve())]
    for ours, logged in ((latest, evals[4]), (earlier, evals[2])):
        # The same labels (every token but the first) and the same bases...
        assert ours["tokens"] == logged["val_tokens"] == tokens - 1
        assert ours["bases"] == logged["val_bases"]
        # ...and the same NLL: eval batches 8 windows, training 4, hence float sums in
        # another order and a tolerance far below any real difference.
        assert ours["bits_per_base"] == pytest.approx(logged["val_bits_per_base"], rel=1e-6)

    # Not vacuous: the number moves between checkpoints by 1000x the tolerance, so a
    # comparison that matched any checkpoint, or a constant, would fail; and neither is the
    # uniform 2 bits per base that two broken scorers could share.
    assert abs(evals[2]["val_bits_per_base"] - evals[4]["val_bits_per_base"]) > 1e-3
    for logged in evals.values():
        assert abs(logged["val_bits_per_base"] - 2.0) > 1e-2
    # The bases are the DNA itself: 15 x 512 bp minus the few the first token spells.
    assert 15 * 512 - 20 < latest["bases"] < 15 * 512
