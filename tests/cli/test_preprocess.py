"""`genos preprocess` end to end on real genomes: what it writes, and how it refuses."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genos_cli.data.indexed import IndexedDataset
from genos_cli.data.tokenizers import default_tokenizer_path
from tests.helpers import assert_user_error, genos

NUCLEOTIDE_IDS = {"A": 7, "T": 8, "C": 9, "G": 10}
EOD = 3


def files_in(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def ecoli_bpe(tmp_path_factory: pytest.TempPathFactory, ecoli_fasta: Path) -> Path:
    out = tmp_path_factory.mktemp("bpe")
    result = genos(
        "preprocess", ecoli_fasta, "-o", out / "ecoli", "--write-text", out / "text",
        "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_split_and_manifest(ecoli_bpe: Path) -> None:
    manifest = json.loads((ecoli_bpe / "ecoli.json").read_text())
    train, val = manifest["outputs"]["train"], manifest["outputs"]["val"]
    # The default document length, auto: two 512-token contexts at the BPE's bp per token.
    assert manifest["window"]["length"] == 2944
    assert train["sequences"] + val["sequences"] == 4_639_675 // 2944
    assert 0.01 < val["sequences"] / (train["sequences"] + val["sequences"]) < 0.03
    assert manifest["tokenizer"]["kind"] == "bpe"
    assert manifest["stats"]["bases"] == 4_639_675
    assert manifest["stats"]["bp_per_token"] > 2.0
    # The text files hold the genome's windows in order: rejoined, they are the genome.
    with gzip.open(manifest["inputs"][0], "rt") as fh:
        genome = "".join(line.strip() for line in fh if not line.startswith(">"))
    windows = {genome[i : i + 2944] for i in range(0, len(genome) - 2943, 2944)}
    written = (ecoli_bpe / "text/train.txt").read_text().split()
    written += (ecoli_bpe / "text/val.txt").read_text().split()
    assert set(written) == windows


def test_nucleotide_ids_and_worker_count_do_not_change_output(
    tmp_path: Path, ecoli_fasta: Path
) -> None:
    for workers in ("1", "2"):
        result = genos(
            "preprocess", ecoli_fasta, "-o", tmp_path / f"w{workers}/ecoli",
            "--nucleotide-tokenizer", "--workers", workers, "--val-ratio", "0",
            "--write-text", tmp_path / f"w{workers}/text",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    for ext in ("bin", "idx"):
        one = (tmp_path / f"w1/ecoli_text_document.{ext}").read_bytes()
        assert one == (tmp_path / f"w2/ecoli_text_document.{ext}").read_bytes()
    ds = IndexedDataset(tmp_path / "w1/ecoli_text_document")
    lines = (tmp_path / "w1/text/train.txt").read_text().split()
    for i in (0, 1, len(lines) // 2, len(lines) - 1):
        assert ds[i].tolist() == [NUCLEOTIDE_IDS[b] for b in lines[i]] + [EOD]


def test_bpe_workers_give_identical_bytes(tmp_path: Path, genomes_dir: Path) -> None:
    saureus = genomes_dir / "saureus_nctc8325.fasta.gz"
    for workers in ("1", "2"):
        result = genos(
            "preprocess", saureus, "-o", tmp_path / f"w{workers}/sa", "--workers", workers
        )
        assert result.exit_code == 0, result.output
    for name in ("sa_train_text_document", "sa_val_text_document"):
        for ext in ("bin", "idx"):
            a = (tmp_path / f"w1/{name}.{ext}").read_bytes()
            assert a == (tmp_path / f"w2/{name}.{ext}").read_bytes()


def test_holdout_file_goes_to_validation(tmp_path: Path, genomes_dir: Path) -> None:
    ecoli = genomes_dir / "ecoli_k12_mg1655.fasta.gz"
    saureus = genomes_dir / "saureus_nctc8325.fasta.gz"
    result = genos(
        "preprocess", ecoli, "--holdout", saureus, "-o", tmp_path / "ho",
        "--val-ratio", "0", "--nucleotide-tokenizer", "--seq-length", "512",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(IndexedDataset(tmp_path / "ho_train_text_document")) == 4_639_675 // 512
    # S. aureus has one N (at 2,350,011), so one window fewer than 2,821,361 // 512.
    assert len(IndexedDataset(tmp_path / "ho_val_text_document")) == 5509


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, ecoli_fasta: Path) -> None:
    args = ["preprocess", ecoli_fasta, "-o", tmp_path / "x", "--nucleotide-tokenizer"]
    assert genos(*args).exit_code == 0
    before = {p: (tmp_path / p).read_bytes() for p in files_in(tmp_path)}
    assert_user_error(genos(*args, "--seq-length", "256"), "already exists", "--overwrite")
    assert {p: (tmp_path / p).read_bytes() for p in files_in(tmp_path)} == before
    assert genos(*args, "--seq-length", "256", "--overwrite").exit_code == 0
    assert len(IndexedDataset(tmp_path / "x_train_text_document")[0]) == 257


def test_failure_midway_leaves_nothing(tmp_path: Path, ecoli_fasta: Path) -> None:
    """A corrupt second file fails the run after the first was processed: no output at all."""
    bad = tmp_path / "in/truncated.fa.gz"
    bad.parent.mkdir()
    bad.write_bytes(ecoli_fasta.read_bytes()[:300_000])
    out = tmp_path / "out"
    result = genos("preprocess", ecoli_fasta, bad, "-o", out / "x", "--write-text", out / "txt")
    assert_user_error(result, "truncated or corrupt gzip")
    assert files_in(out) == []


BAD_INPUTS = {
    "missing.fa": (None, "does not exist"),
    "empty.fa": (b"", "is empty"),
    "protein.fa": (b">sp|P69905\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF\n", "line 2"),
    "binary.fa": (bytes(range(256)) * 8, "binary"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_one_sentence_no_output(tmp_path: Path, name: str) -> None:
    content, needle = BAD_INPUTS[name]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    message = assert_user_error(genos("preprocess", path, "-o", out / "x"), needle, name)
    assert message.count("\n") == 1
    assert not out.exists() or files_in(out) == []


def test_bad_tokenizer_model(tmp_path: Path, ecoli_fasta: Path) -> None:
    out = tmp_path / "out"
    assert_user_error(
        genos(
            "preprocess", ecoli_fasta, "-o", out / "x", "--tokenizer-model", tmp_path / "no.model"
        ),
        "does not exist",
    )
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"this is not a sentencepiece model")
    assert_user_error(
        genos("preprocess", ecoli_fasta, "-o", out / "x", "--tokenizer-model", junk),
        "not a SentencePiece model",
    )
    assert not out.exists() or files_in(out) == []


def test_option_errors(tmp_path: Path, ecoli_fasta: Path) -> None:
    out = tmp_path / "x"
    # The schema checks the values; the message names the option, not the setting.
    assert_user_error(
        genos("preprocess", ecoli_fasta, "-o", out, "--val-ratio", "1.5"),
        "--val-ratio must be less than 1, got 1.5",
    )
    assert_user_error(
        genos("preprocess", ecoli_fasta, "-o", out, "--min-length", "600", "--seq-length", "512"),
        "--min-length (600) must not exceed --seq-length (512)",
    )
    assert_user_error(
        genos("preprocess", ecoli_fasta, "-o", out, "--seq-length", "0", "--stride", "0"),
        "--seq-length must be a positive number of bp or 'auto', got 0; "
        "--stride must be at least 1, got 0",
    )
    assert_user_error(
        genos("preprocess", ecoli_fasta, "-o", out, "--seq-length", "long"),
        "--seq-length must be a positive number of bp or 'auto', got 'long'",
    )
    assert_user_error(
        genos("preprocess", ecoli_fasta, "-o", out, "--nucleotide-tokenizer", "--tokenizer-model",
              default_tokenizer_path()),
        "not both",
    )  # fmt: skip


def _peak_rss_mb(*args: str | Path) -> float:
    """Peak RSS of a `genos` subprocess, in MB."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "genos_cli", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_memory_is_bounded_by_blocks_not_input(tmp_path: Path, genomes_dir: Path) -> None:
    """67 Mbp needs no more memory than the 34 Mbp genome inside it: the pipeline streams,
    its working set is a few blocks whatever the input size."""
    one = _peak_rss_mb(
        "preprocess", genomes_dir / "ddiscoideum_ax4.fasta.gz", "-o", tmp_path / "a",
        "--nucleotide-tokenizer",
    )  # fmt: skip
    everything = _peak_rss_mb(
        "preprocess", genomes_dir, "-o", tmp_path / "b", "--nucleotide-tokenizer"
    )  # fmt: skip
    assert everything - one < 15, (one, everything)
    assert everything < 300


