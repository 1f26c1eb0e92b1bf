"""`genos tokenize ...` through the root Typer app, on real genomes from ../shared/data."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
from typer.testing import CliRunner

from genos_cli.cli.app import app
from genos_cli.data.fasta import read_acgt_runs
from genos_cli.data.tokenizers import load_tokenizer

runner = CliRunner()


def genos(*args: str | Path):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def ecoli_start(ecoli_fasta: Path) -> str:
    return next(read_acgt_runs([ecoli_fasta], max_run_bp=90)).decode()


@pytest.fixture(scope="module")
def english_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real SentencePiece model, trained on English (the stdlib's documentation)."""
    lines = [
        line
        for module in (json, argparse, io, os)
        for line in (module.__doc__ or "").splitlines()
        if line.strip()
    ]
    out = io.BytesIO()
    spm.SentencePieceTrainer.Train(sentence_iterator=iter(lines), model_writer=out, vocab_size=100)
    path = tmp_path_factory.mktemp("english") / "english.model"
    path.write_bytes(out.getvalue())
    return path


# ---------------------------------------------------------------- encode / decode / inspect


def test_encode_json_matches_the_library(ecoli_start: str) -> None:
    result = genos("tokenize", "encode", ecoli_start.lower(), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    ids = load_tokenizer().encode(ecoli_start)
    assert record["ids"] == ids
    assert "".join(record["pieces"]) == ecoli_start
    assert record["bp"] == 90 and record["tokens"] == len(ids)
    assert record["bp_per_token"] == pytest.approx(90 / len(ids), abs=1e-3)


def test_encode_nucleotide_by_hand() -> None:
    result = genos("tokenize", "encode", "GATTACAn", "--nucleotide", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ids"] == [10, 7, 8, 8, 7, 9, 7, 11]


def test_encode_table_output(ecoli_start: str) -> None:
    result = genos("tokenize", "encode", ecoli_start)
    assert result.exit_code == 0, result.output
    assert "90 bp →" in result.stdout and "bp/token" in result.stdout
    pieces = [load_tokenizer().id_to_piece(i) for i in load_tokenizer().encode(ecoli_start)]
    assert " ".join(pieces) in " ".join(result.stdout.split())  # no colour: space-separated


def test_encode_first_fragments_of_a_file(celegans_fasta: Path) -> None:
    result = genos(
        "tokenize", "encode", "--input", celegans_fasta, "-n", "2", "--length", "50", "--json"
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["bp"] for r in records] == [50, 50]
    assert records[0]["sequence"].startswith("CTAAGCCTAAGCCTAAGCC")  # C. elegans telomere


@pytest.mark.parametrize("flag", [[], ["--nucleotide"]])
def test_decode_round_trip(flag: list[str], ecoli_start: str) -> None:
    encoded = json.loads(genos("tokenize", "encode", ecoli_start, "--json", *flag).stdout)
    eos = "3"
    result = genos("tokenize", "decode", *flag, "2", *map(str, encoded["ids"]), eos)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ecoli_start


def test_inspect_default_model(ecoli_fasta: Path) -> None:
    result = genos("tokenize", "inspect", "--input", ecoli_fasta, "--sample-bp", "100000")
    assert result.exit_code == 0, result.output
    out = result.stdout
    # Rich wraps long paths at the terminal width: compare with whitespace collapsed.
    flat = " ".join(out.split())
    assert "vocab 128" in flat and "<mask>" in flat and "piece lengths" in flat
    assert "100,000" in flat and "bp/token" in flat
    bp_per_token = float(out.strip().splitlines()[-1].split()[-1])
    assert bp_per_token > 2.6


def test_inspect_nucleotide() -> None:
    result = genos("tokenize", "inspect", "--nucleotide")
    assert result.exit_code == 0, result.output
    assert "vocab 16" in result.stdout and "<reserved_3>" in result.stdout


# ---------------------------------------------------------------- train


def test_train_tiny_tokenizer_then_use_it(ecoli_fasta: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "tok" / "tiny"
    result = genos(
        "tokenize", "train", "--input", ecoli_fasta, "--vocab-size", "40",
        "--max-train-bp", "200000", "--sentence-bp", "1000", "--output-prefix", prefix,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tokenizer trained" in result.stdout and "bp / token" in result.stdout
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["tiny.model", "tiny.vocab"]
    encoded = genos("tokenize", "encode", "ACGTTGCA", "-t", prefix.with_suffix(".model"), "--json")
    assert encoded.exit_code == 0, encoded.output
    assert max(json.loads(encoded.stdout)["ids"]) < 40


# ---------------------------------------------------------------- errors


def test_missing_tokenizer_model(tmp_path: Path) -> None:
    missing = tmp_path / "missing.model"
    result = genos("tokenize", "encode", "ACGT", "--tokenizer-model", missing)
    assert_one_line_error(result, f"tokenizer model {missing} does not exist")


def test_not_a_sentencepiece_model(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.model"
    bogus.write_text(">chr1\nACGT\n")
    result = genos("tokenize", "inspect", "--tokenizer-model", bogus)
    assert_one_line_error(result, f"{bogus} is not a SentencePiece model (")


def test_english_model_is_not_a_dna_tokenizer(english_model: Path) -> None:
    result = genos("tokenize", "decode", "5", "--tokenizer-model", english_model)
    assert_one_line_error(result, f"{english_model} is not a DNA tokenizer: piece ")


def test_both_tokenizer_choices(english_model: Path) -> None:
    result = genos("tokenize", "encode", "ACGT", "--nucleotide", "-t", english_model)
    assert_one_line_error(result, "either --tokenizer-model or --nucleotide")


def test_decode_unknown_id() -> None:
    assert_one_line_error(
        genos("tokenize", "decode", "7", "999"), "token id 999 is outside the vocabulary"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vocab-size", "8"], "--vocab-size 8 is too small"),
        (["--vocab-size", "100000"], "--vocab-size 100000 is too large"),
        (["--vocab-size", "5000", "--max-train-bp", "5000", "--sentence-bp", "1000"], "too high"),
    ],
)
def test_train_rejects_bad_settings(
    args: list[str], message: str, ecoli_fasta: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "out" / "tok"
    result = genos("tokenize", "train", "-i", ecoli_fasta, "-o", prefix, *args)
    assert_one_line_error(result, message)
    assert not prefix.parent.exists() or list(prefix.parent.iterdir()) == []


def test_train_rejects_non_dna_input(tmp_path: Path) -> None:
    prose = tmp_path / "notes.txt"
    prose.write_text("The quick brown fox jumps over the lazy dog.\n")
    result = genos("tokenize", "train", "-i", prose, "-o", tmp_path / "out" / "tok")
    assert_one_line_error(result, str(prose))
    assert not (tmp_path / "out").exists()


def test_tokenize_cli_imports_no_heavy_libraries() -> None:
    code = (
        "import sys, genos_cli.cli.tokenize_cmd;"
        "print(sorted({'numpy', 'sentencepiece', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
