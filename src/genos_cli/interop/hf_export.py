"""genos checkpoints <-> Hugging Face model directories (`genos export hf | import-hf`).

Export writes what `transformers` itself writes for a Mixtral model: the checkpoint's weights
go through `interop.mixtral` into a real `MixtralForCausalLM`, saved with `save_pretrained`
(config.json, generation_config.json, model.safetensors), plus the tokenizer as a `tokenizers`
fast tokenizer (tokenizer.json, tokenizer_config.json) that gives genos's ids:

- nucleotide: a WordLevel vocabulary of genos's 16 entries after a normaliser that does what
  `DNANucleotideTokenizer` does (lowercase bases -> uppercase, IUPAC codes -> N) and a
  pre-tokeniser that makes every character a word;
- SentencePiece: the model's own pieces and merges (BPE) or pieces and scores (unigram), with
  unknown characters fused into one <unk> as SentencePiece does. This is exact only for
  models without normalisation or a dummy prefix (those `genos tokenize train` makes), so
  others are refused.

Beside them go `tokenizer.model` (BPE: the SentencePiece model) and `genos.json` (the genos
config and tokenizer identity), which `import_hf` uses to rebuild the exact checkpoint. A
Mixtral directory from elsewhere imports too, given its tokenizer.

Both directions build the output in a temporary directory beside the destination and rename
it into place when complete. `transformers` is optional (`pip install 'genos[hf]'`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from genos_cli import extras
from genos_cli.atomic import atomic_dir
from genos_cli.errors import GenosError
from genos_cli.jsonfile import read_json

if TYPE_CHECKING:
    import torch
    from transformers import MixtralConfig, PreTrainedTokenizerFast

    from genos_cli.checkpoint import LoadedCheckpoint
    from genos_cli.config import GenosConfig
    from genos_cli.config.schema import ModelConfig
    from genos_cli.data.tokenizers import DNATokenizer

EXPORT_META = "genos.json"
SP_MODEL_FILE = "tokenizer.model"
_SP_NORMAL, _SP_UNIGRAM, _SP_BPE = 1, 1, 2  # ModelProto piece type NORMAL; model types


def require_transformers() -> None:
    """One clear sentence instead of an ImportError when the `hf` extra is missing."""
    transformers, _ = extras.require("hf")
    # Their progress bars and notes would interleave with genos's own output.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# -- tokenizers --------------------------------------------------------------------------


def _nucleotide_backend() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    from genos_cli.data.tokenizers.nucleotide import IUPAC_AMBIGUOUS, VOCAB

    tok = Tokenizer(models.WordLevel({p: i for i, p in enumerate(VOCAB)}, unk_token="<unk>"))
    ambiguous = IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower()
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(f"[{ambiguous}]"), "N")]
        + [normalizers.Replace(base.lower(), base) for base in "ACGT"]
    )
    # Every character is one word, whitespace included (genos maps it to <unk> too).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def _sentencepiece_proto(path: Path) -> Any:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def bpe_merges(proto: Any) -> list[tuple[str, str]]:
    """SentencePiece BPE as ranked merges: every split of every piece into two pieces, pieces
    taken best score first. SentencePiece merges the adjacent pair whose *result* scores
    highest, so each way of forming a piece gets that piece's rank (as transformers'
    `convert_slow_tokenizer.generate_merges` does)."""
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = sorted(
        (i for i, p in enumerate(proto.pieces) if p.type == _SP_NORMAL),
        key=lambda i: (-proto.pieces[i].score, i),
    )
    merges: list[tuple[str, str]] = []
    for i in normal:
        piece = proto.pieces[i].piece
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
        merges += sorted(
            ((a, b) for a, b in splits if a in vocab and b in vocab),
            key=lambda ab: (vocab[ab[0]], vocab[ab[1]]),
        )
    return merges


def _sentencepiece_backend(path: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models

    proto = _sentencepiece_proto(path)
    norm = proto.normalizer_spec
    if norm.add_dummy_prefix or norm.name not in ("identity", ""):
        raise GenosError(
            f"{path} normalises text ({norm.name}, dummy prefix {norm.add_dummy_prefix}); genos "
            "exports only SentencePiece models without normalisation (as `genos tokenize "
            "train` makes them), whose ids a fast tokenizer reproduces exactly"
        )
    kind = proto.trainer_spec.model_type
    model: models.Model
    if kind == _SP_BPE:
        vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
        unk = proto.pieces[proto.trainer_spec.unk_id].piece
        # fuse_unk: SentencePiece emits one <unk> for a run of unknown characters.
        model = models.BPE(vocab=vocab, merges=bpe_merges(proto), unk_token=unk, fuse_unk=True)
    elif kind == _SP_UNIGRAM:
        pieces = [(p.piece, p.score) for p in proto.pieces]
        model = models.Unigram(pieces, unk_id=proto.trainer_spec.unk_id, byte_fallback=False)
    else:
        raise GenosError(f"{path} is a SentencePiece model of type {kind}; expected BPE or unigram")
    tok = Tokenizer(model)
    tok.decoder = decoders.Fuse()
    return tok


def hf_tokenizer(tokenizer: DNATokenizer, max_length: int) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer that encodes DNA to the same ids as `tokenizer`."""
    from transformers import PreTrainedTokenizerFast

    if tokenizer.kind == "nucleotide":
        backend = _nucleotide_backend()
    else:
        backend = _sentencepiece_backend(Path(tokenizer.path))  # type: ignore[attr-defined]
    specials = {
        f"{name}_token": tokenizer.id_to_piece(token_id)
        for name, token_id in (
            ("pad", tokenizer.pad_id),
            ("unk", tokenizer.unk_id),
            ("bos", tokenizer.bos_id),
            ("eos", tokenizer.eos_id),
            ("mask", tokenizer.mask_id),
        )
        if token_id is not None and token_id >= 0
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        **specials,
    )


