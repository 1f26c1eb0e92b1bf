"""`genos eval` and `genos eval probe` as library calls returning plain dicts (the JSON the
commands print with --json; the terminal tables are rendered from the same dicts)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genos_cli import checkpoint
from genos_cli.data.bases import PieceTable, bases_per_token
from genos_cli.device import autocast_dtype as precision_dtype
from genos_cli.device import pick_device, resolve_precision
from genos_cli.errors import GenosError
from genos_cli.eval.markov import DEFAULT_CONCENTRATION, DEFAULT_ORDER, MAX_ORDER
from genos_cli.eval.probe import LabelledSequences

if TYPE_CHECKING:
    from genos_cli.data.documents import TokenDocuments
    from genos_cli.eval.lm import LMEvaluation

Progress = Callable[[str, int, int], None]  # (what, done, total)


def _load(path: Path, device_name: str | None) -> tuple[torch.device, checkpoint.LoadedCheckpoint]:
    device = pick_device(device_name)
    return device, checkpoint.load(path, device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype a checkpoint runs in on `device`: the precision training would pick."""
    return precision_dtype(resolve_precision("auto", device))


@dataclass
class LMOptions:
    checkpoint: Path
    data: list[Path] | None  # None: the validation split the checkpoint records
    batch_size: int = 8
    stride: int | None = None
    markov_order: int = DEFAULT_ORDER
    markov_concentration: float = DEFAULT_CONCENTRATION
    markov_data: list[Path] | None = None  # None: the training data the checkpoint records
    markov: bool = True
    device: str | None = None
    both_strands: bool = False  # also score each document's reverse complement


def _recorded_data(ckpt: checkpoint.LoadedCheckpoint, split: str) -> tuple[list[Path], Path | None]:
    """The prefixes of the run's `split` data ("train" or "val") as the checkpoint records
    them, and the first of them that is gone (None when all are there)."""
    recorded = [Path(p) for p in ckpt.meta.get("data", {}).get(split, [])]
    return recorded, next((p for p in recorded if not Path(f"{p}.bin").is_file()), None)


def _markov_sources(opts: LMOptions, ckpt: checkpoint.LoadedCheckpoint) -> list[Path] | str:
    """Paths to fit the Markov model on, or why there are none."""
    if opts.markov_data:
        return opts.markov_data
    recorded, missing = _recorded_data(ckpt, "train")
    if not recorded:
        return "the checkpoint does not record its training data; pass --markov-data"
    if missing is not None:
        return f"its training data {missing} is gone; pass --markov-data"
    return recorded


def _recorded_validation_data(ckpt: checkpoint.LoadedCheckpoint) -> list[Path]:
    """The validation split of the run's own data, as the checkpoint records it."""
    recorded, missing = _recorded_data(ckpt, "val")
    if not recorded:
        raise GenosError(
            f"{ckpt.path} records no validation data (its run had none, or it predates "
            "genos recording it); pass --data"
        )
    if missing is not None:
        raise GenosError(f"the run's validation data {missing} is gone; pass --data")
    return recorded


