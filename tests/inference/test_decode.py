"""Cached decoding equals the full forward pass, sampling is reproducible and never picks a
special id, and generation stops at the requested number of bases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genos_cli.checkpoint import LoadedCheckpoint, load
from genos_cli.errors import GenosError
from genos_cli.inference.generate import BaseTokens, Prompt, decode_tokens, generate
from genos_cli.inference.kv_cache import KVCache, forward_cached
from genos_cli.inference.sampling import Sampling, choose, warp


@pytest.fixture(scope="module", params=["bpe", "nucleotide"])
def ckpt(request: pytest.FixtureRequest, tiny_checkpoints: dict[str, Path]) -> LoadedCheckpoint:
    return load(tiny_checkpoints[request.param])


def _ids(ckpt: LoadedCheckpoint, text: str) -> list[int]:
    return [ckpt.tokenizer.eod_id, *ckpt.tokenizer.encode(text)]


@torch.inference_mode()
def test_cache_equals_full_forward(ckpt: LoadedCheckpoint, ecoli_sequence: str) -> None:
    """Prefill, a chunk read past cached positions (the masked path) and single tokens all
    give the logits of one full forward pass over the whole sequence."""
    model = ckpt.model
    rows = [_ids(ckpt, ecoli_sequence[s : s + 400])[:100] for s in (1000, 50_000, 900_000)]
    ids = torch.tensor(rows)  # (3, 100)
    full = model(ids).logits  # (3, 100, V)
    cache = KVCache.allocate(model.config, 3, 128)
    got = [forward_cached(model, cache, ids[:, :40], last=False)]  # prefill
    got.append(forward_cached(model, cache, ids[:, 40:70], last=False))  # chunk at offset 40
    got += [forward_cached(model, cache, ids[:, t : t + 1], last=False) for t in range(70, 100)]
    torch.testing.assert_close(torch.cat(got, dim=1), full, atol=2e-5, rtol=0)
    assert cache.length == 100
    # k/v are stored per query group, not repeated per head
    k, _ = cache.layers[0]
    assert k.shape == (3, model.config.num_query_groups, 128, model.config.head_dim)
    with pytest.raises(ValueError, match="do not fit"):
        forward_cached(model, cache, ids[:, :29])


@pytest.mark.slow
@torch.inference_mode()
def test_greedy_decoding_equals_argmax_of_full_forwards(
    ckpt: LoadedCheckpoint, ecoli_sequence: str
) -> None:
    """Past the context too: when the cache is full the newer half is re-read from position
    0, which a full forward over that half reproduces."""
    model = ckpt.model
    context = model.config.max_seq_length
    tokens = BaseTokens.of(ckpt.tokenizer, model.config.vocab_size, torch.device("cpu"))
    ids = _ids(ckpt, ecoli_sequence[2_000_000:2_000_200])
    out = decode_tokens(model, ids, 2, 1000, tokens, Sampling(temperature=0))
    assert torch.equal(out[0], out[1])  # greedy rows of one prompt agree
    window = list(ids)
    expected = []
    for _ in range(out.shape[1]):
        logits = model(torch.tensor([window])).logits[:, -1]
        token = int(warp(logits, tokens.allowed, Sampling(temperature=0)).argmax())
        expected.append(token)
        window.append(token)
        if len(window) > context:
            window = window[-(context // 2) :]
    assert out[0].tolist() == expected
    assert len(ids) + out.shape[1] > 1.5 * context  # the test went past the context


def test_special_ids_are_never_chosen() -> None:
    vocab = 16
    allowed = torch.zeros(vocab, dtype=torch.bool)
    allowed[7:11] = True  # A T C G of the nucleotide vocabulary
    logits = torch.zeros(64, vocab)
    logits[:, :7] = 50.0  # specials far more likely than any base
    g = torch.Generator().manual_seed(0)
    for sampling in (Sampling(temperature=0), Sampling(), Sampling(temperature=5.0),
                     Sampling(top_k=3), Sampling(top_p=0.5)):  # fmt: skip
        chosen = choose(logits, allowed, sampling, g)
        assert bool(allowed[chosen].all()), sampling


def test_top_k_and_top_p_cut_the_distribution() -> None:
    allowed = torch.ones(5, dtype=torch.bool)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]]))
    keep = lambda s: torch.isfinite(warp(logits, allowed, s))[0].tolist()  # noqa: E731
    assert keep(Sampling(top_k=2)) == [True, True, False, False, False]
    assert keep(Sampling(top_p=0.5)) == [True, False, False, False, False]
    assert keep(Sampling(top_p=0.85)) == [True, True, True, False, False]
    assert keep(Sampling(top_p=1.0)) == [True] * 5
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([choose(logits.expand(4000, -1), allowed, Sampling(), g)])
    freq = torch.bincount(draws.flatten(), minlength=5) / draws.numel()
    torch.testing.assert_close(freq, logits.exp()[0], atol=0.03, rtol=0)  # unbiased sampler


@pytest.mark.parametrize(
    ("options", "flag"),
    [({"temperature": -1.0}, "--temperature"), ({"temperature": float("nan")}, "--temperature"),
     ({"top_p": 0.0}, "--top-p"), ({"top_p": 1.5}, "--top-p"), ({"top_k": -2}, "--top-k")],
)  # fmt: skip
def test_bad_sampling_options(options: dict, flag: str) -> None:
    with pytest.raises(GenosError, match=flag):
        Sampling(**options)


def test_sampling_is_reproducible_and_stops_at_the_base_count(ckpt: LoadedCheckpoint) -> None:
    prompts = [Prompt("a", "ACGTTGCA"), Prompt("empty", "")]
    run = lambda seed: list(  # noqa: E731
        generate(ckpt.model, ckpt.tokenizer, prompts, num_bases=37, num_samples=3,
                 sampling=Sampling(temperature=1.3, top_k=50), seed=seed, batch_size=2)
    )  # fmt: skip
    first, again, other = run(7), run(7), run(8)
    assert [s.bases for s in first] == [s.bases for s in again]
    assert [s.bases for s in first] != [s.bases for s in other]
    assert [(s.prompt.name, s.index) for s in first] == [("a", i) for i in range(3)] + [
        ("empty", i) for i in range(3)
    ]
    tokens = BaseTokens.of(ckpt.tokenizer, ckpt.model.config.vocab_size, torch.device("cpu"))
    for s in first:
        assert len(s.bases) == 37 and set(s.bases) <= set("ACGT")
        spelled = [len(tokens.pieces[t]) for t in s.token_ids]
        assert min(spelled) >= 1  # no special id
        assert sum(spelled) >= 37 > sum(spelled[:-1])  # stopped at the first token past 37
        assert "".join(tokens.pieces[t] for t in s.token_ids).startswith(s.bases)
