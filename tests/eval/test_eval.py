"""Evaluation maths: window coverage, the Markov baseline against a hand-written reference,
token-to-base decoding, bits per base of a model, expert-usage statistics, probe features."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from genos_cli.data.bases import PieceTable, base_codes, bases_per_token
from genos_cli.data.documents import TokenDocuments
from genos_cli.data.fasta import read_acgt_runs
from genos_cli.data.score_windows import windows
from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.errors import GenosError
from genos_cli.eval.lm import ExpertUsage, evaluate_model, markov_bits
from genos_cli.eval.markov import MarkovModel, positions_in_documents
from genos_cli.eval.probe import from_tsv, kmer_frequencies
from genos_cli.model import build_model
from tests.tiny import tiny_model_config


@pytest.fixture(scope="module")
def ecoli_runs(ecoli_fasta: Path) -> list[str]:
    runs = read_acgt_runs([ecoli_fasta], max_run_bp=300)
    return [next(runs).decode() for _ in range(40)]


@pytest.mark.parametrize(("n", "context", "stride"), [(1000, 128, 128), (1000, 128, 32),
                                                      (129, 128, 128), (5, 128, 64),
                                                      (777, 100, 99)])  # fmt: skip
def test_windows_score_every_token_but_the_first_once(n: int, context: int, stride: int) -> None:
    scored = Counter()
    for start, length, first in windows(n, context, stride):
        assert 1 <= length <= context
        for j in range(first, length):
            label = start + 1 + j
            scored[label] += 1
            if start > 0:  # a later window gives every scored token its overlap as context
                assert j >= context - stride
    assert sorted(scored) == list(range(1, n)) and set(scored.values()) == {1}


def _reference_probabilities(docs: list[str], test: str, order: int, beta: float) -> list[float]:
    """P(x_i | context) by the formula in eval/markov.py, with dictionaries."""
    counts: dict[str, Counter] = {}
    for doc in docs:
        for i, base in enumerate(doc):
            for j in range(0, min(order, i) + 1):
                counts.setdefault(doc[i - j : i], Counter())[base] += 1
    out = []
    for i, base in enumerate(test):
        p = 0.25
        for j in range(0, min(order, i) + 1):
            c = counts.get(test[i - j : i], Counter())
            p = (c[base] + beta * p) / (sum(c.values()) + beta)
        out.append(p)
    return out


def _codes_and_positions(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    codes = np.concatenate([base_codes(d.encode()) for d in docs])
    doc_of_base = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    return codes, positions_in_documents(doc_of_base)


@pytest.mark.parametrize(("order", "beta"), [(0, 1.0), (2, 1.0), (3, 128.0), (5, 4.0)])
def test_markov_matches_reference(ecoli_runs: list[str], order: int, beta: float) -> None:
    train, test = ecoli_runs[:30], ecoli_runs[30:32]
    model = MarkovModel.empty(order, beta)
    model.update(*_codes_and_positions(train))
    got = model.probabilities(*_codes_and_positions(test))
    want = [p for doc in test for p in _reference_probabilities(train, doc, order, beta)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert model.bases_seen == sum(map(len, train))


def test_markov_beats_uniform_on_held_out_dna(ecoli_runs: list[str]) -> None:
    model = MarkovModel.empty(4)
    model.update(*_codes_and_positions(ecoli_runs[:36]))
    codes, pos = _codes_and_positions(ecoli_runs[36:])
    assert model.nll_bits(codes, pos) / codes.size < 1.99


@pytest.mark.parametrize("kind", ["bpe", "nucleotide"])
def test_piece_table_decodes_like_the_tokenizer(kind: str, ecoli_runs: list[str]) -> None:
    tok = load_tokenizer(kind)
    ids = [i for run in ecoli_runs[:5] for i in [*tok.encode(run), tok.eod_id]]
    codes, token_of_base = PieceTable.of(tok).decode(np.array(ids))
    assert "".join("ACGT"[c] for c in codes) == "".join(ecoli_runs[:5])
    assert token_of_base.size == codes.size and np.all(np.diff(token_of_base) >= 0)


def _tiny_model(vocab: int, context: int = 64) -> torch.nn.Module:
    cfg = tiny_model_config(vocab_size=vocab, max_seq_length=context)
    torch.manual_seed(0)
    return build_model(cfg, compile=False).eval()


def _documents(tok, runs: list[str]) -> TokenDocuments:  # type: ignore[no-untyped-def]
    ids, doc = [], []
    for d, run in enumerate(runs):
        encoded = [*tok.encode(run), tok.eod_id]
        ids += encoded
        doc += [d] * len(encoded)
    return TokenDocuments(np.array(ids), np.array(doc), ["test"])


def test_bits_per_base_of_a_single_window_by_hand(ecoli_runs: list[str]) -> None:
    tok = load_tokenizer("nucleotide")
    model = _tiny_model(tok.vocab_size, context=512)
    docs = _documents(tok, ecoli_runs[:1])  # 301 tokens: one window
    result = evaluate_model(model, docs, bases_per_token(tok))
    ids = torch.from_numpy(docs.tokens)[None]
    with torch.no_grad():
        logits = model(ids[:, :-1]).logits
    nll = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="none")
    assert result.tokens == 300 and result.bases == 299  # the eod spells no base
    assert result.loss == pytest.approx(nll.mean().item(), rel=1e-6)  # the loss counts it
    base_nll = nll[:-1].sum().item()  # bits per base does not: it spells no base
    assert result.bits_per_base == pytest.approx(base_nll / math.log(2) / 299, rel=1e-6)
    assert result.expert_counts.sum() == 2 * 2 * 300  # layers x top-2 x tokens


def test_stride_changes_context_not_what_is_scored(ecoli_runs: list[str]) -> None:
    tok = load_tokenizer("bpe")
    model = _tiny_model(tok.vocab_size)
    docs = _documents(tok, ecoli_runs[:8])
    table = bases_per_token(tok)
    full = evaluate_model(model, docs, table, batch_size=3)
    half = evaluate_model(model, docs, table, batch_size=3, stride=32)
    assert (full.tokens, full.bases) == (half.tokens, half.bases) == (docs.tokens.size - 1,
                                                                     full.bases)  # fmt: skip
    assert half.tokens_forwarded > 1.8 * full.tokens_forwarded
    assert half.windows > full.windows
    # Markov and model score the very same bases.
    markov = MarkovModel.empty(3)
    _, bases = markov_bits(markov, docs, PieceTable.of(tok))
    assert bases == full.bases


def test_expert_usage_statistics() -> None:
    usage = ExpertUsage.of(np.array([[10, 10, 10, 10], [40, 0, 0, 0]], float))
    assert usage.entropy_bits.tolist() == pytest.approx([2.0, 0.0])
    assert usage.max_over_mean.tolist() == pytest.approx([1.0, 4.0])
    assert usage.shares[1].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_kmer_frequencies_by_hand() -> None:
    freqs = kmer_frequencies([b"ACGTA", b"A"], 2)
    index = {a + b: 4 * "ACGT".index(a) + "ACGT".index(b) for a in "ACGT" for b in "ACGT"}
    assert freqs.shape == (2, 16)
    assert {k for k, i in index.items() if freqs[0, i] > 0} == {"AC", "CG", "GT", "TA"}
    assert freqs[0].sum() == pytest.approx(1.0) and freqs[1].sum() == 0.0


def test_tsv_reading_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "train.tsv"
    good.write_text("sequence\tlabel\nACGTNACGT\tup\nacgtac\tdown\n\nTTTT\tup\n")
    data = from_tsv(good)
    assert data.classes == ["down", "up"] and data.labels.tolist() == [1, 0, 1]
    assert data.sequences[0] == b"ACGTACGT" and data.dropped_bases == 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("ACGT\tup\nACGTACGT\n")
    with pytest.raises(GenosError, match=r"bad.tsv, line 2: expected two tab-separated"):
        from_tsv(bad)
    other = tmp_path / "test.tsv"
    other.write_text("ACGT\tsideways\n")
    with pytest.raises(GenosError, match="label 'sideways', not among the training labels"):
        from_tsv(other, data.classes)


@pytest.mark.parametrize("nucleotide", [False, True])
def test_both_strands_evaluation(tmp_path: Path, ecoli_fasta: Path, nucleotide: bool) -> None:
    """`--both-strands` on real E. coli: the forward strand is the plain evaluation; the
    reverse complement is scored on as many bases but for the stream's unscored first token;
    model and Markov totals are sums over the strands, each on the model's bases."""
    from genos_cli.eval.run import LMOptions, evaluate_lm
    from tests.tiny import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "step_00000007", nucleotide=nucleotide)
    pieces = list(itertools.islice(read_acgt_runs([ecoli_fasta], max_run_bp=12_000), 20))
    held, fit = tmp_path / "held.fa", tmp_path / "fit.fa"
    held.write_bytes(b">held out\n" + pieces[-1] + b"\n")
    fit.write_bytes(b">fit\n" + b"".join(pieces[:17]) + b"\n")
    opts = {"checkpoint": ckpt, "data": [held], "markov_data": [fit], "device": "cpu"}
    forward = evaluate_lm(LMOptions(**opts))
    both = evaluate_lm(LMOptions(**opts, both_strands=True))
    assert (forward["strands"], both["strands"]) == ("forward", "both")
    fwd, rc = both["per_strand"]["forward"], both["per_strand"]["reverse_complement"]
    assert fwd["bits_per_base"] == pytest.approx(forward["bits_per_base"], rel=1e-9)
    assert fwd["bases"] == forward["bases"] and abs(rc["bases"] - fwd["bases"]) <= 16
    assert both["bases"] == fwd["bases"] + rc["bases"]
    bits = fwd["bits_per_base"] * fwd["bases"] + rc["bits_per_base"] * rc["bases"]
    assert both["bits_per_base"] == pytest.approx(bits / both["bases"], rel=1e-9)
    markov = both["baselines"][0]["per_strand"]
    assert markov["forward"] == pytest.approx(forward["baselines"][0]["bits_per_base"], rel=1e-9)
    markov_bits = markov["forward"] * fwd["bases"] + markov["reverse_complement"] * rc["bases"]
    total = both["baselines"][0]["bits_per_base"]
    assert total == pytest.approx(markov_bits / both["bases"], rel=1e-9)
    assert 1.85 < markov["reverse_complement"] < 2.0  # a real strand of real DNA
