"""Optional features and the pip extras that install them.

A plain `pip install genos` trains, evaluates and serves models; the packages below are
needed only on the code paths named here, and are imported lazily on those paths alone
(tests/packaging/test_dependencies.py checks both against pyproject.toml). Asking for a
feature whose extra is missing gives one sentence saying what to install, never an
ImportError.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from genos_cli.errors import GenosError


@dataclass(frozen=True)
class Extra:
    name: str  # pip extra: `pip install 'genos[NAME]'`
    modules: tuple[str, ...]  # what genos imports from it
    feature: str  # what needs it, as the user asked for it


EXTRAS: dict[str, Extra] = {
    e.name: e
    for e in (
        Extra("hf", ("transformers", "tokenizers"), "Hugging Face export and import"),
        Extra("hub", ("datasets",), "--hf-dataset"),
        Extra("wandb", ("wandb",), "--wandb-project"),
        Extra("tensorboard", ("tensorboard",), "--tensorboard"),
        Extra("plot", ("matplotlib",), "genos metrics plot"),
        Extra("gpu", ("flash_attn",), "flash-attn attention kernels"),
        Extra("vcf", ("pysam",), "genos score --vcf"),
        Extra("parquet", ("pyarrow",), "Parquet output (genos embed -o OUT.parquet)"),
    )
}


def install_hint(extra: str) -> str:
    return f"pip install 'genos[{extra}]'"


def available(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def require(extra: str) -> list[ModuleType]:
    """Import the modules of `extra`, or raise a GenosError saying how to install them."""
    spec = EXTRAS[extra]
    try:
        return [importlib.import_module(m) for m in spec.modules]
    except ImportError as exc:
        missing = exc.name or spec.modules[0]
        raise GenosError(
            f"{spec.feature} needs the {missing.split('.')[0]} package: {install_hint(extra)}"
        ) from None


def check(extra: str) -> None:
    """`require` without importing: a cheap pre-flight check before any work starts."""
    spec = EXTRAS[extra]
    for module in spec.modules:
        if not available(module):
            raise GenosError(f"{spec.feature} needs the {module} package: {install_hint(extra)}")
