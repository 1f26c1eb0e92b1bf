"""`genos preprocess`: genomes → ACGT windows → token ids → Megatron `.bin/.idx`.

The pipeline streams: a reader thread decompresses, the main process normalises and cuts
windows batch by batch, the tokenizer encodes each batch (in worker processes when
`workers > 1`, results consumed in input order so the output does not depend on the worker
count), and the writers append to temporary files that are renamed into place only when
everything succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from genos_cli import __version__
from genos_cli.atomic import (
    describe_os_error,
    publish,
    remove_stale_temps,
    temp_beside,
    write_temp,
)
from genos_cli.data.fasta import ReadStats, SequenceReader
from genos_cli.data.hf_source import HFDatasetReader, HFDatasetSpec
from genos_cli.data.indexed import IndexedDatasetWriter, bin_path, idx_path
from genos_cli.data.sources import expand_inputs
from genos_cli.data.strands import with_reverse_complements
from genos_cli.data.tokenizers import DNATokenizer, load_tokenizer
from genos_cli.data.vocab import MAX_VOCAB_SIZE
from genos_cli.data.windows import WindowBatch, Windower, WindowSpec, WindowStats
from genos_cli.errors import GenosError

ProgressCallback = Callable[[int, int], None]  # (input bytes read, bases read)


@dataclass(frozen=True)
class PreprocessSettings:
    inputs: tuple[Path, ...]
    output_prefix: Path
    tokenizer_kind: str = "bpe"
    tokenizer_model: Path | None = None  # None: the tokenizer shipped with genos
    window: WindowSpec = field(default_factory=WindowSpec)
    val_ratio: float = 0.02
    split_seed: int = 1234
    holdout: tuple[Path, ...] = ()  # files whose sequences all go to the validation split
    reverse_complement: bool = False  # also write each training window's reverse complement
    hf_dataset: HFDatasetSpec | None = None  # read after the files, like one more file
    append_eod: bool = True
    workers: int = 1
    write_text: Path | None = None  # directory for train.txt / val.txt (plain text)
    overwrite: bool = False
    batch_bp: int = 1 << 20


@dataclass
class SplitOutput:
    prefix: str
    sequences: int = 0
    tokens: int = 0
    bp: int = 0


@dataclass
class PreprocessResult:
    read: ReadStats
    windows: WindowStats
    outputs: dict[str, SplitOutput]
    tokenizer: dict[str, object]
    seconds: float
    manifest: Path
    text_files: list[Path]

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.outputs.values())

    @property
    def content_tokens(self) -> int:
        """Tokens excluding the end-of-document ids."""
        eods = (
            sum(o.sequences for o in self.outputs.values()) if self.tokenizer["append_eod"] else 0
        )
        return self.tokens - eods

    @property
    def bp_per_token(self) -> float:
        # Over what was written: reverse complements included.
        return sum(o.bp for o in self.outputs.values()) / max(self.content_tokens, 1)


@dataclass
class PreprocessPlan:
    """What a run will read and write, resolved and checked before any work starts."""

    settings: PreprocessSettings
    files: list[Path]
    holdout: set[Path]
    input_bytes: int
    prefixes: dict[str, Path]  # split name → output prefix
    manifest: Path
    text_files: dict[str, Path]

    def targets(self) -> list[Path]:
        """Every file the run writes."""
        files = [self.manifest, *self.text_files.values()]
        for prefix in self.prefixes.values():
            files += [bin_path(prefix), idx_path(prefix)]
        return files


def output_prefixes(prefix: Path, split: bool) -> dict[str, Path]:
    """Megatron's naming (`tools/preprocess_data.py`): `<prefix>_text_document`, with the
    split name before `text` when genos writes a train/val split."""
    if not split:
        return {"train": Path(f"{prefix}_text_document")}
    return {name: Path(f"{prefix}_{name}_text_document") for name in ("train", "val")}


def make_plan(settings: PreprocessSettings) -> PreprocessPlan:
    """Resolve the inputs and outputs of `settings` and check them: missing inputs, outputs
    that exist (without `overwrite`), directories that cannot be written."""
    if not 0.0 <= settings.val_ratio < 1.0:
        raise GenosError(f"--val-ratio must be in [0, 1), got {settings.val_ratio}")
    if settings.workers < 1:
        raise GenosError(f"--workers must be at least 1, got {settings.workers}")
    files, holdout = _input_files(settings)
    prefixes = output_prefixes(settings.output_prefix, settings.val_ratio > 0 or bool(holdout))
    text_dir = settings.write_text
    plan = PreprocessPlan(
        settings=settings,
        files=files,
        holdout=holdout,
        input_bytes=sum(f.stat().st_size for f in files),
        prefixes=prefixes,
        manifest=Path(f"{settings.output_prefix}.json"),
        text_files={name: text_dir / f"{name}.txt" for name in prefixes} if text_dir else {},
    )
    _check_outputs(plan)
    return plan


def _input_files(settings: PreprocessSettings) -> tuple[list[Path], set[Path]]:
    """The files to read, each once and in order, and the resolved paths of the holdout ones."""
    named = list(settings.inputs) + list(settings.holdout)
    # A Hugging Face dataset may be the only input.
    files = expand_inputs(named) if named or settings.hf_dataset is None else []
    holdout = {p.resolve() for p in expand_inputs(settings.holdout)} if settings.holdout else set()
    unique: dict[Path, Path] = {}
    for f in files:  # a holdout file also named as input is read once, as holdout
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), holdout


def _check_outputs(plan: PreprocessPlan) -> None:
    """Refuse to replace existing outputs without `overwrite`, or to start a run whose output
    directories cannot be created."""
    existing = [t for t in plan.targets() if t.exists()]
    if existing and not plan.settings.overwrite:
        unfinished = (
            "" if plan.manifest.exists() else f" and {plan.manifest} does not (an interrupted run?)"
        )
        raise GenosError(
            f"{existing[0]} already exists{unfinished}; pass --overwrite to replace it "
            "(nothing was written)"
        )
    out_dir = plan.settings.output_prefix.parent
    if out_dir.exists() and not out_dir.is_dir():
        raise GenosError(f"output directory {out_dir} is a file")
    for directory in {out_dir, *(t.parent for t in plan.text_files.values())}:
        _check_can_create(directory)


def _check_can_create(directory: Path) -> None:
    """Fail before reading anything when `directory` cannot be created or written to (its
    nearest existing ancestor is a file, or not writable)."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise GenosError(f"cannot create output directory {directory}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise GenosError(f"cannot write to {probe}: permission denied or read-only")


