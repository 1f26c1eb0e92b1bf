"""DNA tokenizers: one token per base (`nucleotide`) or SentencePiece BPE (`bpe`).

Both implement `DNATokenizer`. Everything except the interface is imported on first use, so
importing this package does not load sentencepiece.
"""

from __future__ import annotations

from importlib import import_module, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genos_cli.data.tokenizers.base import DNATokenizer
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    from genos_cli.data.tokenizers.bpe import SentencePieceDNATokenizer
    from genos_cli.data.tokenizers.nucleotide import DNANucleotideTokenizer
    from genos_cli.data.tokenizers.training import TrainResult, train_sentencepiece

__all__ = [
    "KINDS",
    "DNANucleotideTokenizer",
    "DNATokenizer",
    "SentencePieceDNATokenizer",
    "TrainResult",
    "default_tokenizer_path",
    "load_tokenizer",
    "train_sentencepiece",
]

KINDS = ("bpe", "nucleotide")
DEFAULT_MODEL_NAME = "dna_bpe_128.model"

_LAZY = {
    "DNANucleotideTokenizer": "genos_cli.data.tokenizers.nucleotide",
    "SentencePieceDNATokenizer": "genos_cli.data.tokenizers.bpe",
    "TrainResult": "genos_cli.data.tokenizers.training",
    "train_sentencepiece": "genos_cli.data.tokenizers.training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_tokenizer_path() -> Path:
    """The BPE model genos ships (vocab 128, trained on six genomes; see docs/tokenize.md)."""
    model = resources.files("genos_cli.resources") / "tokenizer" / DEFAULT_MODEL_NAME
    return Path(str(model))


def load_tokenizer(kind: str = "bpe", model_path: Path | None = None) -> DNATokenizer:
    """A tokenizer by kind: "bpe" loads `model_path` (the shipped default when None);
    "nucleotide" has a fixed vocabulary and ignores `model_path`."""
    if kind == "nucleotide":
        from genos_cli.data.tokenizers.nucleotide import DNANucleotideTokenizer

        return DNANucleotideTokenizer()
    if kind == "bpe":
        from genos_cli.data.tokenizers.bpe import SentencePieceDNATokenizer

        return SentencePieceDNATokenizer(model_path or default_tokenizer_path())
    raise GenosError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
