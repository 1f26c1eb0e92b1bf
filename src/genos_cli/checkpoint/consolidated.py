"""A checkpoint's consolidated model: the files evaluation, export and inference read.

`write_consolidated` writes `model.safetensors`, `config.yaml`, `tokenizer.model` and
`genos.json` (see `genos_cli.checkpoint.layout`); `load` builds the model from them without
DeepSpeed. safetensors holds tensors only, so loading never runs pickled code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genos_cli.checkpoint.layout import CONFIG_FILE, META_FILE, MODEL_FILE, TOKENIZER_FILE, resolve
from genos_cli.errors import GenosError
from genos_cli.jsonfile import read_json

if TYPE_CHECKING:
    import torch

    from genos_cli.config import GenosConfig
    from genos_cli.data.tokenizers import DNATokenizer
    from genos_cli.model import GenosForCausalLM


@dataclass
class LoadedCheckpoint:
    path: Path  # the step directory
    config: GenosConfig
    model: GenosForCausalLM
    tokenizer: DNATokenizer
    meta: dict[str, Any]

    @property
    def step(self) -> int | None:
        step = self.meta.get("step")
        return int(step) if isinstance(step, int) else None

    def describe(self) -> str:
        step = f" (step {self.step:,})" if self.step is not None else ""
        return f"{self.path}{step}"


def read_meta(directory: Path) -> dict[str, Any]:
    file = directory / META_FILE
    if not file.is_file():
        raise GenosError(f"{file} is missing: {directory} is not a complete genos checkpoint")
    meta = read_json(file)
    tok = meta.get("tokenizer") if isinstance(meta, dict) else None
    if not isinstance(tok, dict) or tok.get("kind") not in ("bpe", "nucleotide"):
        raise GenosError(f"{file} names no tokenizer (expected tokenizer.kind bpe or nucleotide)")
    return meta


def load_tokenizer_of(directory: Path, meta: dict[str, Any]) -> DNATokenizer:
    """The checkpoint's own tokenizer, checked against the fingerprint it was saved with."""
    from genos_cli.data.tokenizers import load_tokenizer

    kind = meta["tokenizer"]["kind"]
    model_file = directory / TOKENIZER_FILE
    if kind == "bpe" and not model_file.is_file():
        raise GenosError(f"{model_file} is missing (the checkpoint was trained with BPE)")
    tokenizer = load_tokenizer(kind, model_file if kind == "bpe" else None)
    expected = meta["tokenizer"].get("fingerprint")
    if expected and tokenizer.fingerprint() != expected:
        raise GenosError(
            f"{model_file if kind == 'bpe' else 'the nucleotide tokenizer'} is not the "
            f"tokenizer {directory} was trained with (fingerprint {expected[:16]})"
        )
    return tokenizer


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise GenosError(f"{file} is missing: the checkpoint is incomplete")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise GenosError(f"{file} is corrupt or not a safetensors file ({exc})") from None


def write_consolidated(
    directory: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: GenosConfig,
    tokenizer: DNATokenizer,
    meta: dict[str, Any],
) -> None:
    """Write the files `load()` reads (model, config, tokenizer, genos.json) into `directory`,
    each atomically. `genos train` and `genos export import-hf` both write checkpoints with it;
    `meta` gets the tokenizer's identity and the genos version added."""
    from safetensors.torch import save

    from genos_cli import __version__
    from genos_cli.atomic import atomic_write
    from genos_cli.config import config_to_yaml

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    with atomic_write(directory / MODEL_FILE) as fh:
        fh.write(save(tensors, metadata={"format": "pt", "genos_version": __version__}))
    with atomic_write(directory / CONFIG_FILE, "w") as fh:
        fh.write(config_to_yaml(config))
    model_path = getattr(tokenizer, "path", None)  # SentencePiece tokenizers have a file
    if tokenizer.kind == "bpe" and model_path is not None:
        with atomic_write(directory / TOKENIZER_FILE) as fh:
            fh.write(Path(model_path).read_bytes())
    meta = {
        **meta,
        "tokenizer": {
            "kind": tokenizer.kind,
            "fingerprint": tokenizer.fingerprint(),
            "vocab_size": tokenizer.vocab_size,
            "eod_id": tokenizer.eod_id,
        },
        "genos_version": __version__,
    }
    with atomic_write(directory / META_FILE, "w") as fh:
        json.dump(meta, fh, indent=2)


def load(
    path: Path, device: torch.device | str = "cpu", *, compile: bool = False
) -> LoadedCheckpoint:
    """Model, config and tokenizer of the checkpoint `path` names, in eval mode."""
    from genos_cli.config import load_config
    from genos_cli.model import build_model

    directory = resolve(path)
    meta = read_meta(directory)
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise GenosError(f"{config_file} is missing: the checkpoint is incomplete")
    config = load_config(path=config_file)
    tokenizer = load_tokenizer_of(directory, meta)
    state = read_state_dict(directory / MODEL_FILE)
    model = build_model(config.model, compile=False, device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing / unexpected keys, shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise GenosError(f"{directory / MODEL_FILE} does not fit {config_file}: {detail}") from None
    model.to(device).eval()
    if compile:
        model.compile()
    return LoadedCheckpoint(directory, config, model, tokenizer, meta)
