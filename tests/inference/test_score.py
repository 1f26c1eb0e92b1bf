"""Sequence and variant scoring: the windows of `genos eval`, padding that changes nothing,
windows around variants, and the real-data property of a zero-shot variant score."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from genos_cli.checkpoint import load
from genos_cli.data.bases import bases_per_token
from genos_cli.data.documents import TokenDocuments
from genos_cli.eval.lm import evaluate_model
from genos_cli.inference.score import (
    Row,
    ScoreOptions,
    VariantOptions,
    flank_lengths,
    reverse_complement,
    score_rows,
    score_sequences,
    score_variants,
)
from tests.inference.conftest import TRAIN_END

CHROM = "K-12-MG1655"


def write_vcf(path: Path, records: list[tuple[int, str, str]], length: int = 4_641_652) -> Path:
    """A VCF of (1-based POS, REF, ALT) records on E. coli."""
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID={CHROM},length={length}>",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]  # fmt: skip
    lines += [f"{CHROM}\t{p}\tv{i}\t{r}\t{a}\t.\t.\t." for i, (p, r, a) in enumerate(records)]
    path.write_text("\n".join(lines) + "\n")
    return path


def random_substitutions(
    genome: str, n: int, seed: int, lo: int, hi: int
) -> list[tuple[int, str, str]]:
    """`n` SNVs at random positions of genome[lo:hi], each to a random other base."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = rng.randrange(lo, hi)
        out.append((p + 1, genome[p], rng.choice([b for b in "ACGT" if b != genome[p]])))
    return out


def read_llrs(tsv: Path) -> np.ndarray:
    rows = tsv.read_text().splitlines()
    assert rows[0].split("\t")[:6] == ["chrom", "pos", "id", "ref", "alt", "llr"]
    return np.array([float(r.split("\t")[5]) for r in rows[1:]])


def test_flanks_and_reverse_complement() -> None:
    assert flank_lengths(100, "A", "G") == (49, 50)
    assert flank_lengths(100, "ACGT", "A") == (48, 48)  # the longer allele sets the flanks
    assert flank_lengths(101, "A", "AGG") == (49, 49)
    assert reverse_complement("AACGTT") == "AACGTT" and reverse_complement("ACCG") == "CGGT"


def test_right_padding_changes_no_score(
    tiny_checkpoints: dict[str, Path], ecoli_sequence: str
) -> None:
    ckpt = load(tiny_checkpoints["bpe"])
    tok = ckpt.tokenizer
    rows = [Row(np.array([tok.eod_id, *tok.encode(ecoli_sequence[s : s + n])]), first)
            for s, n, first in ((0, 50, 0), (9_000, 300, 5), (70_000, 120, 0))]  # fmt: skip
    together, _ = score_rows(ckpt.model, rows, pad_id=tok.pad_id)
    alone = [score_rows(ckpt.model, [r], pad_id=tok.pad_id)[0][0] for r in rows]
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    assert np.ptp(together) > 10  # three different windows, three different sums


def test_long_sequences_score_as_genos_eval_does(
    tiny_checkpoints: dict[str, Path], ecoli_sequence: str, tmp_path: Path
) -> None:
    """A record past the context: the same windows and the same sum as `evaluate_model`,
    the function behind `genos eval`, over the same tokens; N splits a record in two."""
    kind = "nucleotide"
    ckpt = load(tiny_checkpoints[kind])
    tok = ckpt.tokenizer
    seq = ecoli_sequence[100_000:101_000]  # 1,000 tokens: 8 windows of the 128-token context
    fasta = tmp_path / "seqs.fa"
    fasta.write_text(f">long\n{seq}\n>with_n\n{seq[:300]}NNN{seq[300:500]}\n>empty\nNNNN\n")
    for stride in (64, None):
        opts = ScoreOptions(tiny_checkpoints[kind], batch_size=3, stride=stride)
        long, with_n, empty = list(score_sequences(opts, fasta))
        ids = np.array([tok.eod_id, *tok.encode(seq)], np.int64)
        docs = TokenDocuments(ids, np.zeros(ids.size, np.int64), ["long"])
        ref = evaluate_model(ckpt.model, docs, bases_per_token(tok), stride=stride)
        assert long.scored_bases == ref.bases == 1000 and long.length == 1000
        assert long.log_likelihood == pytest.approx(-ref.nll_nats, abs=1e-3)
        assert long.bits_per_base == pytest.approx(ref.bits_per_base, rel=1e-6)
    assert (with_n.length, with_n.scored_bases) == (503, 500)
    opts = ScoreOptions(tiny_checkpoints[kind])
    parts = [next(score_sequences(opts, _fasta(tmp_path, s))) for s in (seq[:300], seq[300:500])]
    assert with_n.log_likelihood == pytest.approx(sum(p.log_likelihood for p in parts), abs=1e-3)
    assert empty.scored_bases == 0 and np.isnan(empty.bits_per_base)


def _fasta(tmp_path: Path, seq: str) -> Path:
    path = tmp_path / f"{abs(hash(seq))}.fa"
    path.write_text(f">s\n{seq}\n")
    return path


