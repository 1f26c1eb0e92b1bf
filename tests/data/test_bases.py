"""Bits per base (`genos_cli.data.bases`): the one rule for the bases a token spells, its
table for both tokenizers against the bp `genos preprocess` counted, and the NLL sums
(`genos_cli.model.losses.nll_sums`) that training-time validation and `genos eval` share."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from genos_cli.data.bases import bases_per_token, bits_per_base
from genos_cli.data.indexed import IndexedDataset
from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.model.losses import nll_sums
from tests.helpers import train_prefix

# The one rule (genos_cli.data.bases): a token spells the A/C/G/T bases of its piece.
BASES_RULE = [  # (tokenizer, text of the token or a special, bases it spells)
    ("nucleotide", "A", 1), ("nucleotide", "T", 1), ("nucleotide", "C", 1),
    ("nucleotide", "G", 1), ("nucleotide", "N", 0), ("nucleotide", "<eod>", 0),
    ("nucleotide", "<pad>", 0), ("bpe", "AAAAAAAA", 8), ("bpe", "A", 1), ("bpe", "<eod>", 0),
    ("bpe", "<pad>", 0), ("bpe", "<unk>", 0),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "text", "bases"), BASES_RULE)
def test_bases_per_token_rule(kind: str, text: str, bases: int) -> None:
    tok = load_tokenizer(kind)
    specials = {"<eod>": tok.eod_id, "<pad>": tok.pad_id, "<unk>": tok.unk_id}
    [token] = [specials[text]] if text in specials else tok.encode(text)
    assert bases_per_token(tok)[token] == bases
    assert bases_per_token(tok).shape == (tok.vocab_size,)


def test_bases_per_token_bpe_and_the_data_bp(ecoli_data: Path, ecoli_nucleotide_data: Path) -> None:
    tok = load_tokenizer("bpe")
    table = bases_per_token(tok)
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    assert table[tok.encode("AAAAAAAA")[0]] == 8
    for i, piece in enumerate(pieces):
        assert table[i] == (0 if tok.is_special(i) else len(piece))
    assert table[:7].sum() == 0 and table.max() == 16
    # the bases of all tokens are the bp the manifest counted, for both tokenizers
    for prefix, kind in ((ecoli_data, "bpe"), (ecoli_nucleotide_data, "nucleotide")):
        manifest = json.loads(Path(f"{prefix}.json").read_text())
        table = bases_per_token(load_tokenizer(kind))
        tokens = IndexedDataset(train_prefix(prefix)).tokens
        assert table[tokens].sum() == manifest["outputs"]["train"]["bp"]


def test_bits_per_base_by_hand() -> None:
    # 3 predicted tokens "ACG" (3 bases), "T" (1 base) and eod (0): 4 bases; losses in nats
    nll = math.log(4) + math.log(2) + math.log(8)  # = 2 + 1 + 3 bits
    assert bits_per_base(nll, 4) == pytest.approx(6 / 4)
    assert bits_per_base(4 * math.log(4), 4) == pytest.approx(2.0)  # uniform over ACGT
    with pytest.raises(ValueError):
        bits_per_base(1.0, 0)
    tok = load_tokenizer("bpe")
    table = bases_per_token(tok)
    labels = torch.tensor([[tok.encode("GCGC")[0], tok.eod_id], [tok.encode("A")[0], -100]])
    logits = torch.zeros(2, 2, tok.vocab_size)  # uniform: each scored label costs ln V nats
    sums = nll_sums(logits, labels, torch.from_numpy(table))
    assert sums.dtype == torch.float64
    nll, scored, bases, base_nll = sums.tolist()
    assert (scored, bases) == (3.0, 5.0)
    assert nll == pytest.approx(3 * math.log(tok.vocab_size))  # the loss counts the eod
    assert base_nll == pytest.approx(2 * math.log(tok.vocab_size))  # bits per base does not
