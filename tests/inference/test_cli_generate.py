"""`genos generate` end to end: FASTA out, reproducible with --seed, prompts from the
command line or a FASTA of real E. coli slices, and one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import assert_user_error, genos


def _records(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.split(">")[1:]:
        header, *lines = block.strip().split("\n")
        out.append((header, "".join(lines)))
    return out


def test_generate_to_stdout_and_file(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tiny_checkpoints["bpe"]
    args = (ckpt, "--prompt", "acgtTGCA", "--num-bases", "130", "--num-samples", "3",
            "--seed", "11", "--top-k", "20", "--temperature", "0.9")  # fmt: skip
    first = genos("generate", *args)
    assert first.exit_code == 0, first.output
    records = _records(first.stdout)
    assert [h.split()[0] for h, _ in records] == [f"prompt_sample{i}" for i in (1, 2, 3)]
    assert all(len(seq) == 130 and set(seq) <= set("ACGT") for _, seq in records)
    assert "seed=11" in records[0][0] and "prompt_bp=8" in records[0][0]
    assert max(len(s) for s in first.stdout.splitlines() if not s.startswith(">")) == 80
    out = tmp_path / "gen.fa"
    again = genos("generate", *args, "-o", out)
    assert again.exit_code == 0, again.output
    assert out.read_text() == first.stdout  # reproducible with --seed
    other = genos("generate", *args[:-6], "--seed", "12")
    assert _records(other.stdout) != records
    with_prompt = genos("generate", *args, "--include-prompt")
    assert all(seq.startswith("ACGTTGCA") and len(seq) == 138
               for _, seq in _records(with_prompt.stdout))  # fmt: skip


def test_prompts_from_a_fasta(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, ecoli_sequence: str
) -> None:
    fasta = tmp_path / "prompts.fa"
    fasta.write_text(
        f">ecoli_1k some description\n{ecoli_sequence[1000:1060]}\n"
        f"{ecoli_sequence[1060:1100].lower()}\n>ecoli_3m\n{ecoli_sequence[3_000_000:3_000_050]}\n"
    )
    result = genos("generate", tiny_checkpoints["nucleotide"], "--fasta", fasta,
                   "--num-bases", "40", "--num-samples", "2", "--temperature", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    records = _records(result.stdout)
    names = [h.split()[0] for h, _ in records]
    assert names == ["ecoli_1k_sample1", "ecoli_1k_sample2", "ecoli_3m_sample1", "ecoli_3m_sample2"]
    assert records[0][1] == records[1][1]  # greedy: both samples agree
    assert "prompt_bp=100" in records[0][0] and "prompt_bp=50" in records[2][0]


@pytest.mark.slow
def test_bad_input(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tiny_checkpoints["bpe"]
    out = tmp_path / "out.fa"
    assert_user_error(genos("generate", tmp_path / "nope", "-o", out), "does not exist")
    assert_user_error(genos("generate", ckpt, "--prompt", "ACGTXAC"), "'X' at position 5")
    assert_user_error(genos("generate", ckpt, "--fasta", tmp_path / "no.fa"), "does not exist")
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    assert_user_error(genos("generate", ckpt, "--fasta", empty), "empty")
    with_n = tmp_path / "n.fa"
    with_n.write_text(">ok\nACGT\n>gap\nACGNNT\n")
    assert_user_error(genos("generate", ckpt, "--fasta", with_n), "record 'gap'", "'N'")
    protein = tmp_path / "protein.fa"
    protein.write_text(">p\nMKLLEE\n")
    assert_user_error(genos("generate", ckpt, "--fasta", protein), "record 'p'", "'L'")
    bad = [("--top-p", "0"), ("--top-p", "1.2"), ("--temperature", "-0.5"),
           ("--num-bases", "0"), ("--num-samples", "0"), ("--top-k", "-1")]  # fmt: skip
    for flag, value in bad:
        assert_user_error(genos("generate", ckpt, flag, value, "-o", out), flag)
    assert_user_error(genos("generate", ckpt, "--prompt", "AC", "--fasta", with_n), "not both")
    assert not out.exists() and not list(tmp_path.glob(".out.fa*"))  # nothing half-written
