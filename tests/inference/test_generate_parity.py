"""Greedy `genos generate` equals, token for token, what transformers' `generate()` produces
from the `genos export hf` of the same checkpoint, under the same special-id masking."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genos_cli.checkpoint import load
from genos_cli.inference.generate import BaseTokens, Prompt, generate
from genos_cli.inference.sampling import Sampling
from genos_cli.interop.hf_export import export_hf

pytest.importorskip("transformers")


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "num_bases"), [("bpe", 200), ("nucleotide", 70)])
def test_greedy_equals_transformers_generate(
    kind: str,
    num_bases: int,
    tiny_checkpoints: dict[str, Path],
    ecoli_sequence: str,
    tmp_path: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    export_hf(tiny_checkpoints[kind], tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ckpt = load(tiny_checkpoints[kind])
    tok = ckpt.tokenizer
    tokens = BaseTokens.of(tok, ckpt.config.model.vocab_size, torch.device("cpu"))
    suppress = torch.nonzero(~tokens.allowed).flatten().tolist()
    assert tok.eod_id in suppress and tok.pad_id in suppress
    prompts = [Prompt("empty", "")] + [
        Prompt(f"ecoli_{s}", ecoli_sequence[s : s + 50]) for s in (10_000, 2_500_000)
    ]
    samples = list(generate(ckpt.model, tok, prompts, num_bases=num_bases, num_samples=2,
                            sampling=Sampling(temperature=0)))  # fmt: skip
    compared = 0
    for prompt in prompts:
        ours = [s.token_ids for s in samples if s.prompt == prompt]
        assert ours[0] == ours[1]
        ids = torch.tensor([[tok.eod_id, *tok.encode(prompt.bases)]])
        new = len(ours[0])
        assert ids.shape[1] + new <= ckpt.config.model.max_seq_length  # within the context
        with torch.inference_mode():
            out = hf.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                min_new_tokens=new, suppress_tokens=suppress, pad_token_id=tok.pad_id,
            )  # fmt: skip
        theirs = out[0, ids.shape[1] :].tolist()
        assert theirs == ours[0], prompt.name
        compared += new
    assert compared >= 60
