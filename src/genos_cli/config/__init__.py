"""Run configuration: the typed schema, the small/medium/large presets, parameter counts.

Nothing here imports torch, so `genos config show` and `--help` stay instant.
"""

from __future__ import annotations

from genos_cli.config.params import ParamCounts, count_parameters, human_count
from genos_cli.config.presets import (
    DEFAULT_PRESET,
    apply_overrides,
    config_to_yaml,
    format_validation_error,
    load_config,
    parse_overrides,
    preset_file,
    preset_names,
    read_yaml_mapping,
    setting_field,
    validate_config,
    validation_problems,
)
from genos_cli.config.schema import (
    DataConfig,
    GenosConfig,
    ModelConfig,
    TokenizerConfig,
    TrainingConfig,
)

__all__ = [
    "DEFAULT_PRESET",
    "DataConfig",
    "GenosConfig",
    "ModelConfig",
    "ParamCounts",
    "TokenizerConfig",
    "TrainingConfig",
    "apply_overrides",
    "config_to_yaml",
    "count_parameters",
    "format_validation_error",
    "human_count",
    "load_config",
    "parse_overrides",
    "preset_file",
    "preset_names",
    "read_yaml_mapping",
    "setting_field",
    "validate_config",
    "validation_problems",
]
