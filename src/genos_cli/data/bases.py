"""Token ids back to bases, and bits per base: the one rule everything that counts bases uses.

**A token spells the A/C/G/T bases of its piece.** A BPE piece spells its characters; a
nucleotide id spells its one base; the end-of-document id, special ids and reserved ids
spell none, and so does `N` (an unknown base is not DNA the model or a baseline can be
scored on). genos's own data never holds `N` (preprocessing keeps A/C/G/T runs only), so
the rule only matters for foreign `.bin/.idx` data.

Training-time validation, `genos eval`, its Markov baseline and `genos score` all count
bases with `bases_per_token` / `PieceTable`, so they report the same bits per base for the
same model and tokens. Codes: A=0, C=1, G=2, T=3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer

_CODE = np.full(256, 255, np.uint8)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i


def base_codes(seq: bytes) -> np.ndarray:
    """Uppercase ACGT bytes as codes 0-3: (N,) uint8."""
    codes = _CODE[np.frombuffer(seq, np.uint8)]
    if codes.size and codes.max() == 255:
        raise ValueError("base_codes takes uppercase A/C/G/T only")
    return codes


def token_piece(tokenizer: DNATokenizer, token_id: int) -> bytes:
    """The A/C/G/T bases token `token_id` spells (b"" for specials, EOD and N)."""
    if token_id == tokenizer.eod_id or tokenizer.is_special(token_id):
        return b""
    text = tokenizer.id_to_piece(token_id).encode("ascii", "replace")
    return text if text and not text.strip(b"ACGT") else b""


def bases_per_token(tokenizer: DNATokenizer) -> np.ndarray:
    """Bases each token id spells: (vocab_size,) float64 (see the module doc for the rule)."""
    return PieceTable.of(tokenizer).length.astype(np.float64)


def bits_per_base(nll_nats_sum: float, bases: float) -> float:
    """Total NLL in bits of the predicted tokens that spell bases, divided by those bases.

    bpb = sum_t -ln p(x_t | x_<t) / ln 2 / sum_t bases(x_t), summed over every predicted
    token t that spells at least one base. End-of-document ids spell none and are left out:
    where a document ends is given, not DNA to compress, and the Markov baseline, which
    scores bases only, never pays for it (the loss per token still counts them). Their
    probability mass is not: whatever the model puts on them is missing from the bases'.
    Comparable across tokenizers, unlike loss per token: it is the compression rate of the
    DNA in bits per nucleotide (2 bits = a uniform guess over A/C/G/T).
    """
    if bases <= 0:
        raise ValueError(f"bits per base needs a positive number of bases, got {bases}")
    return float(nll_nats_sum) / math.log(2) / float(bases)


@dataclass(frozen=True)
class PieceTable:
    """Every token id's bases, flattened: id i spells `flat[start[i] : start[i] + length[i]]`."""

    flat: np.ndarray  # (sum of lengths,) uint8 codes
    start: np.ndarray  # (V,) int64
    length: np.ndarray  # (V,) int64

    @classmethod
    def of(cls, tokenizer: DNATokenizer) -> PieceTable:
        pieces = [token_piece(tokenizer, i) for i in range(tokenizer.vocab_size)]
        length = np.array([len(p) for p in pieces], np.int64)
        start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
        return cls(base_codes(b"".join(pieces)), start, length)

    def decode(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bases of `ids` (N,) back to back: (codes (M,) uint8, token index of each base (M,))."""
        ids = np.asarray(ids, np.int64)
        lengths = self.length[ids]
        total = int(lengths.sum())
        token_of_base = np.repeat(np.arange(ids.size, dtype=np.int64), lengths)
        first_base = np.cumsum(lengths) - lengths  # (N,) where each token's bases begin
        within = np.arange(total, dtype=np.int64) - first_base[token_of_base]
        codes = self.flat[self.start[ids][token_of_base] + within]
        return codes, token_of_base
