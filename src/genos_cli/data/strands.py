"""Both strands of DNA: reverse complements of sequences, of window batches, of token documents.

A double-stranded molecule reads 5'->3' on either strand: the second strand is the first one
reversed with every base paired to its complement (A-T, C-G). A genome file holds one
strand, chosen arbitrarily, so a DNA language model should treat the two alike: HyenaDNA,
Caduceus and Evo train on both (reverse-complement augmentation) and Caduceus scores both.

- `with_reverse_complements` adds the reverse complement of every *training* window at
  preprocess time (`genos preprocess --reverse-complement`). The train/validation split is
  drawn per window before that, and validation windows are never augmented, so the
  validation split is the same with and without augmentation and holds no reverse
  complement of a training window.
- `reverse_complement_documents` gives the other strand of token documents, re-tokenized,
  for scoring both strands (`genos eval --both-strands`): each document spells the same
  bases, so both strands are scored on the same number of bases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from genos_cli.data.bases import PieceTable
from genos_cli.data.documents import TokenDocuments
from genos_cli.data.windows import WindowBatch

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer

# A<->T, C<->G; N (an unknown base) pairs with an unknown base. Other bytes map to themselves.
_COMPLEMENT = bytes.maketrans(b"ACGTN", b"TGCAN")
_ACGT = np.frombuffer(b"ACGT", np.uint8)  # base code (A=0, C=1, G=2, T=3) -> byte


def reverse_complement(seq: bytes) -> bytes:
    """The other strand of uppercase A/C/G/T(/N) `seq`, read 5'->3': reversed, complemented."""
    return seq.translate(_COMPLEMENT)[::-1]


def with_reverse_complements(batch: WindowBatch) -> WindowBatch:
    """`batch` with each training window followed by its reverse complement (a training
    window too); validation windows stay as they are, alone."""
    train = ~batch.is_val  # (n,)
    if not train.any():
        return batch
    total = batch.bp
    rc = memoryview(reverse_complement(batch.data))  # window [s, e)'s RC is rc[total-e : total-s]
    data = memoryview(batch.data)
    ends = np.cumsum(batch.lengths)
    starts = ends - batch.lengths
    pieces: list[memoryview] = []
    for s, e, augment in zip(starts.tolist(), ends.tolist(), train.tolist(), strict=True):
        pieces.append(data[s:e])
        if augment:
            pieces.append(rc[total - e : total - s])
    copies = 1 + train.astype(np.int64)  # (n,) 2 for a training window, 1 for validation
    return WindowBatch(
        data=b"".join(pieces),
        lengths=np.repeat(batch.lengths, copies),
        is_val=np.repeat(batch.is_val, copies),
    )


def reverse_complement_documents(docs: TokenDocuments, tokenizer: DNATokenizer) -> TokenDocuments:
    """The other strand of every document of `docs`, tokenized afresh by `tokenizer`, in the
    same order: document d becomes the reverse complement of the bases d's tokens spell (the
    rule of `genos_cli.data.bases`: special ids, end-of-document ids and N spell none),
    followed by an end-of-document id when d ended with one.

    BPE pieces do not reverse-complement into pieces, so the other strand is re-encoded: it
    may have another number of tokens, but it spells exactly as many bases.
    """
    n_docs = docs.num_documents
    codes, token_of_base = PieceTable.of(tokenizer).decode(docs.tokens)  # (M,), (M,)
    doc_of_base = docs.doc_of_token[token_of_base]  # (M,)
    bases = np.bincount(doc_of_base, minlength=n_docs).astype(np.int64)  # (D,)
    ends = np.cumsum(bases)
    starts = ends - bases
    # Each document keeps its length, so base p of document d comes from its mirror image
    # within d: starts[d] + ends[d] - 1 - p.
    mirror = (starts + ends - 1)[doc_of_base] - np.arange(codes.size, dtype=np.int64)
    rc_bytes = _ACGT[3 - codes[mirror]].tobytes()  # complement: A=0 <-> T=3, C=1 <-> G=2
    ids, lengths = tokenizer.encode_packed(rc_bytes, bases, append_eod=False)
    lengths = lengths.astype(np.int64)
    tokens_per_doc = np.bincount(docs.doc_of_token, minlength=n_docs)  # (D,)
    last = np.maximum(np.cumsum(tokens_per_doc) - 1, 0)  # (D,) each document's last token
    ends_with_eod = (tokens_per_doc > 0) & (docs.tokens[last] == tokenizer.eod_id)
    ids = np.insert(ids.astype(np.int64), np.cumsum(lengths)[ends_with_eod], tokenizer.eod_id)
    lengths += ends_with_eod
    return TokenDocuments(
        tokens=ids,
        doc_of_token=np.repeat(np.arange(n_docs, dtype=np.int64), lengths),
        sources=[f"{source} (reverse complement)" for source in docs.sources],
    )