def evaluate_lm(opts: LMOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Loss and bits per base of a checkpoint on held-out DNA, next to uniform and Markov
    baselines scored on the very same bases; with `both_strands`, over each document and its
    reverse complement (the same molecule read from its other strand), model and Markov
    alike."""
    from genos_cli.data.strands import reverse_complement_documents
    from genos_cli.eval.data import token_documents
    from genos_cli.eval.lm import combined

    if opts.batch_size < 1:
        raise GenosError(f"--batch-size must be at least 1, got {opts.batch_size}")
    if not 0 <= opts.markov_order <= MAX_ORDER:
        raise GenosError(f"--markov-order must be in [0, {MAX_ORDER}], got {opts.markov_order}")
    device, ckpt = _load(opts.checkpoint, opts.device)
    context = ckpt.config.model.max_seq_length
    if opts.stride is not None and not 1 <= opts.stride <= context:
        raise GenosError(f"--stride must be in [1, {context}] (the context), got {opts.stride}")
    data = opts.data or _recorded_validation_data(ckpt)
    with token_documents(data, ckpt) as docs:
        if docs.tokens.size < 2:
            raise GenosError("the evaluation data holds fewer than two tokens")
        strands = {"forward": docs}
        if opts.both_strands:
            strands["reverse_complement"] = reverse_complement_documents(docs, ckpt.tokenizer)
        scored = {
            name: _score(opts, ckpt, device, strand, name, progress)
            for name, strand in strands.items()
        }
        result = combined(list(scored.values()))
        baselines: list[dict[str, Any]] = [
            {"name": "uniform", "bits_per_base": 2.0, "bits": 2.0 * result.bases}
        ]
        notes: list[str] = []
        sources = _markov_sources(opts, ckpt) if opts.markov else None
        if isinstance(sources, str):
            notes.append(f"no Markov baseline: {sources}")
        elif sources is not None:
            on = {name: (strands[name], scored[name].bases) for name in strands}
            baselines.insert(0, _markov_baseline(opts, ckpt, sources, on, progress))
    report = _lm_report(ckpt, data, device, result, baselines, notes)
    report["strands"] = "both" if opts.both_strands else "forward"
    if opts.both_strands:
        report["per_strand"] = {
            name: {
                "tokens": r.tokens,
                "bases": r.bases,
                "loss": r.loss,
                "bits_per_base": r.bits_per_base,
            }
            for name, r in scored.items()
        }
    return report


def _score(
    opts: LMOptions,
    ckpt: checkpoint.LoadedCheckpoint,
    device: torch.device,
    docs: TokenDocuments,
    strand: str,
    progress: Progress | None,
) -> LMEvaluation:
    from genos_cli.eval.lm import evaluate_model

    what = "scoring" if strand == "forward" else "scoring the reverse complement"
    return evaluate_model(
        ckpt.model,
        docs,
        bases_per_token(ckpt.tokenizer),
        batch_size=opts.batch_size,
        stride=opts.stride,
        device=device,
        autocast_dtype=autocast_dtype(device),
        progress=(lambda done, total: progress(what, done, total)) if progress else None,
    )


def _markov_baseline(
    opts: LMOptions,
    ckpt: checkpoint.LoadedCheckpoint,
    sources: list[Path],
    strands: dict[str, tuple[TokenDocuments, int]],
    progress: Progress | None,
) -> dict[str, Any]:
    """An order-k Markov model fitted on `sources`, scored on each strand's documents: the
    same bases as the model scored there (given with them), so the two bits-per-base
    figures compare."""
    from genos_cli.eval.data import token_documents
    from genos_cli.eval.lm import fit_markov, markov_bits

    t0 = time.perf_counter()
    if progress:
        progress("fitting the Markov model", 0, 1)
    table = PieceTable.of(ckpt.tokenizer)
    with token_documents(sources, ckpt, split="train") as fit_docs:
        markov = fit_markov([fit_docs], table, opts.markov_order, opts.markov_concentration)
    per_strand: dict[str, float] = {}
    for name, (docs, bases) in strands.items():
        bits, scored = markov_bits(markov, docs, table)
        if scored != bases:  # both must score the very same bases
            raise GenosError(
                f"internal error: the Markov model scored {scored} bases, the model {bases}"
            )
        per_strand[name] = bits
    bits, bases = sum(per_strand.values()), sum(b for _, b in strands.values())
    extra: dict[str, Any] = {}
    if len(strands) > 1:
        extra["per_strand"] = {name: per_strand[name] / strands[name][1] for name in strands}
    return {
        "name": f"order-{opts.markov_order} Markov",
        "bits_per_base": bits / bases,
        "bits": bits,
        **extra,
        "order": opts.markov_order,
        "concentration": opts.markov_concentration,
        "fitted_on": [str(p) for p in sources],
        "fitted_bases": markov.bases_seen,
        "seconds": time.perf_counter() - t0,
    }


def _lm_report(
    ckpt: checkpoint.LoadedCheckpoint,
    data: list[Path],
    device: torch.device,
    result: LMEvaluation,
    baselines: list[dict[str, Any]],
    notes: list[str],
) -> dict[str, Any]:
    """What `genos eval --json` prints."""
    from genos_cli.eval.lm import ExpertUsage

    usage = ExpertUsage.of(result.expert_counts)
    return {
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "data": [str(p) for p in data],
        "device": str(device),
        "tokens": result.tokens,
        "bases": result.bases,
        "windows": result.windows,
        "context": result.context,
        "stride": result.stride,
        "loss": result.loss,
        "perplexity": result.perplexity,
        "bits_per_base": result.bits_per_base,
        "baselines": baselines,
        "seconds": result.seconds,
        "tokens_per_s": result.tokens_per_second,
        "bases_per_s": result.bases / result.seconds if result.seconds > 0 else None,
        "expert_usage": [
            {
                "layer": i,
                "shares": usage.shares[i].tolist(),
                "entropy_bits": float(usage.entropy_bits[i]),
                "max_over_mean": float(usage.max_over_mean[i]),
            }
            for i in range(usage.shares.shape[0])
        ],
        "notes": notes,
    }


@dataclass
class ProbeOptions:
    checkpoint: Path
    train: list[Path] | None = None  # one FASTA per class
    test: list[Path] | None = None
    train_tsv: Path | None = None
    test_tsv: Path | None = None
    class_names: list[str] | None = None
    layer: int | None = None
    kmer: int = 6
    batch_size: int = 32
    seed: int = 0
    device: str | None = None


def _probe_data(opts: ProbeOptions) -> tuple[LabelledSequences, LabelledSequences]:
    from genos_cli.eval.probe import from_fasta_per_class, from_tsv

    if opts.train_tsv or opts.test_tsv:
        if opts.train or opts.test:
            raise GenosError("give either --train/--test FASTA files or --train-tsv/--test-tsv")
        if not (opts.train_tsv and opts.test_tsv):
            raise GenosError("--train-tsv and --test-tsv go together")
        train = from_tsv(opts.train_tsv)
        return train, from_tsv(opts.test_tsv, train.classes)
    if not opts.train or not opts.test:
        raise GenosError(
            "give the training and test sequences: --train A.fa B.fa --test A.fa B.fa (one "
            "FASTA per class, in the same order) or --train-tsv/--test-tsv"
        )
    if len(opts.train) != len(opts.test):
        raise GenosError(
            f"{len(opts.train)} --train files but {len(opts.test)} --test files: give one of "
            "each per class, in the same order"
        )
    if len(opts.train) < 2:
        raise GenosError("a probe needs at least two classes (one FASTA file per class)")
    names = opts.class_names or [p.name.split(".")[0] for p in opts.train]
    if len(names) != len(opts.train):
        raise GenosError(f"{len(names)} class names for {len(opts.train)} classes")
    return from_fasta_per_class(opts.train, names), from_fasta_per_class(opts.test, names)


def probe(opts: ProbeOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Logistic-regression probes on the checkpoint's mean-pooled embeddings and on k-mer
    frequencies, each cross-validated on the training sequences and scored on the test ones."""
    from genos_cli.eval.probe import fit_and_score, kmer_frequencies
    from genos_cli.inference.loading import load_for_inference

    if not 1 <= opts.kmer <= 8:
        raise GenosError(f"--kmer must be in [1, 8], got {opts.kmer}")
    train, test = _probe_data(opts)
    folds = _cv_folds(train, test)
    ckpt = load_for_inference(opts.checkpoint, opts.device)
    layers = ckpt.config.model.num_layers
    if opts.layer is not None and not 0 <= opts.layer <= layers:
        raise GenosError(f"--layer must be in [0, {layers}], got {opts.layer}")
    layer = layers if opts.layer is None else opts.layer

    t0 = time.perf_counter()
    embedded, forwarded = _embed_splits(opts, ckpt, train, test, progress)
    embed_seconds = time.perf_counter() - t0
    if progress:
        progress("fitting the probes", 0, 1)
    features = {
        f"genos embeddings (layer {layer})": embedded,
        f"{opts.kmer}-mer frequencies": (
            kmer_frequencies(train.sequences, opts.kmer),
            kmer_frequencies(test.sequences, opts.kmer),
        ),
    }
    scores = [
        fit_and_score(name, x_train, train.labels, x_test, test.labels, opts.seed, folds)
        for name, (x_train, x_test) in features.items()
    ]
    counts = {
        split: np.bincount(d.labels, minlength=len(train.classes)).tolist()
        for split, d in (("train", train), ("test", test))
    }
    return {
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "classes": train.classes,
        "sequences": counts,
        "dropped_bases": train.dropped_bases + test.dropped_bases,
        "layer": layer,
        "embedding_seconds": embed_seconds,
        "embedding_tokens_per_s": forwarded / embed_seconds if embed_seconds > 0 else None,
        "results": [s.__dict__ for s in scores],
    }


def _cv_folds(train: LabelledSequences, test: LabelledSequences) -> int:
    """Stratified cross-validation folds for the training data (at most 5: every fold needs
    a member of every class); a GenosError for classes that leave too little to probe."""
    for split, data in (("training", train), ("test", test)):
        present = set(data.labels.tolist())
        empty = [c for i, c in enumerate(train.classes) if i not in present]
        if empty:
            raise GenosError(f"class {empty[0]!r} has no {split} sequences")
    if len(train.classes) < 2:
        raise GenosError("a probe needs at least two classes; the training data has one")
    per_class = np.bincount(train.labels, minlength=len(train.classes))
    if per_class.min() < 2:
        smallest = train.classes[int(per_class.argmin())]
        raise GenosError(
            f"class {smallest!r} has only one training sequence; cross-validation needs at "
            "least 2 per class"
        )
    return int(min(5, per_class.min()))


def _embed_splits(
    opts: ProbeOptions,
    ckpt: checkpoint.LoadedCheckpoint,
    train: LabelledSequences,
    test: LabelledSequences,
    progress: Progress | None,
) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """((train embeddings, test embeddings), tokens run through the model): the code of
    `genos embed`, on the checkpoint as loaded for inference."""
    from genos_cli.inference.embed import embed

    x = {}
    forwarded = 0
    for name, data in (("train", train), ("test", test)):
        embedded = embed(
            ckpt.model, ckpt.tokenizer, data.sequences, layer=opts.layer,
            batch_size=opts.batch_size,
            progress=functools.partial(progress, f"embedding {name}") if progress else None,
        )  # fmt: skip
        x[name] = embedded.pooled
        forwarded += embedded.forwarded
    return (x["train"], x["test"]), forwarded