# -- encoding, in-process or in worker processes -------------------------------------------

_worker_tokenizer: DNATokenizer | None = None


def _init_worker(kind: str, model: Path | None) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(kind, model)


def _encode_in_worker(
    data: bytes, lengths: np.ndarray, append_eod: bool
) -> tuple[np.ndarray, np.ndarray]:
    assert _worker_tokenizer is not None
    return _worker_tokenizer.encode_packed(data, lengths, append_eod=append_eod)


def _encoded(
    batches: Iterator[WindowBatch], tokenizer: DNATokenizer, settings: PreprocessSettings
) -> Iterator[tuple[WindowBatch, np.ndarray, np.ndarray]]:
    """(batch, ids, token lengths) in input order."""
    if settings.workers == 1:
        for batch in batches:
            ids, lengths = tokenizer.encode_packed(
                batch.data, batch.lengths, append_eod=settings.append_eod
            )
            yield batch, ids, lengths
        return
    # "spawn": the reader's prefetch thread makes fork unsafe.
    with ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(settings.tokenizer_kind, settings.tokenizer_model),
    ) as pool:
        in_flight: deque[tuple[WindowBatch, Future]] = deque()
        for batch in batches:
            fut = pool.submit(_encode_in_worker, batch.data, batch.lengths, settings.append_eod)
            in_flight.append((batch, fut))
            if len(in_flight) >= 2 * settings.workers:  # bounded: memory stays flat
                done, fut = in_flight.popleft()
                yield done, *fut.result()
        while in_flight:
            done, fut = in_flight.popleft()
            yield done, *fut.result()


# -- the run -------------------------------------------------------------------------------


