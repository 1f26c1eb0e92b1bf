"""Resolving a run config: a preset or YAML file, plus `--set` overrides, validated once.

Every way this can go wrong ends in a `GenosError` whose message names the file (and line,
or setting) and what was expected, e.g.::

    my.yaml: 2 invalid settings:
      - model.hiden_size: unknown setting; did you mean 'hidden_size'?
      - training.zero_stage: ZeRO-3 does not support Mixture-of-Experts layers; use 0, 1 or 2
"""

from __future__ import annotations

import copy
import difflib
import re
import sys
import textwrap
from collections.abc import Hashable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from genos_cli.config.schema import GenosConfig
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

# Preset name -> file under configs/. The file names keep the reference layout's labels.
PRESET_FILES: dict[str, str] = {
    "small": "small_8m.yaml",
    "medium": "medium_35m.yaml",
    "large": "large.yaml",
}
DEFAULT_PRESET = "small"


def preset_names() -> tuple[str, ...]:
    """The preset sizes `load_config(size=...)` and `--size` accept, smallest first."""
    return tuple(PRESET_FILES)


def presets_dir() -> Traversable:
    """Where the preset YAML files live.

    An installed wheel carries them as `genos_cli/configs` (pyproject's force-include); an
    editable install or source checkout only has the repository's top-level `configs/`.
    """
    packaged = resources.files("genos_cli") / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "configs"


def preset_file(size: str) -> Traversable:
    """The YAML file of preset `size`; a `GenosError` listing the valid names otherwise."""
    if size not in PRESET_FILES:
        raise GenosError(
            f"unknown preset size {size!r}; choose one of: {', '.join(preset_names())}"
        )
    return presets_dir() / PRESET_FILES[size]


# --------------------------------------------------------------------------------------------
# Reading YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping.

    Plain PyYAML keeps the last value silently, which hides exactly the kind of mistake
    (a second `model:` block, a pasted line) that a config checker exists to catch.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may legitimately be overridden by explicit keys
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys with their line
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    # PyYAML marks are 0-based; editors count from 1.
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def parse_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse `text` as a YAML mapping of settings; `source` names it in error messages."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise GenosError(f"{source}: {_describe_yaml_error(exc)}") from None
    if data is None:
        raise GenosError(f"{source}: the file is empty; expected a mapping of settings")
    if not isinstance(data, dict):
        raise GenosError(
            f"{source}: expected a mapping of settings (name:, model:, training:, ...) at the "
            f"top level, got a {_yaml_type_name(data)}"
        )
    return data


