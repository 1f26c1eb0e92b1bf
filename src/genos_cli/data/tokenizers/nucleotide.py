"""One token per base: the simplest DNA tokenizer and the baseline the BPE one is judged by.

Vocabulary (16 ids, fixed; the first seven match the BPE tokenizer's special ids):

    0 <pad>  1 <unk>  2 <bos>  3 <eos> (= end of document)  4 <mask>  5 <sep>  6 <cls>
    7 A  8 T  9 C  10 G  11 N  12..15 <reserved_0>..<reserved_3>

Encoding is one table lookup over the ASCII bytes: lowercase (soft-masked) bases map to the
same ids as uppercase, N and the IUPAC ambiguity codes (RYSWKMBDHV) map to N, anything else to
<unk>.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from genos_cli.data.tokenizers.base import DNATokenizer
from genos_cli.data.vocab import NUCLEOTIDE_VOCAB_SIZE
from genos_cli.errors import GenosError

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<sep>", "<cls>")
VOCAB: tuple[str, ...] = (
    *SPECIALS,
    "A",
    "T",
    "C",
    "G",
    "N",
    *(f"<reserved_{i}>" for i in range(4)),
)
assert len(VOCAB) == NUCLEOTIDE_VOCAB_SIZE
PAD, UNK, BOS, EOS, MASK, SEP, CLS = range(7)
A, T, C, G, N = range(7, 12)
IUPAC_AMBIGUOUS = "NRYSWKMBDHV"


def _encode_table() -> np.ndarray:
    """byte value -> id, for all 256 byte values."""
    table = np.full(256, UNK, dtype=np.uint16)
    for base, token_id in (("A", A), ("T", T), ("C", C), ("G", G)):
        table[ord(base)] = table[ord(base.lower())] = token_id
    for code in IUPAC_AMBIGUOUS:
        table[ord(code)] = table[ord(code.lower())] = N
    return table


_ENCODE = _encode_table()
# The same table as bytes for `bytes.translate`, which runs at ~1 GB/s where numpy fancy
# indexing (uint8 -> intp -> gather) manages ~250 MB/s. All ids fit in a byte.
_TRANSLATE = bytes(_ENCODE.astype(np.uint8).tolist())
# id -> byte to emit when decoding; 0 marks ids that decode to nothing (specials, reserved).
_DECODE = np.zeros(len(VOCAB), dtype=np.uint8)
for _id in (A, T, C, G, N):
    _DECODE[_id] = ord(VOCAB[_id])


class DNANucleotideTokenizer(DNATokenizer):
    """Single-nucleotide tokenizer with a fixed 16-entry vocabulary (see module docstring)."""

    kind = "nucleotide"
    vocab_size = len(VOCAB)
    pad_id, unk_id, bos_id, eos_id, mask_id = PAD, UNK, BOS, EOS, MASK

    def encode(self, text: str) -> list[int]:
        # Non-ASCII characters become "?" (one per character), which maps to <unk>.
        return list(text.encode("ascii", errors="replace").translate(_TRANSLATE))

    def decode(self, ids: Sequence[int]) -> str:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= len(VOCAB)):
            bad = int(arr[(arr < 0) | (arr >= len(VOCAB))][0])
            raise GenosError(
                f"token id {bad} is outside the nucleotide vocabulary (0..{len(VOCAB) - 1})"
            )
        out = _DECODE[arr]
        return out[out != 0].tobytes().decode("ascii")

    def id_to_piece(self, token_id: int) -> str:
        if not 0 <= token_id < len(VOCAB):
            raise GenosError(
                f"token id {token_id} is outside the nucleotide vocabulary (0..{len(VOCAB) - 1})"
            )
        return VOCAB[token_id]

    def is_special(self, token_id: int) -> bool:
        """True for ids that are not text (pad, unk, bos, eos, mask, sep, cls, reserved)."""
        return token_id in range(len(VOCAB)) and _DECODE[token_id] == 0

    def fingerprint(self) -> str:
        # Versioned name plus a digest of the id layout, so a changed layout cannot pass.
        return "nucleotide-v1:" + hashlib.sha256(",".join(VOCAB).encode()).hexdigest()[:16]

    def encode_packed(
        self, data: bytes, lengths: np.ndarray, *, append_eod: bool, num_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """One table lookup over all bytes, then the EOD ids added by a reshape (fixed
        lengths) or one `np.insert`; `num_threads` is ignored."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if not isinstance(data, bytes | bytearray):
            data = bytes(data)
        if int(lengths.sum()) != len(data):
            raise ValueError(f"lengths sum to {int(lengths.sum())} but data has {len(data)} bytes")
        ids = np.frombuffer(data.translate(_TRANSLATE), dtype=np.uint8)
        if append_eod:
            n = lengths.size
            if n and bool((lengths == lengths[0]).all()):
                # Fixed-length windows (the usual case): widen into an (n, L+1) array whose last
                # column is the EOD id; 6x faster than np.insert.
                width = int(lengths[0])
                out = np.empty((n, width + 1), np.uint16)
                out[:, :width] = ids.reshape(n, width)
                out[:, width] = EOS
                return out.ravel(), (lengths + 1).astype(np.int32)
            # EOD of sequence i goes before offset end_i of the EOD-free array; inserting into
            # the uint8 array and widening once afterwards moves the fewest bytes.
            ids = np.insert(ids, np.cumsum(lengths), np.uint8(EOS))
            return ids.astype(np.uint16), (lengths + 1).astype(np.int32)
        return ids.astype(np.uint16), lengths.astype(np.int32)
