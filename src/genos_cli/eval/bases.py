"""Token ids back to bases, vectorised: what the baselines and bits per base count.

Codes: A=0, C=1, G=2, T=3. A token spells the bases of its piece (BPE) or its one base
(nucleotide); special ids and the end-of-document id spell none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


@dataclass(frozen=True)
class PieceTable:
    """Every token id's bases, flattened: id i spells `flat[start[i] : start[i] + length[i]]`."""

    flat: np.ndarray  # (sum of lengths,) uint8 codes
    start: np.ndarray  # (V,) int64
    length: np.ndarray  # (V,) int64

    @classmethod
    def of(cls, tokenizer: DNATokenizer) -> PieceTable:
        pieces = []
        for i in range(tokenizer.vocab_size):
            piece = b""
            if i != tokenizer.eod_id and not tokenizer.is_special(i):
                text = tokenizer.id_to_piece(i).encode("ascii", "replace")
                # A piece of anything but ACGT (e.g. the nucleotide tokenizer's N) spells no
                # base the baselines could score; genos's data never holds one.
                piece = text if text and not text.strip(b"ACGT") else b""
            pieces.append(piece)
        length = np.array([len(p) for p in pieces], np.int64)
        start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
        flat = base_codes(b"".join(pieces))
        return cls(flat, start, length)

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
