"""`genos preprocess --hf-dataset`: a streamed Hugging Face dataset feeds the same pipeline as
FASTA. The Hub cannot be reached here, so the dataset is a local one with the schema of
InstaDeepAI/multi_species_genomes (sequence, description, start_pos, end_pos, fasta_url),
made from the real E. coli genome and read through the same `datasets.load_dataset` call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from genos_cli.data.fasta import ReadStats, SequenceReader
from tests.helpers import assert_user_error, genos

pytest.importorskip("datasets")
ROW_BP = 6000  # the dataset's 6kbp configuration


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def genome_rows(fasta: Path) -> list[dict[str, object]]:
    """The genome cut into 6-kbp rows; some soft-masked (lowercase) or with ambiguity codes,
    so the normaliser is exercised as on real data."""
    blocks = b"".join(SequenceReader(fasta, ReadStats()).blocks()).decode()
    genome = blocks.replace("|", "")
    rows = []
    for i, start in enumerate(range(0, len(genome), ROW_BP)):
        seq = genome[start : start + ROW_BP]
        if i % 7 == 3:
            seq = seq.lower()
        if i % 11 == 5:
            seq = seq[:1000] + "NNNNRYKM" + seq[1008:]
        rows.append({"sequence": seq, "description": f"NC_000913.3 chunk {i}",
                     "start_pos": start, "end_pos": start + len(seq),
                     "fasta_url": "https://example.org/ecoli.fna.gz"})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, ecoli_fasta: Path) -> tuple[Path, Path]:
    """(local dataset directory in two Parquet shards, FASTA file of the same rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("hf")
    rows = genome_rows(ecoli_fasta)
    half = len(rows) // 2
    (root / "ds" / "data").mkdir(parents=True)
    for k, part in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(part),
                       root / "ds" / "data" / f"train-{k:05d}-of-00002.parquet")  # fmt: skip
    fasta = root / "rows.fa"
    with fasta.open("w") as fh:
        for row in rows:
            seq = str(row["sequence"])
            lines = "\n".join(seq[i : i + 80] for i in range(0, len(seq), 80))
            fh.write(f">{row['description']}\n{lines}\n")
    return root / "ds", fasta


def test_same_bytes_as_the_fasta_path(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    ds, fasta = dataset
    hf = genos("preprocess", "--hf-dataset", ds, "-o", tmp_path / "hf", "--workers", "1")
    assert hf.exit_code == 0, hf.output
    fa = genos("preprocess", fasta, "-o", tmp_path / "fa", "--workers", "1")
    assert fa.exit_code == 0, fa.output
    for split in ("train", "val"):
        for ext in ("bin", "idx"):
            a = (tmp_path / f"hf_{split}_text_document.{ext}").read_bytes()
            b = (tmp_path / f"fa_{split}_text_document.{ext}").read_bytes()
            assert a == b, f"{split}.{ext}"
    m_hf = json.loads((tmp_path / "hf.json").read_text())
    m_fa = json.loads((tmp_path / "fa.json").read_text())
    assert m_hf["stats"]["records"] == m_fa["stats"]["records"] == 774
    assert m_hf["stats"]["bases"] == m_fa["stats"]["bases"] == 4_639_675  # the whole genome
    assert m_hf["stats"]["sequences"] == m_fa["stats"]["sequences"] > 1000
    assert m_hf["inputs"] == [f"hf:{ds}[train].sequence"]


def test_nucleotide_and_together_with_files(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    ds, fasta = dataset
    both = genos("preprocess", fasta, "--hf-dataset", ds, "-o", tmp_path / "both",
                 "--nucleotide-tokenizer", "--val-ratio", "0")  # fmt: skip
    assert both.exit_code == 0, both.output
    copy = tmp_path / "copy.fa"  # the same file named twice is read once
    copy.write_bytes(fasta.read_bytes())
    twice = genos("preprocess", fasta, copy, "-o", tmp_path / "twice",
                  "--nucleotide-tokenizer", "--val-ratio", "0")  # fmt: skip
    assert twice.exit_code == 0, twice.output
    a = (tmp_path / "both_text_document.bin").read_bytes()
    assert a == (tmp_path / "twice_text_document.bin").read_bytes()


def test_bad_datasets_are_one_error_line(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds, _ = dataset
    out = tmp_path / "out"
    assert_user_error(
        genos("preprocess", "--hf-dataset", ds, "--hf-column", "seq", "-o", out),
        "has no column 'seq'", "description",
    )  # fmt: skip
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.Table.from_pylist([{"sequence": "ACGT" * 200}, {"sequence": "ACGTJ"}]),
                   bad / "train.parquet")  # fmt: skip
    assert_user_error(genos("preprocess", "--hf-dataset", bad, "-o", out), "row 1",
                      "unexpected character 'J'")  # fmt: skip
    assert_user_error(
        genos("preprocess", "--hf-dataset", tmp_path / "missing", "-o", out),
        "cannot open Hugging Face dataset",
    )
    assert not list(tmp_path.glob("out*"))


def test_without_datasets_says_how_to_install(
    tmp_path: Path, dataset: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert_user_error(
        genos("preprocess", "--hf-dataset", dataset[0], "-o", tmp_path / "out"),
        "pip install 'genos[hub]'",
    )
