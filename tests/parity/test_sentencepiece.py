"""genos's BPE tokenizer against SentencePiece itself, on real DNA from all six genomes: the
same ids for every sequence, one at a time and packed."""

from __future__ import annotations

import numpy as np
import sentencepiece as spm

from genos_cli.data.tokenizers import default_tokenizer_path, load_tokenizer


def test_bpe_matches_sentencepiece_itself(real_runs: list[str]) -> None:
    tok = load_tokenizer()
    sp = spm.SentencePieceProcessor(model_file=str(default_tokenizer_path()))
    for seq in real_runs:
        assert tok.encode(seq) == sp.encode(seq)
    assert tok.encode_packed(
        "".join(real_runs).encode(), np.array([len(s) for s in real_runs]), append_eod=False
    )[0].tolist() == [i for seq in sp.encode(real_runs) for i in seq]