def read_yaml_mapping(file: Traversable, source: str | None = None) -> dict[str, Any]:
    """Read a YAML config file into a dict, turning every file problem into a `GenosError`."""
    source = source or str(file)
    if file.is_dir():
        raise GenosError(f"{source}: is a directory, not a YAML config file")
    if not file.is_file():
        raise GenosError(f"{source}: no such config file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GenosError(f"{source}: not a UTF-8 text file; expected YAML") from None
    except OSError as exc:
        raise GenosError(f"{source}: cannot read: {exc.strerror or exc}") from None
    return parse_yaml_mapping(text, source)


def _yaml_type_name(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return f"string ({_show(value)})"
    return f"{type(value).__name__} ({_show(value)})"


# --------------------------------------------------------------------------------------------
# Overrides


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn `--set key.path=value` strings into `{"key.path": value}`.

    The value is parsed as YAML, so `512` is an int, `1.0e-3` a float, `null` is None and
    `[a.fa, b.fa]` a list; anything else stays a string.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise GenosError(
                f"--set expects KEY.PATH=VALUE (e.g. model.num_layers=6), got {item!r}"
            )
        try:
            overrides[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise GenosError(
                f"--set {item}: the value is not valid YAML ({_describe_yaml_error(exc)})"
            ) from None
    return overrides


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` with each override set at its dotted path (nested dicts are merged).

    Unknown keys are set anyway: validation then reports them with a did-you-mean hint.
    """
    result = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        # Keys of nested dicts come from YAML and need not be strings; validation reports them.
        parts = dotted.split(".") if isinstance(dotted, str) else [dotted]
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                raise GenosError(f"cannot set {dotted!r}: {section!r} is a setting, not a section")
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = apply_overrides(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return result


# --------------------------------------------------------------------------------------------
# Validation errors -> one readable message


def _show(value: object, limit: int = 60) -> str:
    # Spell values the way they are written in YAML, where users typed them.
    if value is None or isinstance(value, bool):
        return yaml.safe_dump(value).splitlines()[0]
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _section_model(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that the settings at `loc` belong to (GenosConfig for `()`)."""
    model: type[BaseModel] = GenosConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _sections() -> dict[str, type[BaseModel]]:
    return {
        name: sub
        for name in GenosConfig.model_fields
        if (sub := _section_model((name,))) is not None
    }


def _unknown_key_message(loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1])
    section = _section_model(loc[:-1])
    if section is None:
        return "unknown setting"
    valid = list(section.model_fields)
    # A real setting put in the wrong section is a likelier mistake than a typo.
    for name, sub in _sections().items():
        if sub is not section and key in sub.model_fields:
            return f"unknown setting here; did you mean '{name}.{key}'?"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"unknown setting; did you mean '{close[0]}'?"
    return f"unknown setting; valid settings here: {', '.join(valid)}"


_TYPE_NAMES = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "path_type": "a file path",
    "model_type": "a section of settings (a mapping)",
    "model_attributes_type": "a section of settings (a mapping)",
    "dict_type": "a mapping",
}

_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _error_messages(err: Mapping[str, Any]) -> list[str]:
    """Readable message(s) for one pydantic error; a validator may report several at once."""
    kind, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    got = _show(err.get("input"))
    if kind == "extra_forbidden":
        return [_unknown_key_message(loc)]
    if kind == "missing":
        return ["required setting is missing"]
    if kind in _TYPE_NAMES:
        return [f"expected {_TYPE_NAMES[kind]}, got {got}"]
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        bound = ctx.get(key)
        bound_text = f"{bound:g}" if isinstance(bound, float) else str(bound)  # 0.0 -> 0
        return [f"must be {words} {bound_text}, got {got}"]
    if kind == "literal_error":
        return [f"expected {ctx.get('expected')}, got {got}"]
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"]).splitlines()
    return [f"{err['msg']}, got {got}"]


def _renamed(text: str, names: Mapping[str, str]) -> str:
    for name, new in names.items():
        text = re.sub(rf"(?<![\w.]){re.escape(name)}(?!\w)", new, text)
    return text


def validation_problems(
    exc: ValidationError, names: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """`(where, message)` for each problem in `exc`, `where` the dotted setting ("" for a
    check across settings). `names` renames settings in both, e.g. `{"stride_bp":
    "--stride"}` to speak of the command-line flags that set them."""
    names = names or {}
    problems = []
    for err in exc.errors(include_url=False):
        where = _dotted(tuple(err["loc"]))
        for message in _error_messages(err):
            problems.append((names.get(where, where), _renamed(message, names)))
    return problems


def format_validation_error(exc: ValidationError, source: str) -> str:
    """`<source>: N invalid setting(s):` then one `  - dotted.path: message` line per problem."""
    lines = [
        f"  - {where}: {message}" if where else f"  - {message}"
        for where, message in validation_problems(exc)
    ]
    plural = "" if len(lines) == 1 else "s"
    return "\n".join([f"{source}: {len(lines)} invalid setting{plural}:", *lines])


def setting_field(path: str) -> FieldInfo:
    """The schema field of the setting at dotted `path`, e.g. "training.lr"."""
    *sections, key = path.split(".")
    model = _section_model(tuple(sections))
    if model is None or key not in model.model_fields:
        raise KeyError(f"no setting {path!r} in the schema")
    return model.model_fields[key]


def validate_config(data: Mapping[str, Any], source: str) -> GenosConfig:
    """Validate a raw settings mapping; a `GenosError` listing every problem otherwise."""
    try:
        return GenosConfig.model_validate(data)
    except ValidationError as exc:
        raise GenosError(format_validation_error(exc, source)) from None


# --------------------------------------------------------------------------------------------
# The public entry point


def load_config(
    size: str | None = None,
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GenosConfig:
    """The validated config of preset `size` (default small) or YAML file `path`.

    A file whose top level has `base: small|medium|large` holds only the settings it changes
    from that preset; otherwise it must be complete.

    `overrides` maps dotted paths to values (`{"model.num_layers": 6}`), or holds nested
    dicts (`{"model": {"num_layers": 6}}`); they are applied before validation, so an
    override can fix a file that would not validate on its own.
    """
    if size is not None and path is not None:
        raise GenosError("give either a preset size or a config file, not both")
    if path is not None:
        source = str(path)
        data = read_yaml_mapping(Path(path), source)
        if "base" in data:
            # `base: small` makes the file a set of changes to a preset: a few lines suffice.
            base = data.pop("base")
            if not isinstance(base, str) or base not in preset_names():
                raise GenosError(
                    f"{source}: base must be one of {', '.join(preset_names())}, got {base!r}"
                )
            data = apply_overrides(read_yaml_mapping(preset_file(base), f"preset {base!r}"), data)
            source += f" (based on preset {base!r})"
    else:
        size = size or DEFAULT_PRESET
        file = preset_file(size)
        source = f"preset {size!r} ({file})"
        data = read_yaml_mapping(file, source)
    if overrides:
        data = apply_overrides(data, overrides)
        source += " with overrides"
    return validate_config(data, source)


# --------------------------------------------------------------------------------------------
# Writing YAML


def _comment(text: str | None, indent: str, width: int = 92) -> list[str]:
    lines = textwrap.wrap(text or "", width=width - len(indent) - 2)
    return [f"{indent}# {line}" for line in lines]


def _dump_setting(key: str, value: Any, indent: str) -> list[str]:
    # Block style keeps scalars as `key: value`; a list of scalars reads best inline.
    text = yaml.safe_dump(
        {key: value},
        default_flow_style=None if isinstance(value, list) else False,
        sort_keys=False,
        width=10**9,
        allow_unicode=True,
    )
    return [indent + line for line in text.splitlines()]


def config_to_yaml(cfg: GenosConfig, header: str | None = None) -> str:
    """`cfg` as YAML with each setting's description as a comment above it.

    The text parses back (yaml.safe_load + GenosConfig.model_validate) to an equal config.
    """
    data = cfg.model_dump(mode="json")
    lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    for name, field in GenosConfig.model_fields.items():
        section = _section_model((name,))
        if section is None:
            lines += _comment(field.description, "")
            lines += _dump_setting(name, data[name], "")
            continue
        lines.append("")
        lines += _comment(field.description, "")
        lines.append(f"{name}:")
        for key, sub_field in section.model_fields.items():
            lines += _comment(sub_field.description, "  ")
            lines += _dump_setting(key, data[name][key], "  ")
    return "\n".join(lines) + "\n"