def test_version_and_module_entry_point() -> None:
    from genos_cli import __version__

    out = subprocess.run(
        [sys.executable, "-m", "genos_cli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"genos {__version__}"


def test_seq_length_tokens(tmp_path: Path, ecoli_fasta: Path) -> None:
    """Stride and length options reach the output (1 kbp windows every 500 bp, no eod)."""
    result = genos(
        "preprocess", ecoli_fasta, "-o", tmp_path / "s", "--nucleotide-tokenizer",
        "--seq-length", "1000", "--stride", "500", "--val-ratio", "0", "--no-append-eod",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ds = IndexedDataset(tmp_path / "s_text_document")
    assert len(ds) == (4_639_675 - 1000) // 500 + 1
    assert np.array_equal(ds[0][500:], ds[1][:500])
    assert set(np.unique(ds[0]).tolist()) <= {7, 8, 9, 10}


def test_seq_length_auto_fills_the_context(tmp_path: Path) -> None:
    """--seq-length auto: documents of 2 contexts' worth of bases, for the context of
    --config (here 128 tokens, one base each) or of the default preset (512)."""
    from genos_cli.data.prepared import load_data_manifest

    run = tmp_path / "run.yaml"
    run.write_text("base: small\nmodel:\n  max_seq_length: 128\n")
    common = ["--nucleotide-tokenizer", "--val-ratio", "0", "--seq-length", "auto"]
    result = genos("preprocess", "-o", tmp_path / "ctx128", "--config", run, *common)
    assert result.exit_code == 0, result.output
    summary = " ".join(result.stdout.replace("│", " ").split())  # a table cell may wrap
    assert "256 bp (auto: 2 x 128 tokens x 1.000" in summary
    assert load_data_manifest(tmp_path / "ctx128")["window"]["length"] == 256
    ds = IndexedDataset(tmp_path / "ctx128_text_document")
    assert ds.sequence_lengths[0] == 256 + 1  # and its end-of-document id
    result = genos("preprocess", "-o", tmp_path / "default", *common)
    assert result.exit_code == 0, result.output
    assert load_data_manifest(tmp_path / "default")["window"]["length"] == 1024


def test_input_without_one_acgt_base_is_refused_naming_it(tmp_path: Path) -> None:
    """Only N (an assembly gap, say): read fine, but nothing to train on."""
    path = tmp_path / "gap.fa"
    path.write_text(">gap\n" + "N" * 200 + "\n")
    result = genos("preprocess", path, "-o", tmp_path / "out", "--nucleotide-tokenizer")
    assert_user_error(result, str(path), "no sequence of at least")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gap.fa"]
