"""Tiny checkpoints (random weights, both tokenizers) and real E. coli slices for the
inference tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.tiny import TINY_OVERRIDES, make_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_ckpt")
    return {
        "bpe": make_checkpoint(root / "bpe"),
        "nucleotide": make_checkpoint(root / "nucleotide", nucleotide=True),
    }


@pytest.fixture(scope="session")
def ecoli_sequence(ecoli_fasta: Path) -> str:
    """The E. coli K-12 genome as one uppercase string (4.6 Mbp)."""
    with gzip.open(ecoli_fasta, "rt") as fh:
        return "".join(line.strip() for line in fh if not line.startswith(">")).upper()


@pytest.fixture(scope="session")
def ecoli_reference(tmp_path_factory: pytest.TempPathFactory, ecoli_sequence: str) -> Path:
    """E. coli as a plain FASTA (faidx builds its .fai on first use), 80 bases a line."""
    path = tmp_path_factory.mktemp("reference") / "ecoli.fa"
    lines = [ecoli_sequence[i : i + 80] for i in range(0, len(ecoli_sequence), 80)]
    path.write_text(">K-12-MG1655 Escherichia coli K-12 MG1655\n" + "\n".join(lines) + "\n")
    return path


TRAIN_END = 3_500_000  # the trained model sees E. coli up to here; tests score what follows


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory, ecoli_sequence: str) -> Path:
    """The tiny nucleotide model trained 300 steps (batch 16 x 128) on the first 3.5 Mbp of
    E. coli with a plain AdamW loop (~12 s on one thread): enough to learn the genome's
    short-range statistics, which random weights do not have."""
    import numpy as np
    import torch

    from genos_cli.checkpoint import write_consolidated
    from genos_cli.config import load_config
    from genos_cli.data.tokenizers import load_tokenizer
    from genos_cli.model import build_model

    cfg = load_config("small", overrides={**TINY_OVERRIDES, "tokenizer.kind": "nucleotide",
                                          "tokenizer.vocab_size": 16})  # fmt: skip
    tokenizer = load_tokenizer("nucleotide")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(cfg.model, compile=False)
    ids = np.array(tokenizer.encode(ecoli_sequence[:TRAIN_END]), np.int64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    context = cfg.model.max_seq_length
    for _ in range(300):
        starts = rng.integers(0, ids.size - context, 16)
        x = np.stack(
            [np.concatenate([[tokenizer.eod_id], ids[s : s + context - 1]]) for s in starts]
        )
        y = np.stack([ids[s : s + context] for s in starts])  # labels aligned with logits
        model(torch.from_numpy(x), labels=torch.from_numpy(y)).loss.backward()
        opt.step()
        opt.zero_grad()
    torch.set_num_threads(threads)
    directory = tmp_path_factory.mktemp("trained") / "ckpt"
    write_consolidated(directory, model.state_dict(), cfg, tokenizer, {"step": 300})
    return directory
