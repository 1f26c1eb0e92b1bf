"""The interface both DNA tokenizers share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class DNATokenizer(ABC):
    """A tokenizer of DNA text (ACGT) into integer ids below `vocab_size`.

    `eod_id` is the end-of-document id appended after each sequence in Megatron data
    (Megatron-LM's `--append-eod`); for both tokenizers it is the eos id.
    """

    kind: str  # "bpe" or "nucleotide", recorded in data manifests and checkpoints
    # The vocabulary's size and special ids: class attributes or set in __init__.
    vocab_size: int
    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int
    mask_id: int | None = None  # <mask> (for masked-LM objectives); None if there is none

    @property
    def eod_id(self) -> int:
        return self.eos_id

    def is_special(self, token_id: int) -> bool:
        """True for ids that stand for no DNA (pad, unk, bos, eos, other control symbols)."""
        return token_id in (self.pad_id, self.unk_id, self.bos_id, self.eos_id)

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of `text` (no bos/eos added)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; special ids decode to nothing."""

    @abstractmethod
    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary entry of one id (for `genos tokenize inspect`)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A stable identity (e.g. sha256 of the model) so data and checkpoints can check they
        were made with the same tokenizer."""

    @abstractmethod
    def encode_packed(
        self, data: bytes, lengths: np.ndarray, *, append_eod: bool, num_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode many sequences at once — the preprocessing hot path.

        `data` holds the sequences' uppercase ACGT bytes back to back and `lengths` (int64)
        their byte lengths. Returns `(ids, token_lengths)`: all ids back to back as uint16
        (with `eod_id` after each sequence when `append_eod`) and each sequence's token count
        (int32, including its eod).
        """
