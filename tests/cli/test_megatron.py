"""`genos train --engine megatron`: the dry run prints the command; a real run starts it
through torchrun when Megatron-LM is found, and says how to install it when not."""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path

import pytest

from tests.helpers import assert_user_error, genos

TINY = ["--size", "small", "--set", "model.num_layers=2", "--micro-batch-size", "4",
        "--global-batch-size", "8", "--max-steps", "3"]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_megatron(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEGATRON_LM_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def nuc_data(ecoli_nucleotide_data: Path) -> Path:
    return ecoli_nucleotide_data


def command_words(stdout: str) -> list[str]:
    text = stdout.split("# Megatron-LM launch command\n", 1)[1]
    return shlex.split(text.replace("\\\n", " "))


def test_dry_run_prints_the_torchrun_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = genos("train", "--engine", "megatron", "--dry-run", "--output-dir", out,
                   "--num-gpus", "8", "--expert-parallel-size", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    words = command_words(result.stdout)
    assert words[:5] == ["CUDA_DEVICE_MAX_CONNECTIONS=1", "torchrun", "--nproc-per-node", "8",
                         "--standalone"]  # fmt: skip
    assert words[5] == "${MEGATRON_LM_PATH}/pretrain_gpt.py"  # left for the shell to expand
    expected = ["--num-experts", "--moe-router-topk", "--group-query-attention", "--swiglu",
                "--normalization", "--position-embedding-type", "--train-data-path",
                "--tokenizer-model", "--global-batch-size", "--train-iters", "--bf16"]  # fmt: skip
    assert set(expected) <= set(words)
    assert words[words.index("--expert-model-parallel-size") + 1] == "4"
    assert words[words.index("--train-iters") + 1] == "611"
    assert not out.exists() and not (tmp_path / "cache" / "genos" / "data").exists()


def test_nucleotide_run_has_a_16_row_vocabulary(tmp_path: Path) -> None:
    """--nucleotide-tokenizer sizes the model's vocabulary from the tokenizer (16, not the
    BPE's 128), in the plan and in the Megatron-LM command; --set model.vocab_size wins."""
    base = ["train", "--nucleotide-tokenizer", "--dry-run", "--output-dir", tmp_path / "run"]
    result = genos(*base)
    assert result.exit_code == 0, result.output
    model_section = result.stdout.split("\nmodel:\n", 1)[1].split("\ntokenizer:\n", 1)[0]
    assert "\n  vocab_size: 16\n" in model_section  # the resolved config's
    for extra, rows in (([], "16"), (["--set", "model.vocab_size=128"], "128")):
        result = genos(*base, "--engine", "megatron", *extra)
        assert result.exit_code == 0, result.output
        words = command_words(result.stdout)
        assert words[words.index("--make-vocab-size-divisible-by") + 1] == rows
        assert words[words.index("--vocab-size") + 1] == "15"  # NullTokenizer: 15 + its eod


def test_moe_loss_weights_set_from_the_command_line(tmp_path: Path) -> None:
    weights = ["--set", "model.aux_loss_coeff=1e-3", "--set", "model.z_loss_coeff=1e-3"]
    result = genos("train", "--engine", "megatron", "--dry-run", "--output-dir", tmp_path, *weights)
    assert result.exit_code == 0, result.output
    words = command_words(result.stdout)
    assert words[words.index("--moe-aux-loss-coeff") + 1] == "0.001"
    assert words[words.index("--moe-z-loss-coeff") + 1] == "0.001"


def test_without_megatron_says_how_to_install(tmp_path: Path, nuc_data: Path) -> None:
    out = tmp_path / "run"
    args = ["train", *TINY, "--nucleotide-tokenizer", "--data-path", nuc_data,
            "--engine", "megatron", "--output-dir", out]  # fmt: skip
    assert_user_error(genos(*args), "git clone https://github.com/NVIDIA/Megatron-LM",
                      "MEGATRON_LM_PATH")  # fmt: skip
    (tmp_path / "empty").mkdir()
    assert_user_error(genos(*args, "--megatron-path", tmp_path / "empty"), "no pretrain_gpt.py")
    assert not out.exists()


def test_runs_pretrain_gpt_through_torchrun(
    tmp_path: Path, nuc_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in pretrain_gpt.py records what torchrun started it with."""
    fake = tmp_path / "Megatron-LM"
    fake.mkdir()
    record = tmp_path / "argv.json"
    (fake / "pretrain_gpt.py").write_text(textwrap.dedent(f"""
        import json, os, sys
        json.dump({{"argv": sys.argv[1:], "world": os.environ["WORLD_SIZE"],
                   "pythonpath": os.environ["PYTHONPATH"]}}, open({str(record)!r}, "w"))
    """))  # fmt: skip
    monkeypatch.setenv("MEGATRON_LM_PATH", str(fake))
    out = tmp_path / "run"
    common = ["train", *TINY, "--nucleotide-tokenizer", "--data-path", nuc_data,
              "--engine", "megatron", "--output-dir", out]  # fmt: skip
    dry = genos(*common, "--dry-run")
    assert dry.exit_code == 0, dry.output
    result = genos(*common)
    assert result.exit_code == 0, result.output
    seen = json.loads(record.read_text())
    assert seen["argv"] == command_words(dry.stdout)[6:]  # exactly the printed arguments
    assert seen["world"] == "1" and str(fake) in seen["pythonpath"]
    args = seen["argv"]
    assert args[args.index("--tokenizer-type") + 1] == "NullTokenizer"
    assert args[args.index("--train-iters") + 1] == "3"
