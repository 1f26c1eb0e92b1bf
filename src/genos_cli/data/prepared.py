"""What `--data-path` names: prepared data sets, their manifests, and the checks before use.

A prepared data set is what `genos preprocess -o PREFIX` wrote: `.bin/.idx` splits and a
manifest `PREFIX.json` that records the tokenizer they were made with. Training, evaluation
and scoring resolve paths here and refuse data made with another tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genos_cli.data.indexed import IndexedDataset, bin_path, idx_path
from genos_cli.data.pipeline import output_prefixes
from genos_cli.errors import GenosError
from genos_cli.jsonfile import read_json

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer

PathLike = str | Path
_SCAN_CHUNK = 1 << 24  # tokens per chunk when scanning for the largest id


# -- what --data-path names -----------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer a data set was made with, from its manifest."""

    source: str  # the data set's name for messages, e.g. "data/ecoli"
    kind: str
    fingerprint: str
    vocab_size: int
    eod_id: int
    append_eod: bool = True


@dataclass(frozen=True)
class DataSpec:
    """Resolved `--data-path`: the prefixes to read and what the data says about itself."""

    train: tuple[Path, ...]
    val: tuple[Path, ...]
    tokenizer: TokenizerInfo | None  # None when no manifest was found
    manifests: tuple[Path, ...] = ()


def load_data_manifest(path: PathLike) -> dict[str, Any]:
    """The JSON manifest `genos preprocess` wrote (`PREFIX.json`), checked for what training
    reads. `path` is the manifest or the `-o` prefix it belongs to."""
    manifest = Path(path) if str(path).endswith(".json") else Path(f"{path}.json")
    if not manifest.is_file():
        raise GenosError(f"{manifest} does not exist (expected the manifest of genos preprocess)")
    data = read_json(manifest)
    tok = data.get("tokenizer") if isinstance(data, dict) else None
    outputs = data.get("outputs") if isinstance(data, dict) else None
    keys = ("kind", "fingerprint", "vocab_size", "eod_id")
    if not isinstance(tok, dict) or any(k not in tok for k in keys):
        raise GenosError(
            f"{manifest} is not a genos data manifest (its 'tokenizer' entry lacks "
            f"{', '.join(keys)})"
        )
    if not isinstance(outputs, dict) or "train" not in outputs:
        raise GenosError(f"{manifest} is not a genos data manifest (no 'outputs.train' entry)")
    return data


def _tokenizer_info(manifest: dict[str, Any], source: str) -> TokenizerInfo:
    tok = manifest["tokenizer"]
    return TokenizerInfo(
        source=source,
        kind=str(tok["kind"]),
        fingerprint=str(tok["fingerprint"]),
        vocab_size=int(tok["vocab_size"]),
        eod_id=int(tok["eod_id"]),
        append_eod=bool(tok.get("append_eod", True)),
    )


def _missing_file(prefix: PathLike) -> Path | None:
    """The first of `prefix.bin`, `prefix.idx` that is not a file, or None."""
    return next((p for p in (bin_path(prefix), idx_path(prefix)) if not p.is_file()), None)


def _split_prefix(base: str, manifest_path: Path, manifest: dict[str, Any], name: str) -> Path:
    """Where split `name` of the manifest's data set lives: beside the manifest, under
    genos's names. Not the prefix recorded in the manifest, which is relative to wherever
    preprocessing ran: a data set directory can be moved or shared as a whole."""
    prefix = output_prefixes(Path(base), "val" in manifest["outputs"])[name]
    missing = _missing_file(prefix)
    if missing is not None:
        raise GenosError(
            f"{missing} does not exist (listed in {manifest_path}); run genos preprocess again"
        )
    return prefix


_SUFFIXES = ("_train_text_document", "_val_text_document", "_text_document")


@dataclass(frozen=True)
class _Entry:
    """What one path names: a whole data set (manifest) or one `.bin/.idx` prefix."""

    train: list[Path]
    val: list[Path]
    tokenizer: TokenizerInfo | None
    manifest: Path | None


def _resolve_entry(path: PathLike) -> _Entry:
    text = str(path)
    for ext in (".bin", ".idx"):  # a data file given for its prefix
        if text.endswith(ext):
            text = text[: -len(ext)]
    if text.endswith(".json") or Path(f"{text}.json").is_file():
        base = text[:-5] if text.endswith(".json") else text
        manifest_path = Path(f"{base}.json")
        manifest = load_data_manifest(manifest_path)
        splits = [s for s in ("train", "val") if s in manifest["outputs"]]
        found = {s: [_split_prefix(base, manifest_path, manifest, s)] for s in splits}
        return _Entry(
            train=found["train"],
            val=found.get("val", []),
            tokenizer=_tokenizer_info(manifest, base),
            manifest=manifest_path,
        )
    prefix = Path(text)
    if not (bin_path(prefix).exists() or idx_path(prefix).exists()):
        raise GenosError(
            f"{text} names no data: expected {text}.json (from genos preprocess -o {text}) "
            f"or {text}.bin and {text}.idx"
        )
    missing = _missing_file(prefix)
    if missing is not None:
        raise GenosError(f"{missing} does not exist (a data set needs both .bin and .idx)")
    # A direct `<base>_..._text_document` prefix: its tokenizer is in `<base>.json`, if there.
    for suffix in _SUFFIXES:
        manifest_path = Path(f"{text[: -len(suffix)]}.json")
        if text.endswith(suffix) and manifest_path.is_file():
            info = _tokenizer_info(load_data_manifest(manifest_path), text[: -len(suffix)])
            return _Entry(train=[prefix], val=[], tokenizer=info, manifest=manifest_path)
    return _Entry(train=[prefix], val=[], tokenizer=None, manifest=None)


