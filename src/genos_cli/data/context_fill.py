"""Documents that fill the context: how many bases a tokenizer spells per token.

`data.sequence_length_bp: auto` cuts genomes into documents of `contexts_per_document`
training contexts' worth of bases, so that a packed training sample (model.max_seq_length
tokens) is mostly one contiguous stretch of genome instead of ~3 unrelated 512-bp fragments
(a 512-bp fragment is ~180 BPE tokens). The conversion uses the tokenizer's bp per token,
measured on a fixed reference — the first 256 kbp of the E. coli genome genos ships, in
4,096-bp pieces — so that a tokenizer always resolves 'auto' to the same length, whatever
the data: 1.0 for the nucleotide tokenizer, ~2.9 for the shipped BPE.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from genos_cli.data.fasta import read_acgt_runs
from genos_cli.data.sources import default_genome_path

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer

REFERENCE_BP = 1 << 18  # 256 kbp: bp/token to three decimals, a fraction of a second to encode
_PIECE_BP = 4096


def reference_bp_per_token(tokenizer: DNATokenizer) -> float:
    """Bases per token (end-of-document ids excluded) of `tokenizer` on the reference: the
    first REFERENCE_BP bases of the embedded E. coli genome, in 4,096-bp pieces."""
    pieces = list(
        itertools.islice(
            read_acgt_runs([default_genome_path()], max_run_bp=_PIECE_BP),
            REFERENCE_BP // _PIECE_BP,
        )
    )
    lengths = np.array([len(p) for p in pieces], np.int64)
    ids, _ = tokenizer.encode_packed(b"".join(pieces), lengths, append_eod=False)
    return float(lengths.sum()) / max(ids.size, 1)
