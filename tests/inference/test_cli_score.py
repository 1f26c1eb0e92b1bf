"""`genos score` end to end: TSV/JSON for FASTA, the annotated VCF (plain, bgzipped, BCF)
for variants, the skip policy and its counts, and one-sentence errors with nothing written."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_user_error, genos
from tests.inference.test_score import CHROM, write_vcf

pysam = pytest.importorskip("pysam")


def test_fasta_tsv_and_json(
    tiny_checkpoints: dict[str, Path], ecoli_sequence: str, tmp_path: Path
) -> None:
    fasta = tmp_path / "s.fa.gz"
    with gzip.open(fasta, "wt") as fh:
        fh.write(f">a first\n{ecoli_sequence[:700]}\n>b\n{ecoli_sequence[5000:5100].lower()}\n")
    result = genos("score", tiny_checkpoints["bpe"], "--fasta", fasta)
    assert result.exit_code == 0, result.output
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header == ["id", "length", "scored_bases", "tokens", "log_likelihood", "bits_per_base"]
    assert [r[0] for r in rows] == ["a", "b"] and [r[1] for r in rows] == ["700", "100"]
    assert all(float(r[4]) < 0 and 1.0 < float(r[5]) < 6.0 for r in rows)
    out = tmp_path / "s.jsonl"
    result = genos("score", tiny_checkpoints["bpe"], "--fasta", fasta, "--json", "-o", out)
    assert result.exit_code == 0, result.output
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [o["id"] for o in objs] == ["a", "b"]
    assert objs[0]["bits_per_base"] == pytest.approx(float(rows[0][5]), abs=1e-5)


def test_vcf_annotated_and_skips(
    tiny_checkpoints: dict[str, Path], ecoli_reference: Path, ecoli_sequence: str, tmp_path: Path
) -> None:
    g = ecoli_sequence
    records = [
        (1001, g[1000], "A" if g[1000] != "A" else "C"),  # SNV
        (2001, g[2000:2004], g[2000]),  # deletion
        (3001, g[3000], g[3000] + "TTG"),  # insertion
        (4001, "A" if g[4000] != "A" else "C", "G"),  # REF mismatch
        (5001, g[5000], "<DEL>"),  # symbolic: not scored
        (4_641_600, "A", "G"),
    ]  # past the end of the 4,641,652-bp genome? no: inside
    vcf = write_vcf(tmp_path / "in.vcf", records)
    text = vcf.read_text().replace(f"{CHROM}\t4641600", f"{CHROM}\t9641600")  # past the end
    text += f"{CHROM}\t6001\tnoalt\t{g[6000]}\t.\t.\t.\t.\n"  # a reference call, no ALT
    vcf.write_text(text + "plasmid\t10\tp1\tA\tG\t.\tPASS\tDP=3\n")  # undeclared contig/INFO
    ckpt = tiny_checkpoints["bpe"]
    refused = genos("score", ckpt, "--vcf", vcf, "--reference", ecoli_reference, "--window", "64")
    assert_user_error(refused, "line 7", "REF A does not match", "--on-mismatch skip")
    out = tmp_path / "out.vcf.gz"
    result = genos("score", ckpt, "--vcf", vcf, "--reference", ecoli_reference, "--window", "64",
                   "--on-mismatch", "skip", "--both-strands", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 records whose REF does not match" in result.stderr
    assert (
        "1 records past the end" in result.stderr and "1 records on contigs not in" in result.stderr
    )
    assert "scored 3 ALT alleles of 3/8 records" in result.stderr
    assert "1 records without an ALT allele" in result.stderr
    with pysam.VariantFile(str(out)) as annotated:  # bgzipped, read back through htslib
        info = annotated.header.info["GENOS_LLR"]
        assert (info.number, info.type) == ("A", "Float") and "both strands" in info.description
        recs = list(annotated)
    assert len(recs) == 8  # every record is kept; only scored ones carry GENOS_LLR
    scored = {r.id: r.info["GENOS_LLR"] for r in recs if "GENOS_LLR" in r.info}
    assert set(scored) == {"v0", "v1", "v2"}
    assert recs[-1].info["DP"] == "3"  # the record's own fields survive
    tsv = genos("score", ckpt, "--vcf", vcf, "--reference", ecoli_reference, "--window", "64",
                "--on-mismatch", "skip", "--both-strands", "--tsv")  # fmt: skip
    rows = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert rows[0] == ["chrom", "pos", "id", "ref", "alt", "llr", "llr_forward", "llr_reverse"]
    for row in rows[1:]:
        llr, fwd, rev = map(float, row[5:])
        assert llr == pytest.approx((fwd + rev) / 2, abs=1e-5)
        assert scored[row[2]][0] == pytest.approx(llr, abs=1e-5)
    bgz_in = tmp_path / "in.vcf.gz"
    pysam.tabix_compress(str(vcf), str(bgz_in))
    bcf = tmp_path / "out.bcf"
    again = genos("score", ckpt, "--vcf", bgz_in, "--reference", ecoli_reference, "--window",
                  "64", "--on-mismatch", "skip", "--both-strands", "-o", bcf)  # fmt: skip
    assert again.exit_code == 0, again.output
    with pysam.VariantFile(str(bcf)) as fh:  # BCF holds float32, the VCF text 6 digits
        from_bcf = {r.id: r.info["GENOS_LLR"][0] for r in fh if "GENOS_LLR" in r.info}
    assert from_bcf == pytest.approx({k: v[0] for k, v in scored.items()}, abs=1e-4)


@pytest.mark.slow
def test_bad_input(
    tiny_checkpoints: dict[str, Path],
    ecoli_reference: Path,
    ecoli_fasta: Path,
    ecoli_sequence: str,
    tmp_path: Path,
) -> None:
    ckpt = tiny_checkpoints["nucleotide"]
    out = tmp_path / "out.vcf"
    ref = ecoli_sequence[1000]
    good = write_vcf(tmp_path / "good.vcf", [(1001, ref, "G" if ref != "G" else "A")])

    def score(*args: str | Path) -> str:
        return assert_user_error(genos("score", ckpt, *args, "-o", out))

    assert "does not exist" in score("--vcf", tmp_path / "no.vcf", "--reference", ecoli_reference)
    assert "--reference" in score("--vcf", good)
    assert "either --fasta" in score()
    gzipped = score("--vcf", good, "--reference", ecoli_fasta)
    assert "compressed with gzip, not bgzip" in gzipped and "gunzip -k" in gzipped
    lines = good.read_text().splitlines()
    bad_pos = tmp_path / "bad_pos.vcf"
    bad_pos.write_text("\n".join([*lines, f"{CHROM}\tabc\t.\tA\tG\t.\t.\t."]) + "\n")
    msg = score("--vcf", bad_pos, "--reference", ecoli_reference, "--on-mismatch", "skip")
    assert "line 5" in msg and "POS 'abc'" in msg
    short = tmp_path / "short.vcf"
    short.write_text("\n".join([*lines, f"{CHROM}\t10\t.\tA"]) + "\n")
    assert "4 tab-separated columns" in score("--vcf", short, "--reference", ecoli_reference)
    unknown = write_vcf(tmp_path / "unknown.vcf", [(1001, "A", "G")])
    unknown.write_text(unknown.read_text().replace(f"{CHROM}\t1001", "chr9\t1001"))
    assert "contig 'chr9' is not in the reference" in score(
        "--vcf", unknown, "--reference", ecoli_reference
    )
    past = write_vcf(tmp_path / "past.vcf", [(9_999_999, "A", "G")])
    assert "past the end of K-12-MG1655" in score("--vcf", past, "--reference", ecoli_reference)
    assert "--window must be in [1, 127]" in score(
        "--vcf", good, "--reference", ecoli_reference, "--window", "128"
    )
    assert "--on-mismatch" in score(
        "--vcf", good, "--reference", ecoli_reference, "--on-mismatch", "ignore"
    )
    not_vcf = tmp_path / "x.vcf"
    not_vcf.write_text("hello\n")
    assert "not a VCF" in score("--vcf", not_vcf, "--reference", ecoli_reference)
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    assert "empty" in score("--fasta", empty)
    assert "does not exist" in score("--fasta", tmp_path / "none.fa")
    assert "go with --vcf" in score("--fasta", empty, "--both-strands")
    assert "does not exist" in assert_user_error(
        genos("score", tmp_path / "nockpt", "--fasta", empty)
    )
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_without_pysam_says_how_to_install(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pysam", None)  # `import pysam` fails as if absent
    vcf = write_vcf(tmp_path / "in.vcf", [(10, "A", "G")])
    out = tmp_path / "out.vcf"
    result = genos("score", tiny_checkpoints["bpe"], "--vcf", vcf, "--reference", vcf, "-o", out)
    assert_user_error(result, "genos score --vcf needs the pysam package", "genos[vcf]")
    assert not out.exists()