class _TextWriter:
    """Plain text, one sequence per line (the reference text format), written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = temp_beside(path)

    def write(self, batch: WindowBatch, mask: np.ndarray) -> None:
        lines = [seq for seq, keep in zip(batch.sequences(), mask.tolist(), strict=True) if keep]
        if lines:
            self._fh.write(b"\n".join(lines) + b"\n")

    def finish(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def commit(self) -> None:
        self.finish()
        publish(self._fh.name, self.path, fsync=False)

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # on a full disk, flushing the buffer fails
            self._fh.close()
        Path(self._fh.name).unlink(missing_ok=True)


class _Outputs:
    """Everything a run writes — each split's `.bin/.idx`, the text files, the manifest —
    kept under temporary names until `commit` renames it all into place; `abort` removes it."""

    def __init__(self, plan: PreprocessPlan) -> None:
        self.plan = plan
        self.splits = {name: SplitOutput(prefix=str(p)) for name, p in plan.prefixes.items()}
        self.writers: dict[str, IndexedDatasetWriter] = {}
        self.texts: dict[str, _TextWriter] = {}
        self.manifest_tmp: Path | None = None
        for target in plan.targets():  # temp files of an earlier, killed run
            remove_stale_temps(target)

    def open(self) -> None:
        for name, prefix in self.plan.prefixes.items():
            self.writers[name] = IndexedDatasetWriter(prefix)
        for name, path in self.plan.text_files.items():
            self.texts[name] = _TextWriter(path)

    def add(self, batch: WindowBatch, ids: np.ndarray, token_lengths: np.ndarray) -> None:
        """Append a batch's sequences to the split each belongs to, in order.

        Consecutive sequences of the same split are written as one slice (a view, no copy):
        with a small validation share, a batch is a handful of slices.
        """
        is_val = batch.is_val if "val" in self.writers else np.zeros(len(batch), bool)
        change = np.flatnonzero(is_val[1:] != is_val[:-1]) + 1
        seq_bounds = np.concatenate([[0], change, [len(batch)]])
        tok_bounds = np.concatenate([[0], np.cumsum(token_lengths)])
        bp_bounds = np.concatenate([[0], np.cumsum(batch.lengths)])
        for a, b in zip(seq_bounds[:-1].tolist(), seq_bounds[1:].tolist(), strict=True):
            name = "val" if is_val[a] else "train"
            t0, t1 = int(tok_bounds[a]), int(tok_bounds[b])
            self.writers[name].add(ids[t0:t1], token_lengths[a:b])
            out = self.splits[name]
            out.sequences += b - a
            out.tokens += t1 - t0
            out.bp += int(bp_bounds[b] - bp_bounds[a])
        for name, text in self.texts.items():
            text.write(batch, is_val if name == "val" else ~is_val)

    def finish(self) -> None:
        """Flush every data and text file to disk (still under its temporary name)."""
        for writer in self.writers.values():
            writer.finish()
        for text in self.texts.values():
            text.finish()

    def commit(self, manifest: dict) -> None:
        payload = json.dumps(manifest, indent=2, default=str) + "\n"
        self.manifest_tmp = write_temp(self.plan.manifest, payload.encode())
        # Everything is on disk under temporary names: publishing is renames, manifest last,
        # so a run killed now leaves at most a .bin/.idx pair without its manifest.
        for writer in self.writers.values():
            writer.commit()
        for text in self.texts.values():
            text.commit()
        publish(self.manifest_tmp, self.plan.manifest)

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        for text in self.texts.values():
            text.abort()
        if self.manifest_tmp is not None:
            self.manifest_tmp.unlink(missing_ok=True)


def run(plan: PreprocessPlan, progress: ProgressCallback | None = None) -> PreprocessResult:
    """Execute a checked plan. On any error nothing new is left behind."""
    settings = plan.settings
    start = time.perf_counter()
    tokenizer = load_tokenizer(settings.tokenizer_kind, settings.tokenizer_model)
    if tokenizer.vocab_size > MAX_VOCAB_SIZE:
        raise GenosError("the tokenizer's vocabulary does not fit uint16 Megatron data")
    read_stats = ReadStats()
    windower = Windower(
        settings.window,
        val_ratio=settings.val_ratio,
        seed=settings.split_seed,
        batch_bp=settings.batch_bp,
    )
    outputs = _Outputs(plan)
    try:
        outputs.open()
        batches = _windows(plan, windower, read_stats, progress)
        if settings.reverse_complement:
            # After the split is drawn per window: validation stays as it is, un-augmented.
            batches = map(with_reverse_complements, batches)
        for batch, ids, token_lengths in _encoded(batches, tokenizer, settings):
            outputs.add(batch, ids, token_lengths)
        if windower.stats.sequences == 0:
            raise GenosError(
                f"no sequence of at least {settings.window.min_length} bp of A/C/G/T was found "
                f"in {_describe_inputs(plan)}; lower --min-length or check the files"
            )
        outputs.finish()
        result = PreprocessResult(
            read=read_stats,
            windows=windower.stats,
            outputs=outputs.splits,
            tokenizer=_tokenizer_info(tokenizer, settings),
            seconds=time.perf_counter() - start,
            manifest=plan.manifest,
            text_files=list(plan.text_files.values()),
        )
        outputs.commit(manifest(plan, result))
    except BaseException as exc:
        outputs.abort()
        if isinstance(exc, OSError) and not isinstance(exc, GenosError):
            raise _write_error(exc, settings) from None
        raise
    return result


def _write_error(exc: OSError, settings: PreprocessSettings) -> GenosError:
    """Disk full, read-only filesystem, ...: one sentence naming where, not a traceback."""
    where = Path(exc.filename).parent if exc.filename else settings.output_prefix.parent
    return GenosError(
        f"cannot write the output in {where}: {describe_os_error(exc)} (nothing was written)"
    )


def _windows(
    plan: PreprocessPlan,
    windower: Windower,
    stats: ReadStats,
    progress: ProgressCallback | None,
) -> Iterator[WindowBatch]:
    """The window batches of every input in order: the files, then a Hugging Face dataset."""
    done_bytes = 0
    for path in plan.files:
        reader = SequenceReader(path, stats)
        blocks = _reporting(reader.blocks(), done_bytes, stats, progress, reader)
        yield from windower.windows(blocks, holdout=path.resolve() in plan.holdout)
        done_bytes += path.stat().st_size
        if progress:
            progress(done_bytes, stats.bases)
    if plan.settings.hf_dataset is not None:
        hf_reader = HFDatasetReader(plan.settings.hf_dataset, stats)
        yield from windower.windows(_reporting(hf_reader.blocks(), done_bytes, stats, progress))
    yield from windower.flush()


def _reporting(
    blocks: Iterator[bytes],
    done_bytes: int,
    stats: ReadStats,
    progress: ProgressCallback | None,
    reader: SequenceReader | None = None,
) -> Iterator[bytes]:
    """`blocks`, reporting progress before each: the bytes of `reader`'s file read so far
    (a streamed dataset has no size: then progress counts bases only)."""
    for block in blocks:
        if progress:
            progress(done_bytes + (reader.consumed_bytes if reader else 0), stats.bases)
        yield block


def _describe_inputs(plan: PreprocessPlan, most: int = 3) -> str:
    """The inputs for a message: up to `most` names, then how many more."""
    names = [str(p) for p in plan.files]
    if plan.settings.hf_dataset is not None:
        names.append(plan.settings.hf_dataset.describe())
    if len(names) > most:
        return f"{', '.join(names[:most])} and {len(names) - most} more"
    return ", ".join(names) or "the input"


def _tokenizer_info(tokenizer: DNATokenizer, settings: PreprocessSettings) -> dict[str, object]:
    return {
        "kind": tokenizer.kind,
        "model": str(settings.tokenizer_model) if settings.tokenizer_model else "default",
        "fingerprint": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size,
        "eod_id": tokenizer.eod_id,
        "append_eod": settings.append_eod,
    }


def manifest(plan: PreprocessPlan, result: PreprocessResult) -> dict:
    """The record written beside the data: how it was made, so training and evaluation can
    check they use the same tokenizer and settings."""
    s = plan.settings
    return {
        "genos_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [str(p) for p in plan.files]
        + ([s.hf_dataset.describe()] if s.hf_dataset else []),
        "holdout": sorted(str(p) for p in plan.holdout),
        "tokenizer": result.tokenizer,
        "window": asdict(s.window),
        "split": {"val_ratio": s.val_ratio, "seed": s.split_seed},
        # Training windows also written as their reverse complement (validation never is).
        "reverse_complement": s.reverse_complement,
        "outputs": {name: asdict(out) for name, out in result.outputs.items()},
        "stats": {
            "files": result.read.files,
            "records": result.read.records,
            "bases": result.read.bases,
            "acgt_bp": result.windows.acgt_bp,
            "ambiguous_bp": result.read.bases - result.windows.acgt_bp,
            "short_fragment_bp": result.windows.short_bp,
            "uncovered_bp": result.windows.uncovered_bp,
            "sequences": result.windows.sequences,
            "sequence_bp": result.windows.sequence_bp,
            "tokens": result.tokens,
            "bp_per_token": round(result.bp_per_token, 4),
            "seconds": round(result.seconds, 3),
        },
    }
