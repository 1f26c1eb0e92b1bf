"""What `genos eval --data` names, as token documents made with the checkpoint's tokenizer.

- FASTA / compressed FASTA / one-sequence-per-line text files (or directories of them): cut
  into windows and tokenized exactly as `genos preprocess` does with the checkpoint's data
  settings, into a temporary `.bin/.idx` (a few seconds per Mbp).
- A `genos preprocess -o PREFIX` data set (`PREFIX` or `PREFIX.json`): its validation split
  (held out from training), or its only split when it has none.
- A `.bin/.idx` prefix (from genos or Megatron-LM): all of it.

Data made with another tokenizer than the checkpoint's is refused (its manifest says so).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from genos_cli.checkpoint import TOKENIZER_FILE, LoadedCheckpoint
from genos_cli.data.documents import TokenDocuments, read_documents
from genos_cli.errors import GenosError

_DATA_SUFFIXES = (".bin", ".idx", ".json")


def _is_sequence_input(path: Path) -> bool:
    return path.is_dir() or (path.is_file() and path.suffix not in _DATA_SUFFIXES)


def _preprocess(files: list[Path], ckpt: LoadedCheckpoint, out_dir: Path) -> Path:
    from genos_cli.data import pipeline

    settings = pipeline.PreprocessSettings(
        inputs=tuple(files),
        output_prefix=out_dir / "eval",
        tokenizer_kind=ckpt.tokenizer.kind,
        tokenizer_model=ckpt.path / TOKENIZER_FILE if ckpt.tokenizer.kind == "bpe" else None,
        window=ckpt.config.data.resolved_for(
            ckpt.config.model.max_seq_length, ckpt.tokenizer
        ).window_spec(),
        val_ratio=0.0,
        append_eod=ckpt.config.data.append_eod,
        workers=1,
    )
    plan = pipeline.make_plan(settings)
    pipeline.run(plan)
    return plan.prefixes["train"]


@contextmanager
def token_documents(
    paths: Sequence[Path], ckpt: LoadedCheckpoint, split: str = "val"
) -> Iterator[TokenDocuments]:
    """The documents `paths` name (see the module doc), tokenized for `ckpt`. Of a data set
    with a train/val split, `split` is read ("val" to evaluate, "train" to fit baselines)."""
    from genos_cli.data.prepared import check_tokenizer_matches, resolve_data

    if not paths:
        raise GenosError("no --data given")
    sequence_files = [p for p in paths if _is_sequence_input(p)]
    prefixes: list[Path] = []
    for path in paths:
        if path in sequence_files:
            continue
        if not any(Path(f"{path}{ext}").exists() for ext in ("", ".json", ".bin", ".idx")):
            raise GenosError(
                f"{path} does not exist (expected a FASTA/text file, a directory of them, "
                "or a data prefix)"
            )
        spec = resolve_data(path)
        check_tokenizer_matches(
            spec.tokenizer,
            ckpt.tokenizer,
            user=f"{ckpt.path} was trained with",
            remedy="evaluate on the FASTA files themselves or preprocess them with the "
            "checkpoint's tokenizer",
        )
        prefixes += list(spec.train if split == "train" else (spec.val or spec.train))
    with tempfile.TemporaryDirectory(prefix="genos-eval-") as tmp:
        if sequence_files:
            prefixes.append(_preprocess(sequence_files, ckpt, Path(tmp)))
        documents = read_documents(prefixes)
        documents.sources = [str(p) for p in paths]
        vocab = ckpt.config.model.resolved_vocab_size
        if documents.tokens.size and int(documents.tokens.max()) >= vocab:
            raise GenosError(
                f"the data holds token id {int(documents.tokens.max())}, outside the "
                f"checkpoint's vocabulary of {vocab}: it was made with another tokenizer"
            )
        yield documents