def _entries(paths: PathLike | Sequence[PathLike]) -> list[_Entry]:
    return [_resolve_entry(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]


def _agreeing(infos: list[TokenizerInfo]) -> TokenizerInfo | None:
    for other in infos[1:]:
        if (other.fingerprint, other.vocab_size) != (infos[0].fingerprint, infos[0].vocab_size):
            raise GenosError(
                f"{infos[0].source} and {other.source} were made with different tokenizers "
                f"({infos[0].kind} {infos[0].fingerprint[:16]} vs {other.kind} "
                f"{other.fingerprint[:16]}); train on data made with one tokenizer"
            )
    return infos[0] if infos else None


def resolve_data(
    data_path: PathLike | Sequence[PathLike], val_path: PathLike | Sequence[PathLike] | None = None
) -> DataSpec:
    """Resolve `--data-path` (and an optional validation path) to checked prefixes.

    Each entry is one of:
    - the `-o` prefix of `genos preprocess` (`data/ecoli`) or its manifest (`data/ecoli.json`):
      train and val prefixes from the manifest;
    - a `.bin/.idx` prefix (`data/ecoli_train_text_document`, or one made by Megatron-LM):
      training data only, no validation data unless `val_path` is given. Its tokenizer is
      read from the manifest beside it (`data/ecoli.json`) when there is one.
    Several entries are blended (concatenated). `val_path` replaces the manifests' validation
    splits; a manifest prefix given there contributes its val split (its only data set if it
    has no split). Every named `.bin`/`.idx` must exist and all manifests must agree on the
    tokenizer.
    """
    train_entries = _entries(data_path)
    if not train_entries:
        raise GenosError("no --data-path given")
    val_entries = _entries(val_path) if val_path is not None else []
    train = [p for e in train_entries for p in e.train]
    if val_path is None:
        val = [p for e in train_entries for p in e.val]
    else:
        val = [p for e in val_entries for p in (e.val or e.train)]
    named = [e for e in (*train_entries, *val_entries) if e.tokenizer is not None]
    return DataSpec(
        train=tuple(train),
        val=tuple(val),
        tokenizer=_agreeing([e.tokenizer for e in named if e.tokenizer is not None]),
        manifests=tuple(dict.fromkeys(e.manifest for e in named if e.manifest is not None)),
    )


# -- checks before training -----------------------------------------------------------------


def check_tokenizer_matches(
    info: TokenizerInfo | None,
    tokenizer: DNATokenizer,
    *,
    user: str = "this run uses",
    remedy: str = "train with the data's tokenizer or run genos preprocess again with this one",
) -> None:
    """Refuse data made with a tokenizer other than `tokenizer`.

    The message reads "<data> was made with the X tokenizer (...), but `user` the Y tokenizer
    (...); `remedy`". Without a manifest (`info` None) there is nothing to compare; the
    vocabulary check (`check_vocab_fits`) still guards the embedding.
    """
    if info is None:
        return
    ours = (tokenizer.fingerprint(), tokenizer.vocab_size, tokenizer.eod_id)
    if (info.fingerprint, info.vocab_size, info.eod_id) != ours:
        raise GenosError(
            f"{info.source} was made with the {info.kind} tokenizer (fingerprint "
            f"{info.fingerprint[:16]}, vocabulary {info.vocab_size}), but {user} the "
            f"{tokenizer.kind} tokenizer (fingerprint {ours[0][:16]}, vocabulary {ours[1]}); "
            f"{remedy}"
        )


def max_token_id(prefixes: Sequence[PathLike]) -> int:
    """The largest token id in the data: a sequential read of the memory-mapped tokens."""
    best = -1
    for prefix in prefixes:
        tokens = IndexedDataset(prefix).tokens
        for start in range(0, tokens.size, _SCAN_CHUNK):
            best = max(best, int(tokens[start : start + _SCAN_CHUNK].max()))
    return best


def check_vocab_fits(spec: DataSpec, vocab_size: int) -> None:
    """Every token id of the data must be below the model's `vocab_size` (its embedding
    rows); an id past the end would fail deep inside CUDA as a device-side assert.

    Free with a manifest (its tokenizer's vocabulary bounds the ids) or when the storage
    dtype cannot hold an id that large; otherwise the tokens are scanned once.
    """
    prefixes = (*spec.train, *spec.val)
    if spec.tokenizer is not None:
        if spec.tokenizer.vocab_size > vocab_size:
            raise GenosError(
                f"{spec.tokenizer.source} uses token ids up to {spec.tokenizer.vocab_size - 1} "
                f"(tokenizer vocabulary {spec.tokenizer.vocab_size}), but the model's "
                f"vocab_size is {vocab_size}; set vocab_size to at least "
                f"{spec.tokenizer.vocab_size}"
            )
        return
    dtypes = [IndexedDataset(p).dtype for p in prefixes]
    if all(np.issubdtype(d, np.integer) and np.iinfo(d).max < vocab_size for d in dtypes):
        return
    largest = max_token_id(prefixes)
    if largest >= vocab_size:
        raise GenosError(
            f"{', '.join(str(p) for p in prefixes)} contains token id {largest}, but the "
            f"model's vocab_size is {vocab_size}; set vocab_size to at least {largest + 1}"
        )
