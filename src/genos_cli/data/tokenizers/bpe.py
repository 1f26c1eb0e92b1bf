"""A SentencePiece BPE model over DNA, wrapped in the `DNATokenizer` interface.

Models trained by `genos tokenize train` reserve the same first ids as the nucleotide
tokenizer (0 <pad>, 1 <unk>, 2 <bos>, 3 <eos>, 4 <mask>, 5 <sep>, 6 <cls>), then the learned
merges in the order they were learned, and the four single bases last (SentencePiece's BPE
trainer puts single characters after the merges). Any SentencePiece model whose ordinary
pieces are all made of A, C, G, T is accepted; anything else is refused at load time with one
sentence.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from genos_cli.data.tokenizers.base import DNATokenizer
from genos_cli.data.vocab import MAX_VOCAB_SIZE
from genos_cli.errors import GenosError

_DNA = frozenset("ACGT")
# SentencePiece errors start with the C++ source location and the failed check:
# "INTERNAL: src/trainer_interface.cc(744) [(a) == (b)] Vocabulary size too high (5000)..."
_SP_LOCATION = re.compile(r"^\w+: \S+\(\d+\) \[.*?\]\s*")


def sentencepiece_message(exc: BaseException) -> str:
    """The human part of a SentencePiece error (may be empty: some errors are only a check)."""
    lines = str(exc).strip().splitlines()
    return _SP_LOCATION.sub("", lines[0]).strip() if lines else ""


class SentencePieceDNATokenizer(DNATokenizer):
    """A SentencePiece model (BPE or unigram) whose pieces are DNA."""

    kind = "bpe"

    def __init__(self, model_path: Path | str) -> None:
        path = Path(model_path)
        if not path.exists():
            raise GenosError(f"tokenizer model {path} does not exist")
        if not path.is_file():
            raise GenosError(f"{path} is not a SentencePiece model (it is a directory)")
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise GenosError(f"cannot read tokenizer model {path} ({exc.strerror})") from None
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(blob)
        except (RuntimeError, OSError, ValueError) as exc:
            reason = sentencepiece_message(exc) or "it does not parse as a SentencePiece ModelProto"
            raise GenosError(f"{path} is not a SentencePiece model ({reason})") from None
        self._check_dna(sp, path)
        self.path = path
        self.sp = sp
        self._sha256 = hashlib.sha256(blob).hexdigest()
        n = self.vocab_size = sp.get_piece_size()
        self.pad_id, self.unk_id = sp.pad_id(), sp.unk_id()
        self.bos_id, self.eos_id = sp.bos_id(), sp.eos_id()
        mask = sp.piece_to_id("<mask>")  # models trained by genos reserve one
        self.mask_id = None if mask == sp.unk_id() else mask
        # Ids that decode to nothing: <pad>, <unk>, control symbols (<bos>, <eos>, <mask>...).
        self._special = np.array(
            [sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) for i in range(n)],
            dtype=bool,
        )

    @staticmethod
    def _check_dna(sp: spm.SentencePieceProcessor, path: Path) -> None:
        n = sp.get_piece_size()
        if n > MAX_VOCAB_SIZE:
            raise GenosError(
                f"{path} has {n} pieces, more than the {MAX_VOCAB_SIZE} that uint16 token ids "
                "can store"
            )
        foreign = [
            sp.id_to_piece(i)
            for i in range(n)
            if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i))
            and (sp.is_byte(i) or not _DNA.issuperset(sp.id_to_piece(i)))
        ]
        if foreign:
            # Name a whole word if there is one: "'▁the'" says more than "'▁'".
            piece = next((p for p in foreign if len(p.strip("▁")) > 1), foreign[0])
            raise GenosError(
                f"{path} is not a DNA tokenizer: piece {piece!r} is not made of A, C, G, T"
            )
        missing = [b for b in "ACGT" if sp.piece_to_id(b) == sp.unk_id()]
        if missing:
            raise GenosError(f"{path} is not a DNA tokenizer: it has no piece for {missing[0]!r}")

    def encode(self, text: str) -> list[int]:
        """SentencePiece's own ids for `text`, unchanged (so lowercase bases are <unk>)."""
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        arr = np.asarray(ids, dtype=np.int64)
        n = self.vocab_size
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            bad = int(arr[(arr < 0) | (arr >= n)][0])
            raise GenosError(
                f"token id {bad} is outside the vocabulary of {self.path} (0..{n - 1})"
            )
        return self.sp.decode(arr[~self._special[arr]].tolist())

    def id_to_piece(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise GenosError(
                f"token id {token_id} is outside the vocabulary of {self.path} "
                f"(0..{self.vocab_size - 1})"
            )
        return self.sp.id_to_piece(token_id)

    def is_special(self, token_id: int) -> bool:
        """True for ids that are not text (pad, unk, bos, eos and other control symbols)."""
        return 0 <= token_id < self._special.size and bool(self._special[token_id])

    def fingerprint(self) -> str:
        return self._sha256

    def encode_packed(
        self, data: bytes, lengths: np.ndarray, *, append_eod: bool, num_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode all sequences in one `sp.encode` batch call (SentencePiece's own C++ threads),
        taking the ids back as raw int32 buffers and concatenating them once."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(data):
            raise ValueError(f"lengths sum to {int(lengths.sum())} but data has {len(data)} bytes")
        if lengths.size == 0:
            return np.empty(0, np.uint16), np.empty(0, np.int32)
        text = bytes(data).decode("ascii")
        bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
        texts = [text[a:b] for a, b in itertools.pairwise(bounds)]
        chunks = self.sp.encode(texts, out_type="numpy", num_threads=num_threads)
        token_lengths = np.fromiter(map(len, chunks), dtype=np.int32, count=len(chunks))
        if append_eod:
            eod = np.array([self.eod_id], dtype=np.int32)
            chunks = [part for chunk in chunks for part in (chunk, eod)]
            token_lengths += 1
        ids = np.concatenate(chunks).astype(np.uint16)
        return ids, token_lengths
