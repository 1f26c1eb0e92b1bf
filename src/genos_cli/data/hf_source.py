"""Sequences from a Hugging Face dataset as a record source for `genos preprocess`.

`HFDatasetReader.blocks()` yields what `fasta.SequenceReader.blocks()` yields for a FASTA
file with one record per dataset row: normalised blocks (`fasta.normalise_sequence`, the
FASTA table) with a record break before each sequence and one at the end. The rest of the
pipeline (windows, split, tokenizer, writers) is the same, so a dataset and a FASTA file of
the same sequences give byte-identical `.bin/.idx` files.

The dataset is streamed (`datasets.load_dataset(..., streaming=True)`): nothing is downloaded
up front and memory stays bounded. Hub names (e.g. InstaDeepAI/multi_species_genomes, whose
rows hold a `sequence` column) and local paths (a directory of Parquet/JSON files, or a
dataset repository clone) go through the same call. `datasets` is optional
(`pip install 'genos[hub]'`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from genos_cli import extras
from genos_cli.data.fasta import BLOCK_SIZE, RECORD_BREAK, ReadStats, normalise_sequence
from genos_cli.errors import GenosError


@dataclass(frozen=True)
class HFDatasetSpec:
    """Which dataset, configuration, split and column to read."""

    name: str  # a Hub id ("owner/name") or a local path
    split: str = "train"
    column: str = "sequence"
    config: str | None = None  # the dataset's configuration (subset), if it has several
    revision: str | None = None  # a branch, tag or commit of a Hub dataset

    def describe(self) -> str:
        config = f"/{self.config}" if self.config else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"hf:{self.name}{config}{revision}[{self.split}].{self.column}"


def open_dataset(spec: HFDatasetSpec) -> Iterable[dict[str, Any]]:
    """The rows of the dataset, streamed."""
    (datasets,) = extras.require("hub")
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(
            spec.name, spec.config, split=spec.split, streaming=True, revision=spec.revision
        )
    except Exception as exc:  # datasets raises many kinds (not found, offline, bad config)
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise GenosError(f"cannot open Hugging Face dataset {spec.name}: {detail}") from None


class HFDatasetReader:
    """Reads one dataset's sequences into normalised blocks, updating `stats`."""

    def __init__(
        self,
        spec: HFDatasetSpec,
        stats: ReadStats,
        block_size: int = BLOCK_SIZE,
        rows: Iterable[dict[str, Any]] | None = None,  # tests: rows instead of the dataset
    ) -> None:
        self.spec = spec
        self.stats = stats
        self.block_size = block_size
        self._rows = rows

    def blocks(self) -> Iterator[bytes]:
        rows = self._rows if self._rows is not None else open_dataset(self.spec)
        self.stats.files += 1
        bases_before = self.stats.bases
        pieces: list[bytes] = []
        pending = 0
        for index, row in enumerate(_iterate(rows, self.spec)):
            seq = self._sequence(row, index)
            pieces += [RECORD_BREAK, seq]
            pending += len(seq) + 1
            self.stats.records += 1
            self.stats.bases += len(seq)
            if pending >= self.block_size:
                yield b"".join(pieces)
                pieces, pending = [], 0
        pieces.append(RECORD_BREAK)  # ends the last record, as at the end of a FASTA file
        yield b"".join(pieces)
        if self.stats.bases == bases_before:
            raise GenosError(f"Hugging Face dataset {self.spec.describe()} holds no sequence")

    def _sequence(self, row: dict[str, Any], index: int) -> bytes:
        column = self.spec.column
        if column not in row:
            raise GenosError(
                f"Hugging Face dataset {self.spec.name} has no column {column!r} (columns: "
                f"{', '.join(map(str, row))}); choose one with --hf-column"
            )
        value = row[column]
        if not isinstance(value, str | bytes):
            raise GenosError(
                f"{self.spec.name}, row {index}: column {column!r} holds "
                f"{type(value).__name__}, not a DNA string"
            )
        raw = value.encode("ascii", errors="replace") if isinstance(value, str) else value
        seq, bad = normalise_sequence(raw)
        if bad >= 0:
            char = raw[bad : bad + 1].decode("ascii", errors="replace")
            raise GenosError(
                f"{self.spec.name}, row {index}, column {column!r}: unexpected character "
                f"{char!r} at position {bad}; expected nucleotides (A, C, G, T, or IUPAC codes "
                "such as N)"
            )
        return seq


def _iterate(rows: Iterable[dict[str, Any]], spec: HFDatasetSpec) -> Iterator[dict[str, Any]]:
    """The rows, with errors raised while streaming (network, corrupt file) as one sentence."""
    iterator = iter(rows)
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except GenosError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise GenosError(f"reading Hugging Face dataset {spec.name} failed: {detail}") from None
        yield row
