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
)
from genos_cli.data.fasta import ReadStats, SequenceReader
from genos_cli.data.hf_source import HFDatasetReader, HFDatasetSpec
from genos_cli.data.indexed import IndexedDatasetWriter, bin_path, idx_path
from genos_cli.data.sources import expand_inputs
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
    hf_dataset: HFDatasetSpec | None = None  # read after the files, like one more file
    append_eod: bool = True
    workers: int = 1
    write_text: Path | None = None  # directory for the seed's train.txt / val.txt
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
        eods = self.windows.sequences if self.tokenizer["append_eod"] else 0
        return self.tokens - eods

    @property
    def bp_per_token(self) -> float:
        return self.windows.sequence_bp / max(self.content_tokens, 1)


@dataclass
class Plan:
    """What a run will read and write, resolved and checked before any work starts."""

    settings: PreprocessSettings
    files: list[Path]
    holdout: set[Path]
    input_bytes: int
    prefixes: dict[str, Path]  # split name → output prefix
    manifest: Path
    text_files: dict[str, Path]


def output_prefixes(prefix: Path, split: bool) -> dict[str, Path]:
    """Megatron's naming (`tools/preprocess_data.py`): `<prefix>_text_document`, with the
    split name before `text` when genos writes a train/val split."""
    if not split:
        return {"train": Path(f"{prefix}_text_document")}
    return {name: Path(f"{prefix}_{name}_text_document") for name in ("train", "val")}


def plan(settings: PreprocessSettings) -> Plan:
    if not 0.0 <= settings.val_ratio < 1.0:
        raise GenosError(f"--val-ratio must be in [0, 1), got {settings.val_ratio}")
    if settings.workers < 1:
        raise GenosError(f"--workers must be at least 1, got {settings.workers}")
    named = list(settings.inputs) + list(settings.holdout)
    # A Hugging Face dataset may be the only input.
    files = expand_inputs(named) if named or settings.hf_dataset is None else []
    holdout = {p.resolve() for p in expand_inputs(settings.holdout)} if settings.holdout else set()
    seen: set[Path] = set()
    unique = []
    for f in files:  # a holdout file also named as input is read once, as holdout
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    split = settings.val_ratio > 0 or bool(holdout)
    prefixes = output_prefixes(settings.output_prefix, split)
    manifest = Path(f"{settings.output_prefix}.json")
    text_files = (
        {name: settings.write_text / f"{name}.txt" for name in prefixes}
        if settings.write_text
        else {}
    )
    targets = [manifest, *text_files.values()]
    for prefix in prefixes.values():
        targets += [bin_path(prefix), idx_path(prefix)]
    existing = [t for t in targets if t.exists()]
    if existing and not settings.overwrite:
        unfinished = "" if manifest.exists() else f" and {manifest} does not (an interrupted run?)"
        raise GenosError(
            f"{existing[0]} already exists{unfinished}; pass --overwrite to replace it "
            "(nothing was written)"
        )
    out_dir = settings.output_prefix.parent
    if out_dir.exists() and not out_dir.is_dir():
        raise GenosError(f"output directory {out_dir} is a file")
    for directory in {out_dir, *(t.parent for t in text_files.values())}:
        _check_can_create(directory)
    return Plan(
        settings=settings,
        files=unique,
        holdout=holdout,
        input_bytes=sum(f.stat().st_size for f in unique),
        prefixes=prefixes,
        manifest=manifest,
        text_files=text_files,
    )


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
    """The seed's text format: one sequence per line, written atomically."""

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


def _targets(the_plan: Plan) -> list[Path]:
    files = [the_plan.manifest, *the_plan.text_files.values()]
    for prefix in the_plan.prefixes.values():
        files += [bin_path(prefix), idx_path(prefix)]
    return files