@pytest.mark.slow
def test_trained_model_prefers_the_reference_allele(
    trained_checkpoint: Path,
    tiny_checkpoints: dict[str, Path],
    ecoli_reference: Path,
    ecoli_sequence: str,
    tmp_path: Path,
) -> None:
    """400 random substitutions in E. coli the model never trained on: the trained model
    scores the ALT window lower than the REF window on average (LLR = ln P(ALT) - ln P(REF)
    < 0, by more than 3 standard errors); random weights show no such preference."""
    variants = random_substitutions(ecoli_sequence, 400, seed=1, lo=TRAIN_END + 1000,
                                    hi=len(ecoli_sequence) - 1000)  # fmt: skip
    vcf = write_vcf(tmp_path / "snvs.vcf", variants)
    stats = {}
    for name, ckpt in (("trained", trained_checkpoint), ("random", tiny_checkpoints["nucleotide"])):
        out = tmp_path / f"{name}.tsv"
        score_variants(VariantOptions(ckpt, window=100, tsv=True), vcf, ecoli_reference, out)
        llr = read_llrs(out)
        assert llr.size == 400
        stats[name] = (llr.mean(), llr.std() / np.sqrt(llr.size), (llr < 0).mean())
    mean, sem, below = stats["trained"]
    assert mean < -3 * sem and below > 0.55, stats
    mean, sem, below = stats["random"]
    assert abs(mean) < 3 * sem and 0.4 < below < 0.6, stats
    assert stats["trained"][0] < stats["random"][0] - 0.05


@pytest.mark.slow
def test_one_by_one_equals_one_batch(
    trained_checkpoint: Path, ecoli_reference: Path, ecoli_sequence: str, tmp_path: Path
) -> None:
    """SNVs, deletions and insertions on both strands: each variant scored alone (its own
    VCF, batch size 1) gets the score it gets among all the others in one batch."""
    g = ecoli_sequence
    variants = random_substitutions(g, 12, seed=2, lo=TRAIN_END, hi=len(g) - 1000)
    for p in (3_700_001, 4_000_001, 4_400_001):
        variants += [(p, g[p - 1 : p + 3], g[p - 1]), (p + 10, g[p + 9], g[p + 9] + "GATC")]
    batched = tmp_path / "all.tsv"
    opts = VariantOptions(trained_checkpoint, window=90, tsv=True, both_strands=True)
    score_variants(opts, write_vcf(tmp_path / "all.vcf", variants), ecoli_reference, batched)
    together = read_llrs(batched)
    alone = []
    for i, v in enumerate(variants):
        out = tmp_path / f"{i}.tsv"
        one = VariantOptions(trained_checkpoint, window=90, tsv=True, both_strands=True,
                             batch_size=1)  # fmt: skip
        score_variants(one, write_vcf(tmp_path / f"{i}.vcf", [v]), ecoli_reference, out)
        alone.append(read_llrs(out)[0])
    assert together.size == len(variants) == 18
    # Equal up to float32 round-off: BLAS picks kernels by matrix shape, and a batch's
    # shapes (rows, padding, tokens per expert) are not a lone window's.
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-4)
    assert np.ptp(together) > 1.0  # indels and SNVs score very differently


def test_indel_windows_share_their_flanks(
    tiny_checkpoints: dict[str, Path], ecoli_reference: Path, ecoli_sequence: str, tmp_path: Path
) -> None:
    """A deletion's score is ln P(L + ALT + R) - ln P(L + REF + R) with L and R the flanks
    `flank_lengths` gives, scored as whole sequences."""
    g, p = ecoli_sequence, 1_234_567  # 1-based POS
    ref, alt = g[p - 1 : p + 5], g[p - 1]
    left_n, right_n = flank_lengths(60, ref, alt)
    left, right = g[p - 1 - left_n : p - 1], g[p - 1 + len(ref) : p - 1 + len(ref) + right_n]
    out = tmp_path / "del.tsv"
    opts = VariantOptions(tiny_checkpoints["bpe"], window=60, tsv=True)
    score_variants(opts, write_vcf(tmp_path / "del.vcf", [(p, ref, alt)]), ecoli_reference, out)
    fasta = tmp_path / "windows.fa"
    fasta.write_text(f">ref\n{left + ref + right}\n>alt\n{left + alt + right}\n")
    r, a = score_sequences(ScoreOptions(tiny_checkpoints["bpe"]), fasta)
    assert len(left + ref + right) == 60
    assert read_llrs(out)[0] == pytest.approx(a.log_likelihood - r.log_likelihood, abs=1e-4)


def test_loaded_for_inference_in_fp32_on_cpu(tiny_checkpoints: dict[str, Path]) -> None:
    from genos_cli.inference.loading import load_for_inference

    ckpt = load_for_inference(tiny_checkpoints["bpe"], "cpu")
    assert not ckpt.model.training
    assert {p.dtype for p in ckpt.model.parameters()} == {torch.float32}
