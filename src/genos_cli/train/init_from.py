"""Starting from weights (`genos train --init-from SOURCE`) and continuing a named checkpoint
(`--resume PATH`): what the source is, checked before any work, and its weights on a rank.

`--init-from` takes a genos checkpoint (a step directory, a run's checkpoints directory or
its output directory: the latest) or a Hugging Face Mixtral directory (`genos export hf`'s,
or any Mixtral genos can build), read through `genos_cli.interop`. Only the weights are
taken: the run starts at step 0 with a fresh optimizer and learning-rate schedule. The
source must hold the run's model (every architecture field equal; a mismatch is one error
naming each field) and, where it records one, the run's tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from genos_cli.checkpoint.layout import CONFIG_FILE, MODEL_FILE, resolve
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    import torch

    from genos_cli.config import GenosConfig
    from genos_cli.config.schema import ModelConfig
    from genos_cli.data.tokenizers import DNATokenizer
    from genos_cli.model import GenosForCausalLM

HF_CONFIG = "config.json"  # what marks a Hugging Face model directory
# Model settings that do not change what the weights compute: the losses' weights and the
# initialisation. A fine-tuning run may set them differently from the checkpoint.
NOT_ARCHITECTURE = frozenset({"aux_loss_coeff", "z_loss_coeff", "init_std"})


class InitSource(BaseModel):
    """Where a run's initial weights come from (recorded in the plan and in checkpoints)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["genos", "hf"]
    path: Path  # the step directory, or the Hugging Face directory, resolved
    step: int | None = None  # the source's training step, when it records one

    def describe(self) -> str:
        what = "Hugging Face directory" if self.kind == "hf" else "checkpoint"
        step = f", step {self.step:,}" if self.step is not None else ""
        return f"{what} {self.path}{step}"


def model_differences(source: ModelConfig, run: ModelConfig) -> list[str]:
    """'field X (checkpoint) vs Y (this run)' for each architecture field that differs."""
    out = []
    for name in type(run).model_fields:
        if name in NOT_ARCHITECTURE:
            continue
        theirs, ours = getattr(source, name), getattr(run, name)
        if theirs != ours:
            out.append(f"{name} {theirs} (checkpoint) vs {ours} (this run)")
    return out


def check_same_model(flag: str, where: Path, source: ModelConfig, run: ModelConfig) -> None:
    diffs = model_differences(source, run)
    if diffs:
        raise GenosError(
            f"{flag} {where}: its model differs from this run's: {'; '.join(diffs)}; train with "
            "the checkpoint's model settings (its config.yaml as --config, or --size / "
            "--set model.KEY=VALUE to match)"
        )


def _check_tokenizer(where: Path, fingerprint: object, tokenizer: DNATokenizer) -> None:
    if isinstance(fingerprint, str) and fingerprint != tokenizer.fingerprint():
        raise GenosError(
            f"--init-from {where} was trained with another tokenizer (fingerprint "
            f"{fingerprint[:16]}) than this run's {tokenizer.kind} tokenizer "
            f"({tokenizer.fingerprint()[:16]}); pass the checkpoint's tokenizer "
            "(--tokenizer-model or --nucleotide-tokenizer) and data made with it"
        )


def resolve_init_source(path: Path, cfg: GenosConfig, tokenizer: DNATokenizer) -> InitSource:
    """The source `--init-from PATH` names, checked against the run: it exists, is a genos
    checkpoint or a Hugging Face Mixtral directory, holds this run's model and tokenizer."""
    path = Path(path)
    if not path.exists():
        raise GenosError(f"--init-from {path} does not exist")
    if path.is_dir() and (path / HF_CONFIG).is_file():
        from genos_cli.interop.hf_export import read_hf_model

        model, meta = read_hf_model(path)
        # The tokenizer first: another tokenizer is the cause of another vocabulary size.
        tok = (meta or {}).get("tokenizer")
        _check_tokenizer(path, tok.get("fingerprint") if isinstance(tok, dict) else None, tokenizer)
        check_same_model("--init-from", path, model, cfg.model)
        step = (meta or {}).get("step")
        return InitSource(kind="hf", path=path.resolve(),
                          step=step if isinstance(step, int) else None)  # fmt: skip
    directory = _genos_checkpoint("--init-from", path)
    source_cfg, meta = _read_checkpoint(directory)
    _check_tokenizer(directory, meta["tokenizer"].get("fingerprint"), tokenizer)
    check_same_model("--init-from", directory, source_cfg.model, cfg.model)
    step = meta.get("step")
    return InitSource(kind="genos", path=directory.resolve(),
                      step=step if isinstance(step, int) else None)  # fmt: skip


def _genos_checkpoint(flag: str, path: Path) -> Path:
    """The step directory `path` names; one sentence naming `flag` when it names none."""
    try:
        return resolve(path)
    except GenosError as exc:
        raise GenosError(f"{flag}: {exc}") from None


def _read_checkpoint(directory: Path) -> tuple[GenosConfig, dict]:
    from genos_cli.checkpoint.consolidated import read_meta
    from genos_cli.config import load_config

    meta = read_meta(directory)
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise GenosError(f"{config_file} is missing: {directory} is not a complete checkpoint")
    return load_config(path=config_file), meta


def check_resume_source(path: Path, cfg: GenosConfig) -> Path:
    """The checkpoint `--resume PATH` names (a step directory, a checkpoints directory or a
    run directory: the latest there), checked: it holds training state, and this model."""
    directory = _genos_checkpoint("--resume", Path(path))
    if not any(directory.glob("*model_states.pt")):
        raise GenosError(
            f"--resume {path}: {directory} holds the model only, no training state (optimizer, "
            "data position); start a new run from its weights with --init-from"
        )
    source_cfg, _ = _read_checkpoint(directory)
    check_same_model("--resume", directory, source_cfg.model, cfg.model)
    return directory.resolve()


def initial_state_dict(source: InitSource) -> dict[str, torch.Tensor]:
    """The source's weights in genos's layout (every rank reads them; no pickle)."""
    if source.kind == "hf":
        from genos_cli.interop.hf_export import read_hf_state_dict

        return read_hf_state_dict(source.path)
    from genos_cli.checkpoint.consolidated import read_state_dict

    return read_state_dict(source.path / MODEL_FILE)


def load_initial_weights(model: GenosForCausalLM, source: InitSource) -> None:
    """Put the source's weights into a freshly built model (before DeepSpeed wraps it, so
    its fp32 master copies start from them)."""
    state = initial_state_dict(source)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing / unexpected keys, shapes
        detail = " ".join(str(exc).split())[:300]
        raise GenosError(f"--init-from {source.path}: its weights do not fit: {detail}") from None
