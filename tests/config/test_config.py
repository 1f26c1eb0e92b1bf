"""Unit tests of genos_cli.config: schema checks, presets, overrides, errors, parameter counts.

The settings and presets tables in docs/config.md are generated from the schema here;
regenerate them with `GENOS_UPDATE_DOCS=1 python -m pytest tests/config/test_config.py -k docs`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from genos_cli.config import (
    DataConfig,
    GenosConfig,
    ModelConfig,
    TokenizerConfig,
    TrainingConfig,
    apply_overrides,
    config_to_yaml,
    count_parameters,
    human_count,
    load_config,
    parse_overrides,
    preset_file,
    preset_names,
)
from genos_cli.config.presets import parse_yaml_mapping
from genos_cli.errors import GenosError
from tests.helpers import small_yaml_with, write

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs" / "config.md"

SMALL_MODEL = {
    "num_layers": 4,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_query_groups": 2,
    "num_experts": 4,
    "expert_ffn_hidden_size": 512,
    "vocab_size": 128,  # a bare ModelConfig has no tokenizer to take it from
}


def model(**changes: Any) -> ModelConfig:
    return ModelConfig(**{**SMALL_MODEL, **changes})


def validation_messages(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(str(err["msg"]) for err in exc.value.errors())


# ------------------------------------------------------------------------------------------
# Parameter counts, against the architecture counted by hand


def test_small_parameter_count_matches_hand_count() -> None:
    # vocab 128, hidden 256, 4 heads x 64 (q width 256), 2 kv groups x 64 (kv width 128),
    # 4 experts of 3 x 256 x 512, top-2, 4 layers.
    embedding = 128 * 256 + 256 * 128  # input embedding + untied output head
    norms = 2 * 256
    attention = 256 * 256 + 2 * (256 * 128) + 256 * 256  # q, k+v, o
    router = 256 * 4
    expert = 3 * 256 * 512
    final_norm = 256
    total = embedding + 4 * (norms + attention + router + 4 * expert) + final_norm
    active = embedding + 4 * (norms + attention + router + 2 * expert) + final_norm
    assert (total, active) == (7_149_824, 4_004_096)

    counts = count_parameters(load_config("small").model)
    assert counts.total == total
    assert counts.active == active
    assert counts.embedding == embedding
    assert counts.active_non_embedding == active - embedding == 3_938_560


def test_medium_parameter_count_matches_hand_count() -> None:
    # vocab 128, hidden 512, 8 heads x 64 (q width 512), 4 kv groups x 64 (kv width 256),
    # 4 experts of 3 x 512 x 512, top-2, 8 layers.
    embedding = 2 * 128 * 512
    norms = 2 * 512
    attention = 512 * 512 + 2 * (512 * 256) + 512 * 512
    router = 512 * 4
    expert = 3 * 512 * 512
    layers_active = 8 * (norms + attention + router + 2 * expert)
    total = embedding + 8 * (norms + attention + router + 4 * expert) + 512
    active = embedding + layers_active + 512
    assert (total, active) == (31_613_440, 19_030_528)
    # The ~18.9M "non-embedding" of the design notes: the transformer blocks alone.
    assert layers_active == 18_898_944

    counts = count_parameters(load_config("medium").model)
    assert (counts.total, counts.active) == (total, active)
    # active_non_embedding = active - (embedding + head); it keeps the final RMSNorm.
    assert counts.active_non_embedding == layers_active + 512 == 18_899_456


def test_large_parameter_count_matches_hand_count() -> None:
    embedding = 2 * 128 * 1024
    per_layer_shared = 2 * 1024 + (1024 * 1024 + 2 * (1024 * 512) + 1024 * 1024) + 1024 * 8
    expert = 3 * 1024 * 4096
    total = embedding + 12 * (per_layer_shared + 8 * expert) + 1024
    active = embedding + 12 * (per_layer_shared + 2 * expert) + 1024
    counts = count_parameters(load_config("large").model)
    assert (counts.total, counts.active) == (total, active) == (1_246_094_336, 340_124_672)
    # The preset's train_tokens is ~20 tokens per active parameter (Chinchilla), rounded.
    assert load_config("large").training.train_tokens == round(20 * active, -8)


def test_active_equals_total_when_every_expert_is_used() -> None:
    counts = count_parameters(model(num_experts=2, moe_router_topk=2))
    assert counts.active == counts.total


def test_more_experts_add_total_but_not_active_parameters() -> None:
    few, many = count_parameters(model(num_experts=4)), count_parameters(model(num_experts=8))
    assert many.total > few.total
    # Only the router grows for a token that still visits 2 experts.
    assert many.active - few.active == 4 * 256 * (8 - 4)


@pytest.mark.parametrize(
    ("n", "text"),
    [(7_149_824, "7.15M"), (1_246_094_336, "1.25B"), (65_536, "65.54K"), (999, "999")],
)
def test_human_count(n: int, text: str) -> None:
    assert human_count(n) == text


# ------------------------------------------------------------------------------------------
# Presets


def test_preset_names() -> None:
    assert preset_names() == ("small", "medium", "large")


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_every_preset_file_validates(size: str) -> None:
    data = yaml.safe_load(preset_file(size).read_text(encoding="utf-8"))
    cfg = GenosConfig.model_validate(data)
    assert cfg == load_config(size)


def test_every_yaml_in_configs_is_a_known_preset() -> None:
    files = {p.name for p in (REPO_ROOT / "configs").glob("*.yaml")}
    assert files == {preset_file(size).name for size in preset_names()}


def test_default_preset_is_small() -> None:
    assert load_config() == load_config("small")


@pytest.mark.parametrize(
    ("size", "shape", "batches", "tokens"),
    [
        ("small", (4, 256, 4, 2, 4, 2, 512, 128, 512), (64, 512), 160_000_000),
        ("medium", (8, 512, 8, 4, 4, 2, 512, 128, 512), (32, 512), 700_000_000),
        ("large", (12, 1024, 16, 8, 8, 2, 4096, 128, 512), (1, 1024), 6_800_000_000),
    ],
)
def test_preset_numbers(
    size: str, shape: tuple[int, ...], batches: tuple[int, int], tokens: int
) -> None:
    cfg = load_config(size)
    m, t = cfg.model, cfg.training
    assert (
        m.num_layers,
        m.hidden_size,
        m.num_attention_heads,
        m.num_query_groups,
        m.num_experts,
        m.moe_router_topk,
        m.expert_ffn_hidden_size,
        m.vocab_size,
        m.max_seq_length,
    ) == shape
    assert (t.micro_batch_size, t.global_batch_size) == batches
    assert t.train_tokens == tokens


def test_derived_values() -> None:
    cfg = load_config("small")
    assert cfg.model.head_dim == 64
    assert cfg.tokens_per_step == 512 * 512
    assert cfg.train_steps == 611  # ceil(160e6 / 262144)
    assert cfg.data.sequence_length_bp == "auto"  # resolved from the tokenizer when a run starts
    fixed = DataConfig(sequence_length_bp=512)
    assert fixed.effective_stride_bp == fixed.effective_min_length_bp == 512
    data = DataConfig(sequence_length_bp=100, stride_bp=50, min_length_bp=10)
    assert (data.effective_stride_bp, data.effective_min_length_bp) == (50, 10)


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_config_to_yaml_round_trips(size: str) -> None:
    cfg = load_config(size)
    text = config_to_yaml(cfg, header="a header")
    assert text.startswith("# a header\n")
    assert GenosConfig.model_validate(yaml.safe_load(text)) == cfg


def test_config_to_yaml_round_trips_non_default_values(tmp_path: Path) -> None:
    cfg = load_config(
        overrides={
            "tokenizer.model_path": str(tmp_path / "my tok.model"),
            "data.train_data_paths": ["a.fa.gz", "b: c.fa"],
            "data.stride_bp": 256,
            "training.lr": 1.5e-3,
            "name": "run-2.b",
        }
    )
    assert GenosConfig.model_validate(yaml.safe_load(config_to_yaml(cfg))) == cfg


def test_config_to_yaml_comments_every_setting_with_its_description() -> None:
    text = config_to_yaml(load_config())
    flat = " ".join(line.strip().lstrip("# ") for line in text.splitlines())
    for section in (ModelConfig, TokenizerConfig, DataConfig, TrainingConfig):
        for field in section.model_fields.values():
            assert field.description
            assert " ".join(field.description.split()) in flat


def test_config_package_does_not_import_torch() -> None:
    # `genos config show` and `--help` must stay instant; torch takes seconds to import.
    code = (
        "import sys, genos_cli.config, genos_cli.cli.config_cmd; "
        "sys.exit('torch' in sys.modules or 'numpy' in sys.modules)"
    )
    pythonpath = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])
    )
    env = {**os.environ, "PYTHONPATH": pythonpath}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


# ------------------------------------------------------------------------------------------
# Schema checks


def test_model_rejects_hidden_not_divisible_by_heads() -> None:
    with pytest.raises(ValidationError) as exc:
        model(hidden_size=250)
    assert "hidden_size (250) must be divisible by num_attention_heads (4)" in str(exc.value)


def test_model_rejects_odd_head_dim() -> None:
    with pytest.raises(ValidationError) as exc:
        model(hidden_size=36, num_attention_heads=4, num_query_groups=2)  # head_dim 9
    assert "head_dim = hidden_size / num_attention_heads = 9 must be even" in str(exc.value)


def test_model_rejects_heads_not_divisible_by_groups() -> None:
    with pytest.raises(ValidationError, match=r"num_query_groups \(3\)"):
        model(num_query_groups=3)


@pytest.mark.parametrize("topk", [0, 5])
def test_model_rejects_topk_outside_1_to_num_experts(topk: int) -> None:
    with pytest.raises(ValidationError):
        model(moe_router_topk=topk)


def test_model_reports_every_shape_problem_at_once() -> None:
    with pytest.raises(ValidationError) as exc:
        model(num_query_groups=3, moe_router_topk=5)
    messages = validation_messages(exc)
    assert "num_query_groups" in messages
    assert "moe_router_topk" in messages


@pytest.mark.parametrize("field", ["num_layers", "hidden_size", "num_experts", "vocab_size"])
def test_model_rejects_non_positive_sizes(field: str) -> None:
    with pytest.raises(ValidationError):
        model(**{field: 0})


def test_vocab_must_fit_uint16() -> None:
    assert model(vocab_size=65536).vocab_size == 65536
    with pytest.raises(ValidationError, match="uint16"):
        model(vocab_size=65537)
    with pytest.raises(ValidationError, match="uint16"):
        TokenizerConfig(vocab_size=70000)


def test_nucleotide_tokenizer_needs_vocab_16_and_no_model_file() -> None:
    assert TokenizerConfig(kind="nucleotide", vocab_size=16).vocab_size == 16
    with pytest.raises(ValidationError, match="vocab_size must be 16"):
        TokenizerConfig(kind="nucleotide")
    with pytest.raises(ValidationError, match="model_path must be null"):
        TokenizerConfig(kind="nucleotide", vocab_size=16, model_path=Path("t.model"))


def test_fragment_length_auto_fills_contexts() -> None:
    """'auto' = contexts_per_document x context x bp/token, rounded up to 64 bp; resolved by
    whoever knows the tokenizer (until then the length is not a number)."""
    data = DataConfig(sequence_length_bp="auto")
    assert data.auto_length_bp(512, 2.8698) == 2944  # 2 x 512 x 2.8698 = 2938.7
    assert data.auto_length_bp(512, 1.0) == 1024
    assert DataConfig(sequence_length_bp="auto", contexts_per_document=1).auto_length_bp(
        100, 1.0
    ) == 128  # fmt: skip
    with pytest.raises(ValueError, match="resolve from the tokenizer"):
        data.window_spec()
    # min_length_bp is checked against the resolved length, not against 'auto'.
    assert DataConfig(sequence_length_bp="auto", min_length_bp=600).min_length_bp == 600
    cfg = load_config(overrides={"data.sequence_length_bp": "auto"})
    assert cfg.data.sequence_length_bp == "auto"
    assert DataConfig(sequence_length_bp="3072").sequence_length_bp == 3072  # from a flag
    for bad in (0, -5, "long", True, 1.5):
        with pytest.raises(ValidationError, match="positive number of bp or 'auto'"):
            DataConfig(sequence_length_bp=bad)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        DataConfig(sequence_length_bp="auto", contexts_per_document=0.5)


def test_data_allows_stride_longer_than_fragment() -> None:
    assert DataConfig(sequence_length_bp=100, stride_bp=1000).stride_bp == 1000


@pytest.mark.parametrize(
    "changes",
    [
        {"stride_bp": 0},
        {"sequence_length_bp": 512, "min_length_bp": 600},
        {"val_ratio": 1.0},
        {"val_ratio": -0.1},
    ],
)
def test_data_rejects(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DataConfig(**changes)


TRAINING = {"micro_batch_size": 4, "global_batch_size": 16, "train_tokens": 1000}


def test_training_rejects_zero3_with_moe_message() -> None:
    with pytest.raises(ValidationError) as exc:
        TrainingConfig(**TRAINING, zero_stage=3)
    assert "ZeRO-3 does not support Mixture-of-Experts layers; use 0, 1 or 2" in str(exc.value)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"global_batch_size": 10}, "must be a multiple of micro_batch_size"),
        ({"min_lr": 1e-2}, "min_lr (0.01) must not exceed lr (0.0006)"),
        ({"precision": "int8"}, "precision"),
        ({"zero_stage": 4}, "zero_stage"),
        ({"zero_stage": True}, "expected 0, 1 or 2, got true"),
    ],
)
def test_training_rejects(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TrainingConfig(**{**TRAINING, **changes})
    assert needle in str(exc.value)


def test_min_lr_defaults_to_a_tenth_of_lr() -> None:
    assert load_config("small").training.min_lr == 6e-5  # written 6.0e-4 / 10, not 5.99...e-5
    assert load_config("small", overrides={"training.lr": 3e-3}).training.min_lr == 3e-4
    assert TrainingConfig(**TRAINING, lr=1e-3, min_lr=1e-5).min_lr == 1e-5  # explicit wins


def test_genos_config_cross_section_checks() -> None:
    base = load_config().model_dump()
    bad = apply_overrides(base, {"tokenizer.vocab_size": 256, "training.expert_parallel_size": 3})
    with pytest.raises(ValidationError) as exc:
        GenosConfig.model_validate(bad)
    messages = validation_messages(exc)
    assert "tokenizer.vocab_size (256) must not exceed model.vocab_size (128)" in messages
    assert "expert_parallel_size (3) must divide model.num_experts (4)" in messages


def test_every_model_forbids_unknown_keys() -> None:
    for cls in (GenosConfig, ModelConfig, TokenizerConfig, DataConfig, TrainingConfig):
        assert cls.model_config.get("extra") == "forbid"


# ------------------------------------------------------------------------------------------
# Overrides


def test_parse_overrides_reads_values_as_yaml() -> None:
    assert parse_overrides(
        ["model.num_layers=6", "training.lr=1.0e-3", "data.stride_bp=null", "name=a=b"]
    ) == {"model.num_layers": 6, "training.lr": 1e-3, "data.stride_bp": None, "name": "a=b"}
    assert parse_overrides(["data.train_data_paths=[a.fa, b.fa]"]) == {
        "data.train_data_paths": ["a.fa", "b.fa"]
    }


@pytest.mark.parametrize("item", ["model.num_layers", "=3", "model..x=1", "model.x=[1"])
def test_parse_overrides_rejects_malformed(item: str) -> None:
    with pytest.raises(GenosError, match="--set"):
        parse_overrides([item])


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    # One expert with top-2 is invalid on its own; the pair is validated together.
    with pytest.raises(GenosError, match="moe_router_topk"):
        load_config(overrides={"model.num_experts": 1})
    cfg = load_config(overrides={"model.num_experts": 1, "model.moe_router_topk": 1})
    assert (cfg.model.num_experts, cfg.model.moe_router_topk) == (1, 1)
    # An override can also repair a file that would not validate by itself.
    path = write(tmp_path, small_yaml_with({"zero_stage: 1": "zero_stage: 3"}))
    assert load_config(path=path, overrides={"training.zero_stage": 2}).training.zero_stage == 2


def test_nested_overrides_merge() -> None:
    cfg = load_config(overrides={"model": {"num_layers": 2}})
    assert cfg.model.num_layers == 2
    assert cfg.model.hidden_size == 256  # the rest of the section is kept


def test_override_through_a_setting_is_an_error() -> None:
    with pytest.raises(GenosError, match="'name' is a setting, not a section"):
        load_config(overrides={"name.x": 1})


def test_apply_overrides_does_not_mutate_input() -> None:
    data = {"model": {"num_layers": 4}}
    apply_overrides(data, {"model.num_layers": 8})
    assert data == {"model": {"num_layers": 4}}


# ------------------------------------------------------------------------------------------
# Error messages


def test_typo_and_bad_values_are_listed_one_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        small_yaml_with(
            {
                "  hidden_size: 256": "  hiden_size: 256",
                "zero_stage: 1": "zero_stage: 3",
                "num_layers: 4": "num_layers: abc",
            }
        ),
    )
    with pytest.raises(GenosError) as exc:
        load_config(path=path)
    lines = str(exc.value).splitlines()
    assert lines[0] == f"{path}: 4 invalid settings:"
    assert sorted(lines[1:]) == sorted(
        [
            "  - model.num_layers: expected an integer, got 'abc'",
            "  - model.hidden_size: required setting is missing",
            "  - model.hiden_size: unknown setting; did you mean 'hidden_size'?",
            "  - training.zero_stage: ZeRO-3 does not support Mixture-of-Experts layers; "
            "use 0, 1 or 2",
        ]
    )


def test_single_error_is_singular(tmp_path: Path) -> None:
    path = write(tmp_path, small_yaml_with({"lr: 6.0e-4": "lr: -1"}))
    with pytest.raises(GenosError) as exc:
        load_config(path=path)
    assert str(exc.value).splitlines() == [
        f"{path}: 1 invalid setting:",
        "  - training.lr: must be greater than 0, got -1",
    ]


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        ({"model.lr": 1}, "  - model.lr: unknown setting here; did you mean 'training.lr'?"),
        ({"modle": {}}, "  - modle: unknown setting; did you mean 'model'?"),
        ({"tokenizer.kind": "bp"}, "  - tokenizer.kind: expected 'bpe' or 'nucleotide', got 'bp'"),
        ({"data.append_eod": "maybe"}, "  - data.append_eod: expected true or false, got 'maybe'"),
        ({"training.lr": "fast"}, "  - training.lr: expected a number, got 'fast'"),
        ({"model": 5}, "  - model: expected a section of settings (a mapping), got 5"),
        ({"model.num_layers": None}, "  - model.num_layers: expected an integer, got null"),
        (
            {"data.train_data_paths": "a.fa"},
            "  - data.train_data_paths: expected a list, got 'a.fa'",
        ),
        (
            {"model.hidden_size": 250},
            "  - model: hidden_size (250) must be divisible by num_attention_heads (4)",
        ),
        (
            {"tokenizer.vocab_size": 256, "model.vocab_size": 128},
            "  - tokenizer.vocab_size (256) must not exceed model.vocab_size (128)",
        ),
    ],
)
def test_error_lines(overrides: dict[str, Any], line: str) -> None:
    with pytest.raises(GenosError) as exc:
        load_config(overrides=overrides)
    message = str(exc.value)
    assert message.splitlines()[0].endswith("with overrides: 1 invalid setting:")
    assert line in message.splitlines()


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(GenosError, match="valid settings here: kind, model_path, vocab_size"):
        load_config(overrides={"tokenizer.zzz": 1})


def test_unknown_size_lists_valid_names() -> None:
    with pytest.raises(
        GenosError, match="unknown preset size 'tiny'; choose one of: small, medium"
    ):
        load_config("tiny")


def test_size_and_path_together_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GenosError, match="not both"):
        load_config("small", path=tmp_path / "x.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenosError, match="no such config file"):
        load_config(path=tmp_path / "nope.yaml")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(GenosError, match="is a directory"):
        load_config(path=tmp_path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmodel:\n  num_layers: 4\n   hidden_size: 256\n")
    with pytest.raises(GenosError) as exc:
        load_config(path=path)
    assert re.match(
        rf"{re.escape(str(path))}: invalid YAML at line 4, column \d+: ", str(exc.value)
    )


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nname: b\n")
    with pytest.raises(GenosError, match="line 2, column 1: duplicate key 'name'"):
        load_config(path=path)


def test_yaml_anchors_and_merge_keys_still_work() -> None:
    text = "a: &base {x: 1, y: 2}\nb:\n  <<: *base\n  y: 3\n"
    assert parse_yaml_mapping(text, "x.yaml") == {"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": 3}}


@pytest.mark.parametrize(
    ("text", "needle"),
    [("- a\n- b\n", "got a list"), ("just text\n", "got a string"), ("", "is empty")],
)
def test_top_level_must_be_a_mapping(text: str, needle: str) -> None:
    with pytest.raises(GenosError, match=needle):
        parse_yaml_mapping(text, "x.yaml")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(GenosError, match="not a UTF-8 text file"):
        load_config(path=path)


# ------------------------------------------------------------------------------------------
# docs/config.md stays in sync with the schema and presets


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # a constrained type, e.g. VocabSize inside `| None`
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if args and type(None) in args:
        return " \\| ".join(_type_name(a) for a in args if a is not type(None)) + " \\| null"
    if origin in (typing.Union, types.UnionType):  # e.g. int | Literal["auto"]
        return " \\| ".join(_type_name(a) for a in args)
    return {int: "int", float: "float", bool: "bool", str: "str", Path: "path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return f"`{yaml.safe_dump(value, default_flow_style=True).splitlines()[0]}`"


def _settings_markdown() -> str:
    out = []
    for name, field in GenosConfig.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            out += [f"`{name}` ({_type_name(section)}, {_default(field)}): {field.description}", ""]
            continue
        out += [f"### `{name}`", "", (section.__doc__ or "").strip(), ""]
        out += ["| setting | type | default | meaning |", "|---|---|---|---|"]
        for key, sub in section.model_fields.items():
            out.append(
                f"| `{name}.{key}` | {_type_name(sub.annotation)} | {_default(sub)} "
                f"| {sub.description} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _presets_markdown() -> str:
    out = [
        "| `--size` | file | layers | hidden | heads / kv groups | experts (top-k) "
        "| expert FFN | total params | active params | train tokens | micro / global batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in preset_names():
        cfg = load_config(size)
        m, t = cfg.model, cfg.training
        c = count_parameters(m)
        out.append(
            f"| `{size}` | `configs/{preset_file(size).name}` | {m.num_layers} | {m.hidden_size} "
            f"| {m.num_attention_heads} / {m.num_query_groups} "
            f"| {m.num_experts} (top-{m.moe_router_topk}) | {m.expert_ffn_hidden_size} "
            f"| {c.total:,} ({human_count(c.total)}) | {c.active:,} ({human_count(c.active)}) "
            f"| {t.train_tokens:,} | {t.micro_batch_size} / {t.global_batch_size} |"
        )
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    ("block", "render"), [("settings", _settings_markdown), ("presets", _presets_markdown)]
)
def test_docs_tables_are_in_sync(block: str, render: Any) -> None:
    begin, end = f"<!-- BEGIN GENERATED: {block} -->\n", f"<!-- END GENERATED: {block} -->"
    text = DOCS.read_text(encoding="utf-8")
    assert begin in text and end in text, f"docs/config.md lacks the {block} markers"
    head, rest = text.split(begin, 1)
    current, tail = rest.split(end, 1)
    expected = render()
    if os.environ.get("GENOS_UPDATE_DOCS") == "1":
        DOCS.write_text(head + begin + expected + end + tail, encoding="utf-8")
        return
    assert current == expected, (
        f"docs/config.md's {block} table is stale; regenerate it with "
        "GENOS_UPDATE_DOCS=1 python -m pytest tests/config/test_config.py -k docs"
    )


def test_base_preset_file_holds_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("base: medium\nname: wide\nmodel:\n  num_layers: 10\n")
    cfg = load_config(path=path)
    medium = load_config(size="medium")
    assert cfg.name == "wide" and cfg.model.num_layers == 10
    assert cfg.model.hidden_size == medium.model.hidden_size
    assert cfg.training == medium.training
    path.write_text("base: huge\n")
    with pytest.raises(GenosError, match="base must be one of small, medium, large"):
        load_config(path=path)
