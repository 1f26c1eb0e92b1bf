"""`genos config show` end to end, through the root Typer app as a user runs it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner, Result

from genos_cli.cli import config_cmd
from genos_cli.cli.app import app
from genos_cli.config import GenosConfig, load_config, preset_file
from tests.helpers import assert_user_error, small_yaml_with, write

runner = CliRunner()


def genos(*args: str) -> Result:
    return runner.invoke(app, ["config", *args])


# ------------------------------------------------------------------------------------------
# Success


def test_config_help_lists_show() -> None:
    result = runner.invoke(app, ["config", "--help"])
    assert result.exit_code == 0
    assert "show" in result.stdout


@pytest.mark.parametrize(
    ("args", "size", "summary"),
    [
        ([], "small", "total 7.15M, active 4.00M per token (3.94M non-embedding)"),
        (["--size", "small"], "small", "total 7.15M, active 4.00M per token"),
        (["--size", "medium"], "medium", "total 31.61M, active 19.03M per token (18.90M non-"),
        (["-s", "large"], "large", "total 1.25B, active 340.12M per token"),
    ],
)
def test_show_preset_prints_parseable_yaml_and_counts(
    args: list[str], size: str, summary: str
) -> None:
    result = genos("show", *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    # Piped output is plain YAML: no Rich markup or ANSI escapes, and it parses back.
    assert "\x1b[" not in result.stdout
    assert GenosConfig.model_validate(yaml.safe_load(result.stdout)) == load_config(size)
    assert f"# parameters: {summary}" in result.stdout


def test_show_output_round_trips_through_config(tmp_path: Path) -> None:
    first = genos("show", "--size", "medium", "--set", "model.num_layers=6")
    assert first.exit_code == 0, first.output
    saved = write(tmp_path, first.stdout)

    second = genos("show", "--config", str(saved))
    assert second.exit_code == 0, second.output
    cfg = GenosConfig.model_validate(yaml.safe_load(second.stdout))
    assert cfg == load_config("medium", overrides={"model.num_layers": 6})
    assert cfg.model.num_layers == 6
    # Only the header comment (naming the source) differs.
    assert first.stdout.splitlines()[1:] == second.stdout.splitlines()[1:]


def test_show_applies_repeated_set_overrides() -> None:
    result = genos(
        "show",
        "--set",
        "model.num_experts=8",
        "--set",
        "training.lr=3.0e-4",
        "--set",
        "data.train_data_paths=[a.fa.gz, b.fa]",
        "--set",
        "tokenizer.kind=nucleotide",
        "--set",
        "tokenizer.vocab_size=16",
    )
    assert result.exit_code == 0, result.output
    cfg = GenosConfig.model_validate(yaml.safe_load(result.stdout))
    assert cfg.model.num_experts == 8
    assert cfg.training.lr == 3e-4
    assert cfg.data.train_data_paths == ["a.fa.gz", "b.fa"]
    assert (cfg.tokenizer.kind, cfg.tokenizer.vocab_size) == ("nucleotide", 16)
    # 8 experts: more total parameters, same active ones (top-2) except the router; the
    # nucleotide tokenizer's 16 ids size the embedding and head (2 x 16 x 256, not 2 x 128 x 256).
    assert cfg.model.vocab_size == 16
    assert "total 13.39M, active 3.95M per token" in result.stdout


def test_show_in_a_terminal_highlights_and_prints_a_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=120, color_system="truecolor")
    monkeypatch.setattr(config_cmd, "console", terminal)
    result = genos("show", "--size", "small")
    assert result.exit_code == 0, result.output
    rendered = buffer.getvalue()
    assert "\x1b[" in rendered  # highlighted
    for needle in ("hidden_size", "7.15M", "7,149,824", "4,004,096", "3,938,560"):
        assert needle in rendered


# ------------------------------------------------------------------------------------------
# User errors: one message, exit 1, no traceback


def test_typo_and_bad_values_in_a_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        small_yaml_with(
            {
                "  hidden_size: 256": "  hiden_size: 256",
                "zero_stage: 1": "zero_stage: 3",
                "num_experts: 4": "num_experts: abc",
            }
        ),
    )
    stderr = assert_user_error(genos("show", "--config", str(path)))
    lines = stderr.splitlines()
    assert lines[0] == f"error: {path}: 4 invalid settings:"
    assert set(lines[1:]) == {
        "  - model.hidden_size: required setting is missing",
        "  - model.num_experts: expected an integer, got 'abc'",
        "  - model.hiden_size: unknown setting; did you mean 'hidden_size'?",
        "  - training.zero_stage: ZeRO-3 does not support Mixture-of-Experts layers; use 0, 1 or 2",
    }


def test_bad_integer(tmp_path: Path) -> None:
    path = write(tmp_path, small_yaml_with({"hidden_size: 256": "hidden_size: abc"}))
    stderr = assert_user_error(genos("show", "-c", str(path)))
    assert stderr.splitlines() == [
        f"error: {path}: 1 invalid setting:",
        "  - model.hidden_size: expected an integer, got 'abc'",
    ]


def test_cross_field_error(tmp_path: Path) -> None:
    path = write(tmp_path, small_yaml_with({"num_query_groups: 2": "num_query_groups: 3"}))
    assert_user_error(
        genos("show", "--config", str(path)),
        "model: num_attention_heads (4) must be divisible by num_query_groups (3)",
    )


def test_bad_override_is_reported_like_a_file_error() -> None:
    assert_user_error(
        genos("show", "--set", "training.zero_stage=3", "--set", "model.nm_layers=2"),
        "with overrides: 2 invalid settings:",
        "  - training.zero_stage: ZeRO-3 does not support Mixture-of-Experts layers",
        "  - model.nm_layers: unknown setting; did you mean 'num_layers'?",
    )


def test_malformed_set() -> None:
    assert_user_error(genos("show", "--set", "model.num_layers"), "--set expects KEY.PATH=VALUE")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert_user_error(genos("show", "--config", str(missing)), f"{missing}: no such config file")


def test_directory(tmp_path: Path) -> None:
    assert_user_error(genos("show", "--config", str(tmp_path)), "is a directory")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmodel:\n  num_layers: 4\n  hidden_size: [256\n")
    stderr = assert_user_error(genos("show", "--config", str(path)), "invalid YAML at line ")
    assert f"{path}: invalid YAML at line 5" in stderr


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- small\n- medium\n")
    assert_user_error(
        genos("show", "--config", str(path)), "expected a mapping of settings", "got a list"
    )


def test_unknown_size_lists_valid_names() -> None:
    assert_user_error(
        genos("show", "--size", "huge"),
        "unknown preset size 'huge'; choose one of: small, medium, large",
    )


def test_size_and_config_are_mutually_exclusive(tmp_path: Path) -> None:
    path = write(tmp_path, preset_file("small").read_text(encoding="utf-8"))
    assert_user_error(
        genos("show", "--size", "small", "--config", str(path)),
        "--size and --config are mutually exclusive",
    )