def _portable_tokenizer_class(file: Path) -> None:
    # transformers 5 records its new class name, which transformers 4 cannot resolve;
    # "PreTrainedTokenizerFast" is the same fast tokenizer under a name both know.
    config = json.loads(file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# -- writing directories atomically ---------------------------------------------------------


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise GenosError(f"{out_dir} is a file; give a directory to write to")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise GenosError(
            f"{out_dir} already exists and is not empty; pass --overwrite to replace it "
            "(nothing was written)"
        )


@contextmanager
def _building(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary directory beside `out_dir` that becomes `out_dir` when the block succeeds
    (replacing it with --overwrite) and disappears when it fails."""
    _check_destination(out_dir, overwrite)  # again: it may have appeared while we worked
    with atomic_dir(out_dir) as tmp:
        yield tmp


# -- export ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    source: Path  # the checkpoint step directory
    step: int | None
    parameters: int
    tokenizer_kind: str
    files: list[str]


def _card(ckpt: LoadedCheckpoint, parameters: int) -> str:
    cfg = ckpt.config
    tok = ckpt.tokenizer.kind
    return (
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\n"
        "tags: [genos, dna, mixtral, mixture-of-experts]\n---\n\n"
        f"# {cfg.name}\n\n"
        f"A Genos Mixture-of-Experts DNA language model ({parameters:,} parameters, "
        f"{cfg.model.num_experts} experts, top-{cfg.model.moe_router_topk}), exported by genos "
        f"from `{ckpt.path.name}`{f' (step {ckpt.step:,})' if ckpt.step is not None else ''}. "
        f"It loads as `MixtralForCausalLM`; the tokenizer is genos's {tok} tokenizer.\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        'tok = AutoTokenizer.from_pretrained("THIS_DIR")\n'
        'model = AutoModelForCausalLM.from_pretrained("THIS_DIR")\n'
        'logits = model(**tok("ACGTACGGTTAGCAATGC", return_tensors="pt")).logits\n```\n'
    )


def export_hf(checkpoint: Path, out_dir: Path, *, overwrite: bool = False) -> ExportResult:
    """Write the checkpoint `checkpoint` names as a Hugging Face Mixtral directory."""
    require_transformers()
    from transformers import MixtralForCausalLM

    from genos_cli import __version__
    from genos_cli.checkpoint import load
    from genos_cli.interop.mixtral import to_hf_state_dict, to_mixtral_config

    _check_destination(out_dir, overwrite)
    ckpt = load(checkpoint)
    cfg = ckpt.config.model
    tokenizer = hf_tokenizer(ckpt.tokenizer, cfg.max_seq_length)  # refuses before any writing
    hf_config = to_mixtral_config(cfg)  # pad_token_id None: see to_mixtral_config
    hf_config.architectures = ["MixtralForCausalLM"]
    model = MixtralForCausalLM(hf_config)
    model.generation_config.pad_token_id = ckpt.tokenizer.pad_id  # batched generate() needs it
    model.load_state_dict(to_hf_state_dict(ckpt.model.state_dict(), cfg), strict=True)
    parameters = sum(p.numel() for p in model.parameters())
    meta = {
        "format": "genos-hf-export",
        "genos_version": __version__,
        "exported_from": str(ckpt.path),
        "step": ckpt.meta.get("step"),
        "tokens": ckpt.meta.get("tokens"),
        "tokenizer": ckpt.meta["tokenizer"],
        "config": ckpt.config.model_dump(mode="json"),
    }
    with _building(out_dir, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_class(tmp / "tokenizer_config.json")
        if ckpt.tokenizer.kind == "bpe":
            shutil.copyfile(ckpt.tokenizer.path, tmp / SP_MODEL_FILE)  # type: ignore[attr-defined]
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(_card(ckpt, parameters))
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(out_dir, ckpt.path, ckpt.step, parameters, ckpt.tokenizer.kind, files)


# -- import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    out_dir: Path
    source: Path
    parameters: int
    tokenizer_kind: str
    from_genos: bool  # the directory was exported by genos (config restored exactly)


def _read_hf_config(hf_dir: Path) -> MixtralConfig:
    from transformers import MixtralConfig

    if not hf_dir.is_dir():
        what = "does not exist" if not hf_dir.exists() else "is a file"
        raise GenosError(f"{hf_dir} {what}; give a Hugging Face model directory")
    file = hf_dir / "config.json"
    if not file.is_file():
        raise GenosError(f"{hf_dir} has no config.json: it is not a Hugging Face model directory")
    raw = read_json(file)
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != "mixtral":
        raise GenosError(
            f"{hf_dir} holds a {model_type or 'unknown'} model, not Mixtral; genos imports "
            "Mixtral models (model_type 'mixtral') only"
        )
    return MixtralConfig.from_pretrained(hf_dir)


def _read_hf_weights(hf_dir: Path, config: MixtralConfig) -> dict[str, torch.Tensor]:
    """The Mixtral weights through transformers itself (any shard layout or on-disk format),
    refusing a directory with missing or unexpected tensors instead of random-initialising."""
    import torch
    from safetensors import SafetensorError
    from transformers import MixtralForCausalLM

    try:
        # With output_loading_info, a (model, info) pair, which transformers' annotation omits.
        model, info = cast(
            "tuple[MixtralForCausalLM, dict[str, list[Any]]]",
            MixtralForCausalLM.from_pretrained(
                hf_dir, config=config, dtype=torch.float32, output_loading_info=True
            ),
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise GenosError(f"cannot read the weights in {hf_dir} ({detail})") from None
    problems = [
        f"{len(info[key])} {key.replace('_', ' ')} (e.g. {sorted(map(str, info[key]))[0]})"
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(key)
    ]
    if problems:
        raise GenosError(f"the weights in {hf_dir} do not fit its config: {'; '.join(problems)}")
    return {k: v.detach() for k, v in model.state_dict().items()}


def _import_tokenizer(
    hf_dir: Path, meta: dict[str, Any] | None, kind: str | None, model: Path | None
) -> DNATokenizer:
    from genos_cli.data.tokenizers import load_tokenizer

    if kind is None and meta is not None:
        kind = meta.get("tokenizer", {}).get("kind")
    if kind is None and model is None and (hf_dir / SP_MODEL_FILE).is_file():
        kind = "bpe"
    if kind is None and model is not None:
        kind = "bpe"
    if kind not in ("bpe", "nucleotide"):
        raise GenosError(
            f"{hf_dir} was not exported by genos, so its DNA tokenizer is unknown; pass "
            "--tokenizer-model MODEL or --nucleotide-tokenizer"
        )
    if kind == "bpe" and model is None:
        model = hf_dir / SP_MODEL_FILE
        if not model.is_file():
            raise GenosError(f"{model} is missing; pass --tokenizer-model with the BPE model")
    tokenizer = load_tokenizer(kind, model)
    expected = (meta or {}).get("tokenizer", {}).get("fingerprint")
    if expected and tokenizer.fingerprint() != expected:
        raise GenosError(
            f"the tokenizer given is not the one {hf_dir} was exported with "
            f"(fingerprint {expected[:16]})"
        )
    return tokenizer


def _import_config(
    hf_dir: Path, meta: dict[str, Any] | None, model_fields: dict[str, Any], tokenizer: DNATokenizer
) -> GenosConfig:
    """The genos config: the exported one when genos wrote the directory (with the model
    section as the weights say), else the default preset's settings around this model."""
    from pydantic import ValidationError

    from genos_cli.config import GenosConfig, load_config

    if meta is not None and isinstance(meta.get("config"), dict):
        base = dict(meta["config"])
    else:
        base = load_config().model_dump(mode="json")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", hf_dir.resolve().name).lstrip("._-") or "imported"
        base["name"] = name
        base["tokenizer"] = {
            "kind": tokenizer.kind,
            "model_path": None,
            "vocab_size": tokenizer.vocab_size,
        }
    base["model"] = {**base.get("model", {}), **model_fields}
    try:
        return GenosConfig.model_validate(base)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise GenosError(
            f"{hf_dir} does not make a valid genos config: {where}: {first['msg']}"
        ) from None


def _read_export_meta(hf_dir: Path) -> dict[str, Any] | None:
    file = hf_dir / EXPORT_META
    if not file.is_file():
        return None
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenosError(f"{file} is not readable JSON ({exc})") from None
    return meta if isinstance(meta, dict) else None


def read_hf_model(hf_dir: Path) -> tuple[ModelConfig, dict[str, Any] | None]:
    """The genos model config of the Mixtral directory `hf_dir`, and the genos.json that
    `genos export hf` wrote beside it (None for a directory from elsewhere), without
    reading the weights: what `genos train --init-from` checks before any work."""
    require_transformers()
    from genos_cli.interop.mixtral import from_mixtral_config

    return from_mixtral_config(_read_hf_config(hf_dir)), _read_export_meta(hf_dir)


def read_hf_state_dict(hf_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of the Mixtral directory `hf_dir` in genos's layout (fp32)."""
    require_transformers()
    from genos_cli.interop.mixtral import from_hf_state_dict

    hf_config = _read_hf_config(hf_dir)
    return from_hf_state_dict(_read_hf_weights(hf_dir, hf_config), hf_config)


def import_hf(
    hf_dir: Path,
    out_dir: Path,
    *,
    overwrite: bool = False,
    tokenizer_kind: str | None = None,
    tokenizer_model: Path | None = None,
) -> ImportResult:
    """Write the Mixtral directory `hf_dir` as a genos checkpoint directory that
    `genos_cli.checkpoint.load` (and so `genos eval`, `genos export hf`) reads."""
    require_transformers()
    from genos_cli.checkpoint import write_consolidated
    from genos_cli.interop.mixtral import from_hf_state_dict, from_mixtral_config

    _check_destination(out_dir, overwrite)
    hf_config = _read_hf_config(hf_dir)
    model_cfg = from_mixtral_config(hf_config)
    meta = _read_export_meta(hf_dir)
    tokenizer = _import_tokenizer(hf_dir, meta, tokenizer_kind, tokenizer_model)
    if tokenizer.vocab_size > model_cfg.resolved_vocab_size:
        raise GenosError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model in {hf_dir} only "
            f"{model_cfg.vocab_size} embedding rows"
        )
    config = _import_config(hf_dir, meta, model_cfg.model_dump(mode="json"), tokenizer)
    state = from_hf_state_dict(_read_hf_weights(hf_dir, hf_config), hf_config)
    parameters = sum(t.numel() for t in state.values())
    ckpt_meta = {
        "step": (meta or {}).get("step"),
        "tokens": (meta or {}).get("tokens"),
        "imported_from": str(hf_dir.resolve()),
    }
    with _building(out_dir, overwrite) as tmp:
        write_consolidated(tmp, state, config, tokenizer, ckpt_meta)
    return ImportResult(out_dir, hf_dir, parameters, tokenizer.kind, meta is not None)