def _json_temp(path: Path, payload: dict) -> Path:
    """`payload` as JSON in a synced temporary file beside `path`, for `publish`."""
    fh = temp_beside(path, "w")
    try:
        with fh:
            json.dump(payload, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(fh.name).unlink(missing_ok=True)
        raise
    return Path(fh.name)


def run(the_plan: Plan, progress: ProgressCallback | None = None) -> PreprocessResult:
    """Execute a checked plan. On any error nothing new is left behind."""
    settings = the_plan.settings
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
    outputs = {name: SplitOutput(prefix=str(p)) for name, p in the_plan.prefixes.items()}
    writers: dict[str, IndexedDatasetWriter] = {}
    texts: dict[str, _TextWriter] = {}
    manifest_tmp: Path | None = None
    for target in _targets(the_plan):  # temp files of an earlier, killed run
        remove_stale_temps(target)
    try:
        for name, prefix in the_plan.prefixes.items():
            writers[name] = IndexedDatasetWriter(prefix)
        for name, path in the_plan.text_files.items():
            texts[name] = _TextWriter(path)

        def batches() -> Iterator[WindowBatch]:
            done_bytes = 0
            for path in the_plan.files:
                reader = SequenceReader(path, read_stats)
                yield from windower.windows(
                    _reporting(reader, done_bytes, read_stats, progress),
                    holdout=path.resolve() in the_plan.holdout,
                )
                done_bytes += path.stat().st_size
                if progress:
                    progress(done_bytes, read_stats.bases)
            if settings.hf_dataset is not None:
                hf_reader = HFDatasetReader(settings.hf_dataset, read_stats)
                yield from windower.windows(
                    _reporting_blocks(hf_reader.blocks(), done_bytes, read_stats, progress)
                )
            yield from windower.flush()

        for batch, ids, token_lengths in _encoded(batches(), tokenizer, settings):
            _route(batch, ids, token_lengths, writers, outputs, texts)
        if windower.stats.sequences == 0:
            raise GenosError(
                f"no sequence of at least {settings.window.min_length} bp of A/C/G/T was found "
                "in the input; lower --min-length or check the files"
            )
        for writer in writers.values():
            writer.finish()
        for text in texts.values():
            text.finish()
        result = PreprocessResult(
            read=read_stats,
            windows=windower.stats,
            outputs=outputs,
            tokenizer=_tokenizer_info(tokenizer, settings),
            seconds=time.perf_counter() - start,
            manifest=the_plan.manifest,
            text_files=list(the_plan.text_files.values()),
        )
        manifest_tmp = _json_temp(the_plan.manifest, manifest(the_plan, result))
        # Everything is on disk under temporary names: publishing is renames, manifest last,
        # so a run killed now leaves at most a .bin/.idx pair without its manifest.
        for writer in writers.values():
            writer.commit()
        for text in texts.values():
            text.commit()
        publish(manifest_tmp, the_plan.manifest)
    except BaseException as exc:
        for writer in writers.values():
            writer.abort()
        for text in texts.values():
            text.abort()
        if manifest_tmp is not None:
            manifest_tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, GenosError):
            # Disk full, read-only filesystem, ...: one sentence naming where, not a trace.
            where = Path(exc.filename).parent if exc.filename else settings.output_prefix.parent
            raise GenosError(
                f"cannot write the output in {where}: {describe_os_error(exc)} "
                "(nothing was written)"
            ) from None
        raise
    return result


def _tokenizer_info(tokenizer: DNATokenizer, settings: PreprocessSettings) -> dict[str, object]:
    return {
        "kind": tokenizer.kind,
        "model": str(settings.tokenizer_model) if settings.tokenizer_model else "default",
        "fingerprint": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size,
        "eod_id": tokenizer.eod_id,
        "append_eod": settings.append_eod,
    }


def _route(
    batch: WindowBatch,
    ids: np.ndarray,
    token_lengths: np.ndarray,
    writers: dict[str, IndexedDatasetWriter],
    outputs: dict[str, SplitOutput],
    texts: dict[str, _TextWriter],
) -> None:
    """Append a batch's sequences to the split each belongs to, in order.

    Consecutive sequences of the same split are written as one slice (a view, no copy):
    with a small validation share, a batch is a handful of slices.
    """
    is_val = batch.is_val if "val" in writers else np.zeros(len(batch), bool)
    change = np.flatnonzero(is_val[1:] != is_val[:-1]) + 1
    seq_bounds = np.concatenate([[0], change, [len(batch)]])
    tok_bounds = np.concatenate([[0], np.cumsum(token_lengths)])
    bp_bounds = np.concatenate([[0], np.cumsum(batch.lengths)])
    for a, b in zip(seq_bounds[:-1].tolist(), seq_bounds[1:].tolist(), strict=True):
        name = "val" if is_val[a] else "train"
        t0, t1 = int(tok_bounds[a]), int(tok_bounds[b])
        writers[name].add(ids[t0:t1], token_lengths[a:b])
        out = outputs[name]
        out.sequences += b - a
        out.tokens += t1 - t0
        out.bp += int(bp_bounds[b] - bp_bounds[a])
    for name, text in texts.items():
        text.write(batch, is_val if name == "val" else ~is_val)


def _reporting(
    reader: SequenceReader, done_bytes: int, stats: ReadStats, progress: ProgressCallback | None
) -> Iterator[bytes]:
    for block in reader.blocks():
        if progress:
            progress(done_bytes + reader.consumed_bytes, stats.bases)
        yield block


def _reporting_blocks(
    blocks: Iterator[bytes], done_bytes: int, stats: ReadStats, progress: ProgressCallback | None
) -> Iterator[bytes]:
    for block in blocks:  # a streamed dataset has no size: progress counts bases only
        if progress:
            progress(done_bytes, stats.bases)
        yield block


def manifest(the_plan: Plan, result: PreprocessResult) -> dict:
    """The record written beside the data: how it was made, so training and evaluation can
    check they use the same tokenizer and settings."""
    s = the_plan.settings
    return {
        "genos_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [str(p) for p in the_plan.files]
        + ([s.hf_dataset.describe()] if s.hf_dataset else []),
        "holdout": sorted(str(p) for p in the_plan.holdout),
        "tokenizer": result.tokenizer,
        "window": asdict(s.window),
        "split": {"val_ratio": s.val_ratio, "seed": s.split_seed},
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
